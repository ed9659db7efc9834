//! What can go wrong in training, evaluation and a run's files, as errors a caller can match.
//!
//! Each message is whole: where a message names its cause (an I/O or JSON error), the cause is printed in it and
//! kept in a field, not returned again by `source()`, so that a chain printed as `error: cause: …` (the command
//! line's `{:#}`) does not repeat it. Errors of the data, weights, device and candle layers pass through
//! unchanged (`transparent`): same message, same `source()`.

use crate::data::cifar_python::PythonDataError;
use crate::data::folder::{FolderError, MAX_CLASSES, MIN_CLASSES};
use crate::data::DataError;
use crate::device::DeviceError;
use crate::model::weights::WeightsError;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The config has a value out of range (the first of [`crate::train::TrainConfig::problems`]).
    #[error("invalid {field}: {message}")]
    Config { field: &'static str, message: String },
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A data set was found but cannot be read.
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    PythonData(#[from] PythonDataError),
    /// A folder of the user's images that cannot be trained on.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// The model file a run starts from cannot be read.
    #[error("the model to start from, {path}: {error}")]
    StartFrom { path: PathBuf, error: WeightsError },
    /// None of the folders searched holds CIFAR-100.
    #[error(
        "no CIFAR-100 data found in {}: expected train.bin/test.bin, cifar-100-python/ or the .tar.gz archive; \
         pass --data PATH, set CIFAR100_DIR, or fetch it with `mobilenetv3 download`",
        list(.searched)
    )]
    NoData { searched: Vec<PathBuf> },
    #[error("only {images} training images for a batch of {batch}")]
    TooFewImages { images: usize, batch: usize },
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing one of the run's files (`doing` is "reading", "writing", "creating", ...).
    #[error("{doing} {path}: {error}")]
    Io { doing: &'static str, path: PathBuf, error: std::io::Error },
    /// The output folder cannot be made or written (`problem`: "cannot be created", "cannot take files").
    #[error("the output folder {dir} {problem}: {error}")]
    OutputFolder { dir: PathBuf, problem: &'static str, error: std::io::Error },
    /// Too little room for the run's checkpoints (sizes in bytes).
    #[error(
        "only {:.1} MB free on the disk that holds {dir}; this run needs about {:.1} MB for its checkpoints",
        megabytes(*.free),
        megabytes(*.need)
    )]
    NoRoom { dir: PathBuf, free: u64, need: u64 },
    /// Another process trains the run of this name (`holder`: its pid, when it wrote one).
    #[error("the run {name} is being trained by {} in {dir}: two runs never share files", holder_text(.holder))]
    Locked { name: String, dir: PathBuf, holder: Option<String> },
    #[error("no free run name for {base} in {dir}")]
    NoFreeName { base: String, dir: PathBuf },
    /// The loss stopped being a number or exploded: `what` happened `when` (e.g. "at epoch 3, step 20");
    /// `kept` says what of the run is kept.
    #[error(
        "{what} {when} (learning rate {lr}): the run diverged. {kept} Try a lower learning rate (e.g. --lr {})",
        .lr / 10.0
    )]
    Diverged { what: String, when: String, lr: f64, kept: String },
    /// The model's classes are not the data set's.
    #[error("the model has {model} classes, the data set {data}: the model was not trained on these classes")]
    ClassCountMismatch { model: usize, data: usize },
    /// The confusion matrix is classes x classes: a model file may declare up to 100,000 classes.
    #[error("the model has {classes} classes, more than the {max} that can be evaluated", max = MAX_CLASSES)]
    TooManyClasses { classes: usize },
    #[error("no test images to evaluate on")]
    NoImages,
    /// A model with classes of its own whose run history (which names its folder of images) is not beside it.
    #[error(
        "{model} knows other classes than CIFAR-100's, and no run history beside it ({history}) names the folder of images it was trained on: evaluate it with `mobilenetv3 evaluate --model FILE --images DIR`",
        model = model.display(), history = history.display()
    )]
    UnknownEvaluationData { model: PathBuf, history: PathBuf },
    #[error(
        "the data has labels up to {max}, the model {classes} classes: the model was not trained on these classes"
    )]
    LabelsOutOfRange { max: u16, classes: usize },
    #[error("{path} is not a training history: {error}")]
    NotAHistory { path: PathBuf, error: serde_json::Error },
    /// A resume file that cannot be continued here.
    #[error(transparent)]
    Resume(#[from] ResumeError),
    /// A history or resume header that cannot be written as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The resume state cannot be laid out as safetensors.
    #[error(transparent)]
    SafeTensors(#[from] safetensors::SafeTensorError),
}

/// Why a resume file cannot be continued: it is not one, or it does not match the run, its folder or this app.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("{path} is not a resume file of a training run")]
    NotAResumeFile { path: PathBuf },
    #[error("{path}: unreadable run state: {error}")]
    UnreadableState { path: PathBuf, error: serde_json::Error },
    #[error("{path}: the run name {name:?} is not a plain file name; the file is damaged or not from this app")]
    BadRunName { path: PathBuf, name: String },
    #[error("{path}: the run is for {classes} classes; a classifier here has {MIN_CLASSES} to {MAX_CLASSES}")]
    BadClassCount { path: PathBuf, classes: usize },
    #[error("{path}: the run records {recorded} epochs of {planned}")]
    TooManyEpochs { path: PathBuf, recorded: usize, planned: usize },
    #[error("the run's data folder {dir} does not exist: pass --data with the CIFAR-100 folder")]
    DataFolderGone { dir: PathBuf },
    #[error("the run's folder of images {dir} is gone: pass --images with the folder of class folders")]
    ImagesFolderGone { dir: PathBuf },
    /// The history of that name in the output folder is another run's (another start time).
    #[error(
        "{history} is another run's (started at {theirs}, the resume file's run at {ours}: the resume file is stale \
         or from another folder), and continuing here would overwrite it; {RESUME_HINT}"
    )]
    AnotherRun { history: PathBuf, theirs: u64, ours: u64 },
    #[error(
        "{history} cannot be read ({error}), so it cannot be told to be this run's: move it aside if it is; \
         {RESUME_HINT}"
    )]
    UnreadableHistory { history: PathBuf, error: serde_json::Error },
    #[error(
        "{model} exists without its history, so it cannot be told to be this run's: move it aside if it is; \
         {RESUME_HINT}"
    )]
    ModelWithoutHistory { model: PathBuf },
}

const RESUME_HINT: &str = "continue a run in the folder that holds its own model and history (train --out)";

impl TrainError {
    /// An I/O error on `path`, while `doing` ("reading", "writing", ...) it.
    pub(crate) fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> TrainError + 'a {
        move |error| TrainError::Io { doing, path: path.to_path_buf(), error }
    }
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn holder_text(holder: &Option<String>) -> String {
    match holder {
        Some(pid) => format!("process {pid}"),
        None => "another process".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message is whole whichever way it is printed: the app and a run's history print `{}` or `{:#}` of the
    /// error itself, the command line `{:#}` of an anyhow error around it (which adds each `source()`).
    #[test]
    fn a_message_prints_once_whole_in_every_form() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let errors = [
            TrainError::io("writing", Path::new("/runs/m.history.json"))(denied()),
            TrainError::OutputFolder { dir: "/out".into(), problem: "cannot take files", error: denied() },
            TrainError::Diverged {
                what: "the loss is NaN".into(),
                when: "at epoch 2, step 7".into(),
                lr: 0.5,
                kept: "No checkpoint was saved.".into(),
            },
        ];
        let texts = [
            "writing /runs/m.history.json: permission denied",
            "the output folder /out cannot take files: permission denied",
            "the loss is NaN at epoch 2, step 7 (learning rate 0.5): the run diverged. No checkpoint was saved. Try a lower learning rate (e.g. --lr 0.05)",
        ];
        for (e, text) in errors.into_iter().zip(texts) {
            assert_eq!(e.to_string(), text);
            assert_eq!(format!("{e:#}"), text);
            assert_eq!(format!("{:#}", anyhow::Error::from(e)), text);
        }
    }

    /// Errors of the layers below pass through as they are: the same message and the same cause.
    #[test]
    fn a_wrapped_error_keeps_its_message_and_its_source() {
        let data = DataError::Io { path: "/d/train.bin".into(), source: std::io::ErrorKind::NotFound.into() };
        let text = data.to_string();
        let e = TrainError::from(data);
        assert_eq!(e.to_string(), text);
        assert!(std::error::Error::source(&e).is_some_and(|s| s.is::<std::io::Error>()));
    }
}
