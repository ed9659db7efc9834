//! Where the app and the command line read and write, decided once at start.
//!
//! Three layouts, tried in this order:
//! - **A project folder** (a checkout, or any folder with `trained_models/` or `test_images/`): the current
//!   folder, else the first ancestor of the executable that has one (so `target/release/mobilenetv3` finds the
//!   repository's). Everything is read from and written there.
//! - **An installed package**: `<prefix>/share/mobilenetv3-studio/` beside `<prefix>/bin/mobilenetv3` holds the
//!   bundled models and photos, read-only; the user's models, exports and data set go under the XDG data folder
//!   (`~/.local/share/mobilenetv3-studio`), which uninstalling leaves alone.
//! - **A lone binary** (`cargo install`): the bundled model and photos compiled into it are written out once to
//!   the XDG data folder, which then serves as the project folder.
//!
//! Settings live in the XDG config folder (`~/.config/mobilenetv3-studio/settings.json`) in every layout.

use std::path::{Path, PathBuf};

/// The folder name used under `share/`, the XDG data folder and the XDG config folder.
pub(crate) const APP_DIR: &str = "mobilenetv3-studio";

/// Where the app reads and writes.
#[derive(Clone, Debug)]
pub struct AppPaths {
    /// The user's model folder: listed first, and where training saves.
    pub models: PathBuf,
    /// Read-only model folders listed beside [`Self::models`] (the installed package's bundled models).
    pub bundled_models: Vec<PathBuf>,
    /// The sample photos shown at start.
    pub samples: PathBuf,
    pub exports: PathBuf,
    /// Where the data set is downloaded to: the user's data folder (XDG), else the project's `data/`.
    pub data: PathBuf,
}

impl AppPaths {
    /// Everything in one project folder.
    pub(crate) fn from_project(dir: &Path) -> Self {
        AppPaths {
            models: dir.join("trained_models"),
            bundled_models: Vec::new(),
            samples: dir.join("test_images"),
            exports: dir.join("exports"),
            data: user_data_dir().unwrap_or_else(|| dir.join("data")),
        }
    }

    /// An installed package: bundled files read from `share`, the user's own under `user`.
    pub(crate) fn installed(share: &Path, user: &Path) -> Self {
        AppPaths {
            models: user.join("trained_models"),
            bundled_models: vec![share.join("trained_models")],
            samples: share.join("test_images"),
            exports: user.join("exports"),
            data: user.join("data"),
        }
    }

    /// The layout this process runs in (see the module documentation); `bundle` is what a lone binary writes
    /// out.
    pub fn locate(bundle: &crate::bundled::Bundle) -> Self {
        let cwd = std::env::current_dir().ok();
        let exe = std::env::current_exe().ok();
        if let Some(dir) = project_folder(cwd.as_deref(), exe.as_deref()) {
            return Self::from_project(&dir);
        }
        let user = user_dir();
        if let (Some(share), Some(user)) = (exe.as_deref().and_then(package_share), user.as_ref()) {
            return Self::installed(&share, user);
        }
        // A lone binary: its compiled-in files, written out once.
        if let Some(dir) = user.filter(|d| bundle.install_into(d).is_ok()) {
            return Self::from_project(&dir);
        }
        Self::from_project(Path::new("."))
    }

    /// Every folder whose model files are offered, the user's first.
    pub fn model_dirs(&self) -> Vec<PathBuf> {
        std::iter::once(self.models.clone()).chain(self.bundled_models.iter().cloned()).collect()
    }
}

/// The project folder that holds `trained_models/` or `test_images/`: `cwd` if it has them, else the first
/// ancestor of the executable that does.
pub(crate) fn project_folder(cwd: Option<&Path>, exe: Option<&Path>) -> Option<PathBuf> {
    let has = |d: &Path| d.join("trained_models").is_dir() || d.join("test_images").is_dir();
    if let Some(cwd) = cwd.filter(|d| has(d)) {
        return Some(cwd.to_path_buf());
    }
    exe?.ancestors().skip(1).find(|d| has(d)).map(Path::to_path_buf)
}

/// `<prefix>/share/mobilenetv3-studio` for an executable at `<prefix>/bin/…`, when that folder holds the
/// bundled models.
pub(crate) fn package_share(exe: &Path) -> Option<PathBuf> {
    let prefix = exe.parent()?.parent()?;
    let share = prefix.join("share").join(APP_DIR);
    share.join("trained_models").is_dir().then_some(share)
}

/// `$XDG_DATA_HOME/mobilenetv3-studio` (or `~/.local/share/mobilenetv3-studio`).
pub(crate) fn user_dir() -> Option<PathBuf> {
    xdg_dir("XDG_DATA_HOME", ".local/share")
}

/// The folder the app downloads the data set into: `<user data folder>/data` (XDG).
pub(crate) fn user_data_dir() -> Option<PathBuf> {
    user_dir().map(|d| d.join("data"))
}

/// The settings file: `$XDG_CONFIG_HOME/mobilenetv3-studio/settings.json` (or under `~/.config`).
pub(crate) fn settings_file() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("settings.json"))
}

/// eframe's storage beside it (`settings.ron`): the window's size and egui's state, and the app's settings as
/// versions before `settings.json` kept them.
pub(crate) fn window_state_file() -> Option<PathBuf> {
    xdg_dir("XDG_CONFIG_HOME", ".config").map(|d| d.join("settings.ron"))
}

/// `$VAR/mobilenetv3-studio` when `$VAR` is an absolute path (the XDG rule), else `$HOME/<fallback>/…`.
fn xdg_dir(var: &str, fallback: &str) -> Option<PathBuf> {
    let base = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(fallback)))?;
    Some(base.join(APP_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_folder_wins_over_the_package_and_the_package_is_found_beside_its_binary() {
        let root = tempfile::tempdir().unwrap();
        let prefix = root.path().join("usr");
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::create_dir_all(prefix.join("share/mobilenetv3-studio/trained_models")).unwrap();
        let exe = prefix.join("bin/mobilenetv3");
        let home = root.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        // Started from the menu (cwd = home, no project there): the package's share folder.
        assert_eq!(project_folder(Some(&home), Some(&exe)), None);
        assert_eq!(package_share(&exe), Some(prefix.join("share/mobilenetv3-studio")));
        let p = AppPaths::installed(&prefix.join("share/mobilenetv3-studio"), &home.join("data"));
        assert_eq!(
            p.model_dirs(),
            vec![home.join("data/trained_models"), prefix.join("share/mobilenetv3-studio/trained_models")]
        );
        assert_eq!(p.samples, prefix.join("share/mobilenetv3-studio/test_images"));
        // Started in a project folder: that one.
        let project = root.path().join("project");
        std::fs::create_dir_all(project.join("test_images")).unwrap();
        assert_eq!(project_folder(Some(&project), Some(&exe)), Some(project.clone()));
        // A binary with no share folder beside it is no package.
        assert_eq!(package_share(&root.path().join("bin/mobilenetv3")), None);
    }
}
