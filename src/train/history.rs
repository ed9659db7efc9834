//! A run's record: every epoch's metrics and every step's loss, saved beside its checkpoint.

use super::{Result, TrainConfig, TrainError};
use crate::fsutil::write_atomic;
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
    pub status: Status,
}

/// Where a run stands. Written in the history as `"running"`, `"finished"`, `"stopped"` or
/// `"failed: <reason>"` (what histories have always said, so older files read the same).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Running,
    Finished,
    /// Stopped by the user (Stop, Ctrl-C); can be continued.
    Stopped,
    /// Ended by an error after it started (divergence, a full disk, ...), with the message.
    Failed(String),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Running => f.write_str("running"),
            Status::Finished => f.write_str("finished"),
            Status::Stopped => f.write_str("stopped"),
            Status::Failed(reason) => write!(f, "failed: {reason}"),
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "running" => Ok(Status::Running),
            "finished" => Ok(Status::Finished),
            "stopped" => Ok(Status::Stopped),
            _ => match s.strip_prefix("failed") {
                Some(rest) => Ok(Status::Failed(rest.trim_start_matches(':').trim().to_string())),
                None => Err(format!("unknown run status {s:?}")),
            },
        }
    }
}

impl serde::Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Status {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// JSON has no NaN: non-finite losses are written as `null` and read back as NaN, so that the history of a run
/// that diverged stays readable.
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.is_finite().then_some(*x)))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        let v: Vec<Option<f32>> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|x| x.unwrap_or(f32::NAN)).collect())
    }
}

impl History {
    pub fn best(&self) -> Option<&EpochRecord> {
        self.best_epoch.and_then(|e| self.epochs.iter().find(|r| r.epoch == e))
    }

    pub fn load(path: &Path) -> Result<History> {
        let text = std::fs::read_to_string(path).map_err(TrainError::io("reading", path))?;
        serde_json::from_str(&text).map_err(|error| TrainError::NotAHistory { path: path.into(), error })
    }
}

pub(super) fn save_history(path: &Path, h: &History) -> Result<()> {
    let text = serde_json::to_string_pretty(h)?;
    write_atomic(path, text.as_bytes()).map_err(TrainError::io("writing", path))
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn a_status_reads_back_as_written() {
        for s in [Status::Running, Status::Finished, Status::Stopped, Status::Failed("the disk is full".into())] {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        }
        assert_eq!(serde_json::to_string(&Status::Failed("x".into())).unwrap(), "\"failed: x\"");
        assert!(serde_json::from_str::<Status>("\"paused\"").is_err());
    }
}
