//! File dialogs shown from a thread of their own, so that the window keeps drawing (and the worker's events
//! keep arriving) while one is open. The tab that asked polls for the answer each frame.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver, TryRecvError};

/// What a dialog answered: the paths chosen (empty when cancelled).
pub struct Pending(Receiver<Vec<PathBuf>>);

impl Pending {
    /// Opens a folder picker.
    pub fn folder(ctx: &egui::Context) -> Pending {
        Self::spawn(ctx, || rfd::FileDialog::new().pick_folder().into_iter().collect())
    }

    /// Opens a picker for image files.
    pub fn images(ctx: &egui::Context) -> Pending {
        Self::spawn(ctx, || {
            rfd::FileDialog::new()
                .add_filter("images", &crate::preprocess::IMAGE_EXTENSIONS)
                .pick_files()
                .unwrap_or_default()
        })
    }

    fn spawn(ctx: &egui::Context, pick: impl FnOnce() -> Vec<PathBuf> + Send + 'static) -> Pending {
        let (tx, rx) = channel();
        let ctx = ctx.clone();
        // Without a thread the sender is dropped, and `poll` reports a cancelled dialog.
        let _ = std::thread::Builder::new().name("file-dialog".into()).spawn(move || {
            let _ = tx.send(pick());
            ctx.request_repaint();
        });
        Pending(rx)
    }

    /// The answer once the dialog has closed: `Some(paths)` exactly once (empty if cancelled or if no dialog
    /// could be shown), `None` while it is open.
    pub fn poll(&self) -> Option<Vec<PathBuf>> {
        match self.0.try_recv() {
            Ok(paths) => Some(paths),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Vec::new()),
        }
    }
}
