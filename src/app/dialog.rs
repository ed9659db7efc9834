//! File dialogs shown from a thread of their own, so that the window keeps drawing (and the worker's events
//! keep arriving) while one is open. The tab that asked polls for the answer each frame.
//!
//! On Linux a dialog needs either the desktop portal (with a FileChooser back end) or `zenity`; without both,
//! rfd returns nothing, exactly as if the user had cancelled. So the machine is checked first, and a button
//! whose dialog cannot appear answers with a message the tab shows where the user clicked.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, TryRecvError};

static DISABLED: AtomicBool = AtomicBool::new(false);

/// From now on, every dialog answers as on a machine that cannot show one (for tests of the message).
#[cfg(test)]
pub(crate) fn disable_dialogs() {
    DISABLED.store(true, Ordering::SeqCst);
}

/// What a dialog answered: the paths chosen (empty when cancelled), or why no dialog could be shown.
pub struct Pending(Receiver<Result<Vec<PathBuf>, String>>);

/// What a tab shows when no file dialog can appear.
pub(crate) const NO_DIALOG: &str =
    "No file dialog can be shown on this machine: it has neither a desktop portal with a \
     file chooser (xdg-desktop-portal-gtk, -gnome or -kde) nor zenity. Drag files onto the window instead, or \
     install zenity.";

impl Pending {
    /// Opens a folder picker.
    pub fn folder(ctx: &egui::Context) -> Pending {
        Self::spawn(ctx, || rfd::FileDialog::new().pick_folder().into_iter().collect())
    }

    /// Opens a picker for image files.
    pub fn images(ctx: &egui::Context) -> Pending {
        Self::spawn(ctx, || {
            rfd::FileDialog::new()
                .add_filter("images", &crate::data::preprocess::IMAGE_EXTENSIONS)
                .pick_files()
                .unwrap_or_default()
        })
    }

    /// Opens a save dialog for an ONNX file, suggesting `name` in `dir`.
    pub fn save_onnx(ctx: &egui::Context, name: &Path, dir: &Path) -> Pending {
        let (name, dir) = (name.to_string_lossy().into_owned(), dir.to_path_buf());
        Self::spawn(ctx, move || {
            let mut d = rfd::FileDialog::new().add_filter("ONNX model", &["onnx"]).set_file_name(name);
            if dir.is_dir() {
                d = d.set_directory(dir);
            }
            d.save_file().into_iter().collect()
        })
    }

    fn spawn(ctx: &egui::Context, pick: impl FnOnce() -> Vec<PathBuf> + Send + 'static) -> Pending {
        let (tx, rx) = channel();
        if !dialogs_available() {
            let _ = tx.send(Err(NO_DIALOG.to_string()));
            return Pending(rx);
        }
        let ctx = ctx.clone();
        // Without a thread the sender is dropped, and `poll` reports a cancelled dialog.
        let _ = std::thread::Builder::new().name("file-dialog".into()).spawn(move || {
            let _ = tx.send(Ok(pick()));
            ctx.request_repaint();
        });
        Pending(rx)
    }

    /// The answer once the dialog has closed: `Some` exactly once (`Ok(empty)` if cancelled, `Err` if no dialog
    /// could be shown), `None` while it is open.
    pub(crate) fn poll(&self) -> Option<Result<Vec<PathBuf>, String>> {
        match self.0.try_recv() {
            Ok(answer) => Some(answer),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Ok(Vec::new())),
        }
    }
}

/// Whether rfd can show a dialog here. `MBV3_NO_FILE_DIALOG=1` (or [`disable_dialogs`]) answers no.
pub(crate) fn dialogs_available() -> bool {
    if DISABLED.load(Ordering::SeqCst) || std::env::var_os("MBV3_NO_FILE_DIALOG").is_some_and(|v| v == "1") {
        return false;
    }
    if !cfg!(target_os = "linux") {
        return true;
    }
    let session_bus = std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some()
        || std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| Path::new(&d).join("bus").exists());
    let data_dirs = std::env::var_os("XDG_DATA_DIRS");
    let path = std::env::var_os("PATH");
    linux_dialog_available(session_bus, data_dirs.as_deref(), path.as_deref())
}

/// A portal file chooser is usable when a session bus runs and an installed portal back end declares the
/// FileChooser interface (`share/xdg-desktop-portal/portals/*.portal`); else zenity must be on the `PATH`.
fn linux_dialog_available(session_bus: bool, data_dirs: Option<&OsStr>, path: Option<&OsStr>) -> bool {
    let data_dirs = data_dirs.filter(|d| !d.is_empty()).unwrap_or(OsStr::new("/usr/local/share:/usr/share"));
    let portal = session_bus
        && std::env::split_paths(data_dirs).any(|d| {
            std::fs::read_dir(d.join("xdg-desktop-portal/portals")).into_iter().flatten().flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|s| s.contains("org.freedesktop.impl.portal.FileChooser"))
            })
        });
    let zenity = path.is_some_and(|p| std::env::split_paths(p).any(|d| d.join("zenity").is_file()));
    portal || zenity
}

#[cfg(test)]
mod tests {
    use super::linux_dialog_available;
    use std::ffi::OsStr;

    #[test]
    fn a_dialog_needs_a_portal_file_chooser_on_a_session_bus_or_zenity() {
        let root = tempfile::tempdir().unwrap();
        let share = root.path().join("share");
        let bin = root.path().join("bin");
        std::fs::create_dir_all(share.join("xdg-desktop-portal/portals")).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let (share_s, bin_s) = (share.as_os_str(), bin.as_os_str());
        assert!(!linux_dialog_available(true, Some(share_s), Some(bin_s)), "nothing installed");
        // A portal back end without a file chooser does not count.
        std::fs::write(
            share.join("xdg-desktop-portal/portals/wlr.portal"),
            "Interfaces=org.freedesktop.impl.portal.Screenshot",
        )
        .unwrap();
        assert!(!linux_dialog_available(true, Some(share_s), Some(bin_s)));
        std::fs::write(
            share.join("xdg-desktop-portal/portals/gtk.portal"),
            "Interfaces=org.freedesktop.impl.portal.FileChooser;",
        )
        .unwrap();
        assert!(linux_dialog_available(true, Some(share_s), Some(bin_s)));
        assert!(!linux_dialog_available(false, Some(share_s), Some(bin_s)), "no session bus, no portal");
        std::fs::write(bin.join("zenity"), "").unwrap();
        assert!(linux_dialog_available(false, Some(share_s), Some(bin_s)));
        assert!(!linux_dialog_available(false, Some(share_s), Some(OsStr::new(""))));
    }
}
