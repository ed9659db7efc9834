//! What a run tells whoever listens (the CLI's progress line, the app's Train tab), and the switches another
//! thread pauses, resumes and stops it with.

use super::{EpochRecord, History};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum TrainEvent {
    /// A folder of images is being decoded (before the run starts).
    Decoding {
        done: usize,
        total: usize,
    },
    /// Last-layer-only training: the frozen backbone's embeddings of the training images (and their mirror
    /// images) and the validation images are being computed, once, before the first epoch.
    Embedding {
        done: usize,
        total: usize,
    },
    /// The data set the run trains on, before its first step.
    Data(Box<DataSummary>),
    Started {
        name: String,
        /// The run's epoch count (a resumed run's own, not the caller's).
        epochs: usize,
        steps_per_epoch: usize,
        train_images: usize,
        test_images: usize,
        params: usize,
        device: String,
    },
    Step {
        epoch: usize,
        step: usize,
        steps_per_epoch: usize,
        loss: f32,
        lr: f64,
        img_per_s: f64,
        eta_s: f64,
    },
    Evaluating {
        epoch: usize,
    },
    Epoch(EpochRecord),
    Checkpoint {
        path: PathBuf,
        epoch: usize,
    },
    Paused,
    Resumed,
    Stopped {
        epoch: usize,
    },
    Finished {
        history: Box<History>,
    },
    Failed {
        message: String,
    },
}

/// What a run's data set holds, for the user to check before the run gets far: its classes with their image
/// counts, the files left out with the reason, and the warnings (few images in a class, imbalance).
#[derive(Clone, Debug, PartialEq)]
pub struct DataSummary {
    pub root: PathBuf,
    pub class_names: Vec<String>,
    /// Training and validation images of each class, in the order of `class_names`.
    pub train_per_class: Vec<usize>,
    pub val_per_class: Vec<usize>,
    /// Height and width of the images the model takes.
    pub side: usize,
    pub skipped: Vec<crate::data::Skipped>,
    pub warnings: Vec<String>,
}

impl DataSummary {
    pub(crate) fn of(ds: &crate::data::DataSet) -> DataSummary {
        let count = |labels: &[u16]| {
            let mut n = vec![0usize; ds.class_names.len()];
            for &l in labels {
                if let Some(c) = n.get_mut(l as usize) {
                    *c += 1;
                }
            }
            n
        };
        DataSummary {
            root: ds.root.clone(),
            class_names: ds.class_names.clone(),
            train_per_class: count(&ds.train.labels),
            val_per_class: count(&ds.test.labels),
            side: ds.side(),
            skipped: ds.skipped.clone(),
            warnings: ds.warnings.clone(),
        }
    }
}

/// Shared switches to pause, resume and stop a run from another thread.
#[derive(Default)]
pub struct TrainControl {
    pause: AtomicBool,
    stop: AtomicBool,
}

impl TrainControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub(crate) fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
    }
    pub fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    /// Clears a stop request, so that the control can drive the next run.
    pub(crate) fn clear_stop(&self) {
        self.stop.store(false, Ordering::SeqCst);
    }
    pub(crate) fn is_paused(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }
    pub(crate) fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Blocks while paused; true if a stop was asked for.
pub(super) fn wait_while_paused(control: &TrainControl, on_event: &mut impl FnMut(TrainEvent)) -> bool {
    if control.is_stopped() {
        return true;
    }
    if control.is_paused() {
        on_event(TrainEvent::Paused);
        while control.is_paused() && !control.is_stopped() {
            std::thread::sleep(Duration::from_millis(50));
        }
        if control.is_stopped() {
            return true;
        }
        on_event(TrainEvent::Resumed);
    }
    false
}
