//! The bundled model and sample photos, compiled into the binary so that an installed app (`cargo install`)
//! starts with something to show, wherever it is run from. They are written out once to the user's data
//! folder when no project folder is found.

use std::path::Path;

/// The default model: the most accurate of `trained_models/` (the others load from that folder).
pub const MODEL: (&str, &[u8]) =
    ("mobilenetv3_large_1.0.safetensors", include_bytes!("../trained_models/mobilenetv3_large_1.0.safetensors"));

/// The sample photos of `test_images/` (their sources and licences: `test_images/SOURCES.md`).
pub const SAMPLES: [(&str, &[u8]); 13] = [
    ("apple.jpg", include_bytes!("../test_images/apple.jpg")),
    ("butterfly.jpg", include_bytes!("../test_images/butterfly.jpg")),
    ("castle_palace.jpg", include_bytes!("../test_images/castle_palace.jpg")),
    ("cup_coffee.jpg", include_bytes!("../test_images/cup_coffee.jpg")),
    ("man_camera.png", include_bytes!("../test_images/man_camera.png")),
    ("orange.jpg", include_bytes!("../test_images/orange.jpg")),
    ("raccoon.jpg", include_bytes!("../test_images/raccoon.jpg")),
    ("rocket.jpg", include_bytes!("../test_images/rocket.jpg")),
    ("rose.png", include_bytes!("../test_images/rose.png")),
    ("squirrel.jpg", include_bytes!("../test_images/squirrel.jpg")),
    ("woman_astronaut.jpg", include_bytes!("../test_images/woman_astronaut.jpg")),
    ("woman_grace_hopper.jpg", include_bytes!("../test_images/woman_grace_hopper.jpg")),
    ("SOURCES.md", include_bytes!("../test_images/SOURCES.md")),
];

/// Writes the bundled files into `dir` (`trained_models/`, `test_images/`) where they are missing; never
/// overwrites a file the user has.
pub fn install_into(dir: &Path) -> std::io::Result<()> {
    let models = dir.join("trained_models");
    let samples = dir.join("test_images");
    std::fs::create_dir_all(&models)?;
    std::fs::create_dir_all(&samples)?;
    let target = models.join(MODEL.0);
    if !target.exists() {
        crate::fsutil::write_atomic(&target, MODEL.1)?;
    }
    for (name, bytes) in SAMPLES {
        let p = samples.join(name);
        if !p.exists() {
            crate::fsutil::write_atomic(&p, bytes)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn bundled_files_install_and_the_model_loads() {
        let dir = tempfile::tempdir().unwrap();
        super::install_into(dir.path()).unwrap();
        let model = dir.path().join("trained_models").join(super::MODEL.0);
        let loaded = crate::model::weights::load_model(
            &model,
            &candle_core::Device::Cpu,
            &crate::model::weights::LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(loaded.meta.config.name(), "large_1.0");
        assert_eq!(crate::classify::collect_images(&[dir.path().join("test_images")]).len(), 12);
    }
}
