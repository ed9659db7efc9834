//! What a run tells whoever listens (the CLI's progress line, the app's Train tab), and the switches another
//! thread pauses, resumes and stops it with.

use super::{EpochRecord, History};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum TrainEvent {
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
