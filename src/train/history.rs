//! A run's record: every epoch's metrics and every step's loss, saved beside its checkpoint.

use super::TrainConfig;
use crate::fsutil::write_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Metrics of one finished epoch (1-based), as written to the history file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val_loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub lr: f64,
    pub img_per_s: f64,
    pub elapsed_s: f64,
}

/// Everything a run has done so far; saved beside the checkpoint as `<stem>.history.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub name: String,
    pub config: TrainConfig,
    pub device: String,
    pub started_unix: u64,
    pub epochs: Vec<EpochRecord>,
    /// Training loss of every step, in order (a non-finite one, the step that diverged, is stored as `null`).
    #[serde(with = "finite_or_null")]
    pub step_losses: Vec<f32>,
    pub best_epoch: Option<usize>,
    pub checkpoint: Option<PathBuf>,
    /// "running", "finished", "stopped" or "failed: <reason>".
    pub status: String,
}

/// JSON has no NaN: non-finite losses are written as `null` and read back as NaN, so that the history of a run
/// that diverged stays readable.
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let v: Vec<Option<f32>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }
}

impl History {
    pub fn best(&self) -> Option<&EpochRecord> {
        self.best_epoch.and_then(|e| self.epochs.iter().find(|r| r.epoch == e))
    }

    pub fn load(path: &Path) -> Result<History> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a training history", path.display()))
    }
}

pub(super) fn save_history(path: &Path, h: &History) -> Result<()> {
    let text = serde_json::to_string_pretty(h)?;
    write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}
