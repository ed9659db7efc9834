//! Where the app finds its bundled files.

use std::path::{Path, PathBuf};

/// The project folder that holds `trained_models/` and `test_images/`: the current directory if it has them,
/// else the first ancestor of the executable that does (so `target/release/mobilenetv3` finds the repo's),
/// else the user's data folder (see [`crate::bundled`]).
pub fn project_dir() -> PathBuf {
    let has = |d: &Path| d.join("trained_models").is_dir() || d.join("test_images").is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        if has(&cwd) {
            return cwd;
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if has(dir) {
                return dir.to_path_buf();
            }
        }
    }
    // Installed elsewhere: the user's data folder, with the bundled model and photos written out once.
    if let Some(dir) = crate::bundled::user_dir() {
        if crate::bundled::install_into(&dir).is_ok() {
            return dir;
        }
    }
    PathBuf::from(".")
}
