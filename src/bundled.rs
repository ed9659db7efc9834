//! What a lone binary carries so that an installed app (`cargo install`) starts with something to show,
//! wherever it is run from: the default model and the sample photos, written out once to the user's data
//! folder when no project folder is found. The bytes are compiled into the binary crate only
//! (`src/cli/bundle.rs`), not into this library, so that the test binaries linking it stay small (the default
//! model is 18 MB).

use std::path::Path;

/// Files compiled into the binary: (file name, contents).
#[derive(Clone, Copy)]
pub struct Bundle<'a> {
    /// The default model, written to `trained_models/`.
    pub model: (&'a str, &'a [u8]),
    /// The sample photos (and their sources), written to `test_images/`.
    pub samples: &'a [(&'a str, &'a [u8])],
}

impl Bundle<'_> {
    /// Writes the files into `dir` (`trained_models/`, `test_images/`) where they are missing; never
    /// overwrites a file the user has.
    pub(crate) fn install_into(&self, dir: &Path) -> std::io::Result<()> {
        let models = dir.join("trained_models");
        let samples = dir.join("test_images");
        std::fs::create_dir_all(&models)?;
        std::fs::create_dir_all(&samples)?;
        let target = models.join(self.model.0);
        if !target.exists() {
            crate::fsutil::write_atomic(&target, self.model.1)?;
        }
        for (name, bytes) in self.samples {
            let p = samples.join(name);
            if !p.exists() {
                crate::fsutil::write_atomic(&p, bytes)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Bundle;

    #[test]
    fn a_bundle_installs_its_files_without_overwriting_the_users() {
        let model =
            std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/small_0.25_si1.weights.safetensors"))
                .unwrap();
        let bundle =
            Bundle { model: ("m.safetensors", &model), samples: &[("a.txt", b"bundled"), ("b.txt", b"bundled")] };
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("test_images")).unwrap();
        std::fs::write(dir.path().join("test_images/b.txt"), b"the user's").unwrap();
        bundle.install_into(dir.path()).unwrap();
        let loaded = crate::model::weights::load_model(
            &dir.path().join("trained_models/m.safetensors"),
            &candle_core::Device::Cpu,
            &crate::model::weights::LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(loaded.meta.config.name(), "small_0.25");
        assert_eq!(std::fs::read(dir.path().join("test_images/a.txt")).unwrap(), b"bundled");
        assert_eq!(std::fs::read(dir.path().join("test_images/b.txt")).unwrap(), b"the user's");
    }
}
