//! A run's resume state (weights, momentum, history, best figure) and what a resumed run may take from it.

use super::{runfiles, History, Result, ResumeError, TrainConfig, TrainError};
use crate::exec::graph::MobileNetV3;
use crate::fsutil::write_atomic;
use crate::model::weights;
use crate::train::optim::Sgd;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where a run's resume state lives: `<out_dir>/runs/<stem>.resume.safetensors`.
pub fn resume_path(out_dir: &Path, stem: &str) -> PathBuf {
    out_dir.join("runs").join(format!("{stem}.resume.safetensors"))
}

/// The run folder a resume file belongs to (the inverse of [`resume_path`]): the folder above its `runs/`,
/// where the run's model and history are. None for a resume file kept anywhere else.
pub fn run_folder(resume: &Path) -> Option<PathBuf> {
    let runs = resume.parent()?;
    if runs.file_name()? != "runs" {
        return None;
    }
    let dir = runs.parent()?;
    Some(if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir.to_path_buf() })
}

/// State needed to continue a run after its last finished epoch.
#[derive(Serialize, Deserialize)]
pub(super) struct ResumeHeader {
    pub history: History,
    pub best_metric: Option<f64>,
}

pub(super) fn save_resume(path: &Path, model: &MobileNetV3, opt: &Sgd, header: &ResumeHeader) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = model.params().snapshot()?;
    tensors.extend(opt.state());
    let tensors: Vec<(String, Tensor)> =
        tensors.into_iter().map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?))).collect::<candle_core::Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("resume".to_string(), serde_json::to_string(header)?);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))?;
    write_atomic(path, &bytes).map_err(TrainError::io("writing", path))
}

pub(super) fn load_resume(path: &Path) -> Result<(HashMap<String, Tensor>, ResumeHeader)> {
    let raw = weights::read_raw(path)?;
    let text = raw
        .header
        .as_ref()
        .and_then(|h| h.get("resume"))
        .ok_or_else(|| ResumeError::NotAResumeFile { path: path.into() })?;
    let header: ResumeHeader =
        serde_json::from_str(text).map_err(|error| ResumeError::UnreadableState { path: path.into(), error })?;
    Ok((raw.tensors, header))
}

/// The config a resumed run continues with: the recipe from the resume file, where files go from the caller.
/// The file's run name must be a plain file name (it becomes the stem of every file the run writes), the model
/// must have 2 to 1000 classes, and the data folder must exist.
pub(super) fn resumed_config(path: &Path, header: &ResumeHeader, caller: &TrainConfig) -> Result<TrainConfig> {
    let name = &header.history.name;
    if !runfiles::is_plain_name(name) {
        return Err(ResumeError::BadRunName { path: path.into(), name: name.clone() }.into());
    }
    let mut cfg = header.history.config.clone();
    let classes = cfg.model.num_classes;
    if !(crate::data::folder::MIN_CLASSES..=crate::data::folder::MAX_CLASSES).contains(&classes) {
        return Err(ResumeError::BadClassCount { path: path.into(), classes }.into());
    }
    if header.history.epochs.len() > cfg.epochs {
        let (recorded, planned) = (header.history.epochs.len(), cfg.epochs);
        return Err(ResumeError::TooManyEpochs { path: path.into(), recorded, planned }.into());
    }
    cfg.out_dir = caller.out_dir.clone();
    files_are_this_runs(&cfg.out_dir, &header.history)?;
    if caller.data_dir.is_some() {
        cfg.data_dir = caller.data_dir.clone();
    }
    if caller.images.is_some() {
        cfg.images = caller.images.clone();
    }
    if let Some(d) = &cfg.images {
        if !d.is_dir() {
            return Err(ResumeError::ImagesFolderGone { dir: d.clone() }.into());
        }
    }
    if let Some(d) = &cfg.data_dir {
        if !d.exists() {
            return Err(ResumeError::DataFolderGone { dir: d.clone() }.into());
        }
    }
    Ok(cfg)
}

/// A resumed run writes `<out>/<stem>.safetensors` and `<stem>.history.json`. Files already there under that
/// name must be this run's (its history, with the same start time): resumed into another folder, or from a resume
/// file older than the run now of that name, a run would otherwise overwrite a different run's model, such as a
/// shipped one of the same variant. Checked before the data is loaded and again once the run's lock is held.
pub(super) fn files_are_this_runs(out_dir: &Path, run: &History) -> Result<()> {
    let history = out_dir.join(format!("{}.history.json", run.name));
    let model = out_dir.join(format!("{}.safetensors", run.name));
    match std::fs::read(&history) {
        Ok(bytes) => match serde_json::from_slice::<History>(&bytes) {
            Ok(h) if h.name == run.name && h.started_unix == run.started_unix => Ok(()),
            Ok(h) => Err(ResumeError::AnotherRun { history, theirs: h.started_unix, ours: run.started_unix }.into()),
            Err(error) => Err(ResumeError::UnreadableHistory { history, error }.into()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if model.exists() {
                return Err(ResumeError::ModelWithoutHistory { model }.into());
            }
            Ok(())
        }
        Err(e) => Err(TrainError::io("reading", &history)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_folder_of_a_resume_file_is_the_folder_above_runs() {
        let p = resume_path(Path::new("exp/a"), "mobilenetv3_small_0.25");
        assert_eq!(run_folder(&p), Some(PathBuf::from("exp/a")));
        assert_eq!(run_folder(Path::new("runs/x.resume.safetensors")), Some(PathBuf::from(".")));
        assert_eq!(run_folder(Path::new("elsewhere/x.resume.safetensors")), None);
        assert_eq!(run_folder(Path::new("x.resume.safetensors")), None);
    }
}
