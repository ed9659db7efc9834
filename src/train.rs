//! The training engine: one loop that emits events (step, epoch, checkpoint, finished, failed) to whoever
//! listens (the CLI's progress bar, the app's Train tab, a log), and that can be paused, resumed and stopped
//! from another thread. Checkpoints are written atomically; a run can resume from its last epoch.

use crate::arch::{ModelConfig, INPUT_SIZE};
use crate::data::{self, Augment, Cifar100, Split};
use crate::device;
use crate::fsutil::write_atomic;
use crate::layers::Mode;
use crate::model::MobileNetV3;
use crate::optim::{Sgd, SgdConfig};
use crate::weights::{self, ModelMeta};

pub mod runfiles;
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// lr = base * gamma^(number of milestones reached), stepped per epoch (PyTorch's MultiStepLR).
    MultiStep {
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// Linear warm-up over `warmup_epochs`, then cosine decay to zero, stepped per batch.
    Cosine {
        warmup_epochs: usize,
    },
    Constant,
}

impl Schedule {
    /// The reference recipe: milestones 15, 20, 30 and gamma 0.1.
    pub fn reference() -> Schedule {
        Schedule::MultiStep { milestones: vec![15, 20, 30], gamma: 0.1 }
    }

    /// Learning rate at `epoch` (0-based) after `progress` (0..1) of it.
    pub fn lr(&self, base: f64, epoch: usize, progress: f64, total_epochs: usize) -> f64 {
        match self {
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|m| epoch >= **m).count() as i32)
            }
            Schedule::Cosine { warmup_epochs } => {
                let t = epoch as f64 + progress;
                let w = *warmup_epochs as f64;
                if t < w {
                    base * (t + 1e-3) / w
                } else {
                    let span = (total_epochs as f64 - w).max(1e-9);
                    0.5 * base * (1.0 + (std::f64::consts::PI * ((t - w) / span).min(1.0)).cos())
                }
            }
            Schedule::Constant => base,
        }
    }
}

/// Which validation figure picks the best checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// Lowest validation loss (the reference's rule).
    ValLoss,
    /// Highest top-1 accuracy.
    Top1,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub sgd: SgdConfig,
    pub schedule: Schedule,
    pub label_smoothing: f64,
    pub augment: Augment,
    pub seed: u64,
    /// CIFAR-100 folder; None tries the default places.
    pub data_dir: Option<PathBuf>,
    pub device: String,
    /// Use only the first N training / test images (quick runs, tests).
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// Where checkpoints and histories go.
    pub out_dir: PathBuf,
    pub select_by: SelectBy,
    /// How the weights start (histories written before this option existed used Kaiming fan-out).
    #[serde(default)]
    pub init: crate::params::Init,
}

impl TrainConfig {
    /// The reference recipe for a model: SGD lr 0.1 momentum 0.9, no weight decay, MultiStep (15, 20, 30) x 0.1,
    /// batch 128, 20 epochs, crop + flip.
    pub fn reference(model: ModelConfig) -> TrainConfig {
        TrainConfig {
            model,
            epochs: 20,
            batch_size: 128,
            sgd: SgdConfig::default(),
            schedule: Schedule::reference(),
            label_smoothing: 0.0,
            augment: Augment::default(),
            seed: 0,
            data_dir: None,
            device: "cpu".into(),
            limit_train: None,
            limit_test: None,
            out_dir: PathBuf::from("trained_models"),
            select_by: SelectBy::ValLoss,
            init: crate::params::Init::default(),
        }
    }

    /// Every problem with the values, one message each (the app shows them at their fields).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Err(e) = self.model.validate() {
            v.push(("model", e));
        }
        if self.epochs == 0 || self.epochs > 10_000 {
            v.push(("epochs", "epochs must be between 1 and 10000".into()));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            v.push(("batch", "batch size must be between 1 and 4096".into()));
        }
        if !(self.sgd.lr > 0.0 && self.sgd.lr <= 10.0) {
            v.push(("lr", "learning rate must be in (0, 10]".into()));
        }
        if !(0.0..1.0).contains(&self.sgd.momentum) {
            v.push(("momentum", "momentum must be in [0, 1)".into()));
        }
        if !(0.0..=1.0).contains(&self.sgd.weight_decay) {
            v.push(("weight_decay", "weight decay must be in [0, 1]".into()));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            v.push(("label_smoothing", "label smoothing must be in [0, 1)".into()));
        }
        if let Schedule::MultiStep { gamma, .. } = &self.schedule {
            if !(*gamma > 0.0 && *gamma <= 1.0) {
                v.push(("schedule", "gamma must be in (0, 1]".into()));
            }
        }
        if let Some(0) = self.limit_train {
            v.push(("limit_train", "the training limit must be at least one batch".into()));
        }
        v
    }
}

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
    pub fn pause(&self) {
        self.pause.store(true, Ordering::SeqCst);
    }
    pub fn resume(&self) {
        self.pause.store(false, Ordering::SeqCst);
    }
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    /// Clears a stop request, so that the control can drive the next run.
    pub fn clear_stop(&self) {
        self.stop.store(false, Ordering::SeqCst);
    }
    pub fn is_paused(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }
    pub fn is_stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Accuracy and loss over a split.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub images: usize,
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<f64>,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<u32>>,
    /// The most confident wrong predictions, most confident first.
    pub mistakes: Vec<Mistake>,
}

/// A test image the model got wrong, and how sure it was.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Mistake {
    /// Index of the image in the split.
    pub index: usize,
    pub truth: usize,
    pub predicted: usize,
    /// Softmax probability of the wrong class.
    pub confidence: f32,
}

/// How many of the most confident mistakes an evaluation keeps.
pub const MISTAKES_KEPT: usize = 32;

/// Cross-entropy with optional label smoothing: (1 - e) * nll + e * mean over classes of -log p.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> candle_core::Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = log_p.gather(&labels.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = log_p.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}

/// Evaluates a model on a split (eval mode, in order).
pub fn evaluate(
    model: &MobileNetV3,
    split: &Arc<Split>,
    batch: usize,
    should_stop: impl FnMut() -> bool,
) -> Result<Option<EvalResult>> {
    evaluate_with_progress(model, split, batch, should_stop, |_, _| {})
}

/// [`evaluate`], telling `progress` the images done and the total after each batch.
pub fn evaluate_with_progress(
    model: &MobileNetV3,
    split: &Arc<Split>,
    batch: usize,
    mut should_stop: impl FnMut() -> bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<Option<EvalResult>> {
    let classes = model.config().num_classes;
    if let Some(&max) = split.labels.iter().max() {
        if max as usize >= classes {
            bail!("the model has {classes} classes, but the data has labels up to {max}: it is not a CIFAR-100 model");
        }
    }
    let device = model.device().clone();
    // Folded once per evaluation: on the CPU the fused inference plan, several times faster than the graph.
    let inference = model.inference()?;
    let mut confusion = vec![vec![0u32; classes]; classes];
    let mut mistakes: Vec<Mistake> = Vec::new();
    let (mut loss_sum, mut top1, mut top5, mut seen) = (0f64, 0usize, 0usize, 0usize);
    for b in data::epoch_batches(split.clone(), batch, Augment::NONE, false, false, 0, 2) {
        if should_stop() {
            return Ok(None);
        }
        let n = b.labels.len();
        let x = Tensor::from_vec(b.images, (n, 3, INPUT_SIZE, INPUT_SIZE), &device)?;
        let y = Tensor::new(b.labels.as_slice(), &device)?;
        let logits = inference.forward(&x)?;
        loss_sum += cross_entropy(&logits, &y, 0.0)?.to_scalar::<f32>()? as f64 * n as f64;
        let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        for (i, (row, &label)) in rows.iter().zip(&b.labels).enumerate() {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let label = label as usize;
            top1 += (idx[0] == label) as usize;
            top5 += idx.iter().take(5).any(|&i| i == label) as usize;
            confusion[label][idx[0]] += 1;
            if idx[0] != label {
                // Softmax probability of the top (wrong) class: 1 / sum(exp(l - l_max)).
                let max = row[idx[0]];
                let confidence = 1.0 / row.iter().map(|&l| (l - max).exp()).sum::<f32>();
                mistakes.push(Mistake { index: seen + i, truth: label, predicted: idx[0], confidence });
                if mistakes.len() > 4 * MISTAKES_KEPT {
                    keep_most_confident(&mut mistakes);
                }
            }
        }
        seen += n;
        progress(seen, split.len());
    }
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let total: u32 = row.iter().sum();
            if total == 0 {
                0.0
            } else {
                row[c] as f64 / total as f64
            }
        })
        .collect();
    let n = seen.max(1) as f64;
    Ok(Some(EvalResult {
        images: seen,
        loss: loss_sum / n,
        top1: top1 as f64 / n,
        top5: top5 as f64 / n,
        per_class,
        confusion,
        mistakes: {
            keep_most_confident(&mut mistakes);
            mistakes
        },
    }))
}

/// The confusion matrix as CSV: a header of class names, then one row per true class.
pub fn confusion_csv(confusion: &[Vec<u32>], class_names: &[String]) -> String {
    let name = |i: usize| class_names.get(i).cloned().unwrap_or_else(|| format!("class_{i}"));
    let mut s = String::from("true\\predicted");
    for i in 0..confusion.len() {
        s.push(',');
        s.push_str(&name(i));
    }
    s.push('\n');
    for (i, row) in confusion.iter().enumerate() {
        s.push_str(&name(i));
        for v in row {
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    s
}

fn keep_most_confident(m: &mut Vec<Mistake>) {
    m.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.index.cmp(&b.index)));
    m.truncate(MISTAKES_KEPT);
}

/// Reads CIFAR-100 from `path` in whichever official layout it holds: the binary version (`train.bin`,
/// `test.bin`), the python version (`cifar-100-python/`), or either original `.tar.gz` archive.
/// `Ok(None)` when there is no data set there at all.
pub fn open_dataset(path: &Path) -> Result<Option<Cifar100>> {
    if is_archive(path) {
        return Ok(Some(crate::cifar_python::load_tar_gz(path)?));
    }
    if data::locate(path).is_ok() {
        return Ok(Some(data::load(path)?));
    }
    if crate::cifar_python::locate_python(path).is_ok() {
        return Ok(Some(crate::cifar_python::load_python_dir(path)?));
    }
    for name in ARCHIVES {
        if is_archive(&path.join(name)) {
            return Ok(Some(crate::cifar_python::load_tar_gz(&path.join(name))?));
        }
    }
    Ok(None)
}

/// Whether `path` looks like it holds CIFAR-100 (without reading it).
pub fn has_dataset(path: &Path) -> bool {
    is_archive(path)
        || data::locate(path).is_ok()
        || crate::cifar_python::locate_python(path).is_ok()
        || ARCHIVES.iter().any(|n| is_archive(&path.join(n)))
}

/// The official archive names looked for inside a data folder.
const ARCHIVES: [&str; 2] = ["cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"];

fn is_archive(p: &Path) -> bool {
    let n = p.to_string_lossy();
    p.is_file() && (n.ends_with(".tar.gz") || n.ends_with(".tgz"))
}

/// Loads the data set a config names (or the first default folder that has it), with its limits applied.
pub fn load_data(cfg: &TrainConfig) -> Result<Cifar100> {
    let dirs = match &cfg.data_dir {
        Some(d) => vec![d.clone()],
        None => data::default_dirs(),
    };
    for d in &dirs {
        if let Some(mut ds) = open_dataset(d)? {
            if let Some(n) = cfg.limit_train {
                ds.train.truncate(n);
            }
            if let Some(n) = cfg.limit_test {
                ds.test.truncate(n);
            }
            return Ok(ds);
        }
    }
    bail!(
        "no CIFAR-100 data found in {}: expected train.bin/test.bin, cifar-100-python/ or the .tar.gz archive; \
         pass --data PATH, set CIFAR100_DIR, or fetch it with `mobilenetv3 download`",
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}

/// File stem of a run's checkpoint: `mobilenetv3_small_0.25`, or `..._2`, `..._3` when that name belongs to
/// another run (a new run never overwrites an earlier run's model).
pub fn choose_stem(out_dir: &Path, model: &ModelConfig) -> String {
    runfiles::free_names(out_dir, &format!("mobilenetv3_{}", model.name())).next().unwrap_or_default()
}

/// Where a run's resume state lives: `<out_dir>/runs/<stem>.resume.safetensors`.
pub fn resume_path(out_dir: &Path, stem: &str) -> PathBuf {
    out_dir.join("runs").join(format!("{stem}.resume.safetensors"))
}

/// State needed to continue a run after its last finished epoch.
#[derive(Serialize, Deserialize)]
struct ResumeHeader {
    history: History,
    best_metric: Option<f64>,
}

fn save_resume(path: &Path, model: &MobileNetV3, opt: &Sgd, header: &ResumeHeader) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = model.params().snapshot()?;
    tensors.extend(opt.state());
    let tensors: Vec<(String, Tensor)> =
        tensors.into_iter().map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?))).collect::<candle_core::Result<_>>()?;
    let mut meta = HashMap::new();
    meta.insert("resume".to_string(), serde_json::to_string(header)?);
    let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))?;
    write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

fn load_resume(path: &Path) -> Result<(HashMap<String, Tensor>, ResumeHeader)> {
    let raw = weights::read_raw(path)?;
    let text = raw
        .header
        .as_ref()
        .and_then(|h| h.get("resume"))
        .with_context(|| format!("{} is not a resume file of a training run", path.display()))?;
    let header: ResumeHeader =
        serde_json::from_str(text).with_context(|| format!("{}: unreadable run state", path.display()))?;
    Ok((raw.tensors, header))
}

/// The config a resumed run continues with: the recipe from the resume file, where files go from the caller.
/// The file's run name must be a plain file name (it becomes the stem of every file the run writes), the model
/// must have CIFAR-100's 100 classes, and the data folder must exist.
fn resumed_config(path: &Path, header: &ResumeHeader, caller: &TrainConfig) -> Result<TrainConfig> {
    let name = &header.history.name;
    if !runfiles::is_plain_name(name) {
        bail!(
            "{}: the run name {name:?} is not a plain file name; the file is damaged or not from this app",
            path.display()
        );
    }
    let mut cfg = header.history.config.clone();
    if cfg.model.num_classes != crate::labels::CIFAR100_FINE.len() {
        bail!(
            "{}: the run is for {} classes; training here is for CIFAR-100's {}",
            path.display(),
            cfg.model.num_classes,
            crate::labels::CIFAR100_FINE.len()
        );
    }
    if header.history.epochs.len() > cfg.epochs {
        bail!("{}: the run records {} epochs of {}", path.display(), header.history.epochs.len(), cfg.epochs);
    }
    cfg.out_dir = caller.out_dir.clone();
    if caller.data_dir.is_some() {
        cfg.data_dir = caller.data_dir.clone();
    }
    if let Some(d) = &cfg.data_dir {
        if !d.exists() {
            bail!("the run's data folder {} does not exist: pass --data with the CIFAR-100 folder", d.display());
        }
    }
    Ok(cfg)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs (or resumes) training. Events go to `on_event`; the return value is the final history.
pub fn run(
    cfg: &TrainConfig,
    resume: Option<&Path>,
    control: &TrainControl,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<History> {
    let result = run_inner(cfg, resume, control, &mut on_event);
    if let Err(e) = &result {
        on_event(TrainEvent::Failed { message: format!("{e:#}") });
    }
    result
}

fn run_inner(
    cfg: &TrainConfig,
    resume: Option<&Path>,
    control: &TrainControl,
    on_event: &mut impl FnMut(TrainEvent),
) -> Result<History> {
    // Resuming takes the saved run's recipe (so it cannot silently change mid-run), but where files go comes from
    // the caller: the file supplies only its run's name, checked to be a plain file name.
    let (cfg, resumed) = match resume {
        Some(p) => {
            let (tensors, header) = load_resume(p)?;
            let cfg = resumed_config(p, &header, cfg)?;
            (cfg, Some((tensors, header)))
        }
        None => (cfg.clone(), None),
    };
    if let Some((field, msg)) = cfg.problems().into_iter().next() {
        bail!("invalid {field}: {msg}");
    }
    let dev = device::open(&cfg.device)?;
    let ds = load_data(&cfg)?;
    if ds.train.len() < cfg.batch_size {
        bail!("only {} training images for a batch of {}", ds.train.len(), cfg.batch_size);
    }
    let train = Arc::new(ds.train);
    let test = Arc::new(ds.test);
    // Before any epoch: the output folder must take files, with room for the checkpoints; temp files that
    // crashed runs left behind are removed.
    let checkpoint_bytes = cfg.model.spec().parameter_count() as u64 * 4;
    runfiles::prepare_out_dir(&cfg.out_dir, checkpoint_bytes)?;

    let model = MobileNetV3::new_with(&cfg.model, &dev, cfg.seed, cfg.init)?;
    let mut opt = Sgd::new(model.params().trainable(), cfg.sgd.clone());
    let (mut history, mut best_metric, _lock) = match resumed {
        Some((tensors, header)) => {
            let lock = runfiles::RunLock::acquire(&cfg.out_dir, &header.history.name)?;
            model.params().copy_from(&tensors)?;
            opt.load_state(&tensors)?;
            let mut h = header.history;
            h.config = cfg.clone();
            (h, header.best_metric.filter(|m| m.is_finite()), lock)
        }
        None => {
            let mut h = History {
                name: String::new(),
                config: cfg.clone(),
                device: cfg.device.clone(),
                started_unix: unix_now(),
                epochs: Vec::new(),
                step_losses: Vec::new(),
                best_epoch: None,
                checkpoint: None,
                status: "running".into(),
            };
            let lock = runfiles::reserve_name(&cfg.out_dir, &format!("mobilenetv3_{}", cfg.model.name()), |name| {
                h.name = name.to_string();
                Ok(serde_json::to_string_pretty(&h)?.into_bytes())
            })?;
            (h, None, lock)
        }
    };
    history.status = "running".into();
    let stem = history.name.clone();
    let ckpt_path = cfg.out_dir.join(format!("{stem}.safetensors"));
    let history_path = cfg.out_dir.join(format!("{stem}.history.json"));
    let state_path = resume_path(&cfg.out_dir, &stem);
    // From here on a failure is recorded in the run's history ("failed: <reason>") before it is reported.
    let fail = |history: &mut History, e: anyhow::Error| -> anyhow::Error {
        history.status = format!("failed: {e:#}");
        let _ = save_history(&history_path, history);
        e
    };
    let steps_per_epoch = data::batches_per_epoch(train.len(), cfg.batch_size, true);
    on_event(TrainEvent::Started {
        name: stem.clone(),
        epochs: cfg.epochs,
        steps_per_epoch,
        train_images: train.len(),
        test_images: test.len(),
        params: model.spec().parameter_count(),
        device: cfg.device.clone(),
    });

    let start_epoch = history.epochs.len();
    let elapsed_before: f64 = history.epochs.last().map(|r| r.elapsed_s).unwrap_or(0.0);
    let run_start = Instant::now();
    // Seconds per training step and per evaluation, smoothed, for the ETA.
    let mut step_s: Option<f64> = None;
    let mut divergence = DivergenceGuard::default();
    let mut eval_s: Option<f64> = None;
    for epoch in start_epoch..cfg.epochs {
        let epoch_start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let batches = data::epoch_batches(
            train.clone(),
            cfg.batch_size,
            cfg.augment,
            true,
            true,
            cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64),
            3,
        );
        let mut lr = cfg.schedule.lr(cfg.sgd.lr, epoch, 0.0, cfg.epochs);
        for b in batches {
            if wait_while_paused(control, on_event) {
                return finish_stopped(history, &history_path, epoch, on_event);
            }
            let t = Instant::now();
            lr = cfg.schedule.lr(cfg.sgd.lr, epoch, b.index as f64 / steps_per_epoch as f64, cfg.epochs);
            opt.set_lr(lr);
            let n = b.labels.len();
            let global = (epoch * steps_per_epoch + b.index) as u64;
            let dropout_seed = cfg.seed ^ global.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let (loss_v, pred, grads) = if dev.is_cpu() {
                // The hand-written CPU step (same numbers as the graph, a fraction of the memory traffic).
                let out = crate::engine::train_step(
                    &model,
                    b.images,
                    INPUT_SIZE,
                    &b.labels,
                    cfg.label_smoothing as f32,
                    dropout_seed,
                )?;
                let classes = cfg.model.num_classes;
                let pred: Vec<u32> = out.logits.chunks(classes).map(|r| argmax(r) as u32).collect();
                (out.loss, pred, out.grads)
            } else {
                let x = Tensor::from_vec(b.images, (n, 3, INPUT_SIZE, INPUT_SIZE), &dev)?;
                let y = Tensor::new(b.labels.as_slice(), &dev)?;
                let logits = model.forward(&x, Mode::Train { seed: dropout_seed })?;
                let loss = cross_entropy(&logits, &y, cfg.label_smoothing)?;
                let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
                (loss.to_scalar::<f32>()?, pred, loss.backward()?)
            };
            if let Some(what) = divergence.check(loss_v) {
                history.step_losses.push(loss_v);
                let e = anyhow::anyhow!(
                    "{what} at epoch {}, step {} (learning rate {lr}): the run diverged. {} Try a lower learning \
                     rate (e.g. --lr {})",
                    epoch + 1,
                    b.index + 1,
                    kept(&history),
                    lr / 10.0
                );
                return Err(fail(&mut history, e));
            }
            opt.step(&grads)?;
            correct += pred.iter().zip(&b.labels).filter(|(a, b)| a == b).count();
            loss_sum += loss_v as f64 * n as f64;
            seen += n;
            history.step_losses.push(loss_v);
            let dt = t.elapsed().as_secs_f64();
            step_s = Some(match step_s {
                Some(s) => 0.9 * s + 0.1 * dt,
                None => dt,
            });
            let s = step_s.unwrap_or(dt);
            let steps_left = (cfg.epochs - epoch) * steps_per_epoch - (b.index + 1);
            let evals_left = (cfg.epochs - epoch) as f64;
            let eta = steps_left as f64 * s
                + evals_left * eval_s.unwrap_or(s * test.len() as f64 / cfg.batch_size as f64 / 3.0);
            on_event(TrainEvent::Step {
                epoch: epoch + 1,
                step: b.index + 1,
                steps_per_epoch,
                loss: loss_v,
                lr,
                img_per_s: n as f64 / s,
                eta_s: eta,
            });
        }
        let train_s = epoch_start.elapsed().as_secs_f64();
        on_event(TrainEvent::Evaluating { epoch: epoch + 1 });
        let t_eval = Instant::now();
        let Some(ev) = evaluate(&model, &test, 256, || control.is_stopped())? else {
            return finish_stopped(history, &history_path, epoch, on_event);
        };
        eval_s = Some(t_eval.elapsed().as_secs_f64());
        if !ev.loss.is_finite() {
            let e = anyhow::anyhow!(
                "the validation loss became {} after epoch {} (learning rate {lr}): the run diverged. {} Try a \
                 lower learning rate (e.g. --lr {})",
                ev.loss,
                epoch + 1,
                kept(&history),
                lr / 10.0
            );
            return Err(fail(&mut history, e));
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_top1: correct as f64 / seen.max(1) as f64,
            val_loss: ev.loss,
            top1: ev.top1,
            top5: ev.top5,
            lr,
            img_per_s: seen as f64 / train_s,
            elapsed_s: elapsed_before + run_start.elapsed().as_secs_f64(),
        };
        history.epochs.push(record.clone());
        on_event(TrainEvent::Epoch(record.clone()));
        let metric = match cfg.select_by {
            SelectBy::ValLoss => -ev.loss,
            SelectBy::Top1 => ev.top1,
        };
        if metric.is_finite() && best_metric.is_none_or(|b| metric > b) {
            best_metric = Some(metric);
            history.best_epoch = Some(epoch + 1);
            history.checkpoint = Some(ckpt_path.clone());
            let mut meta = ModelMeta::cifar100(&cfg.model);
            meta.class_names = ds.class_names.clone();
            meta.training = Some(training_summary(&history, &record));
            if let Err(e) = weights::save_model(&ckpt_path, &model, &meta) {
                return Err(fail(&mut history, e.into()));
            }
            on_event(TrainEvent::Checkpoint { path: ckpt_path.clone(), epoch: epoch + 1 });
        }
        let saved = save_history(&history_path, &history).and_then(|()| {
            save_resume(&state_path, &model, &opt, &ResumeHeader { history: history.clone(), best_metric })
        });
        if let Err(e) = saved {
            return Err(fail(&mut history, e));
        }
    }
    history.status = "finished".into();
    save_history(&history_path, &history)?;
    // The run is complete: its resume state is no longer needed.
    let _ = std::fs::remove_file(&state_path);
    on_event(TrainEvent::Finished { history: Box::new(history.clone()) });
    Ok(history)
}

/// Stops a run whose loss is not finite, or that jumps far above its running mean: a run that diverges goes
/// from ~4 to 10^13 within a few steps before it reaches NaN, and nothing it does after that is worth keeping.
#[derive(Default)]
struct DivergenceGuard {
    mean: f64,
    steps: usize,
}

impl DivergenceGuard {
    /// How far above the running mean a loss may jump, once the mean has settled.
    const JUMP: f64 = 50.0;
    const SETTLE_STEPS: usize = 20;

    /// What is wrong with this step's loss, if anything.
    fn check(&mut self, loss: f32) -> Option<String> {
        let l = f64::from(loss);
        if !l.is_finite() {
            return Some(format!("the loss became {loss}"));
        }
        if self.steps >= Self::SETTLE_STEPS && l > Self::JUMP * self.mean {
            return Some(format!(
                "the loss jumped to {loss:.4e}, {:.0} times its running mean {:.3}",
                l / self.mean,
                self.mean
            ));
        }
        self.mean = if self.steps == 0 { l } else { 0.98 * self.mean + 0.02 * l };
        self.steps += 1;
        None
    }
}

/// What a failed run leaves, for its message.
fn kept(h: &History) -> String {
    match h.best_epoch {
        Some(e) => format!("The best checkpoint (epoch {e}) is kept."),
        None => "No checkpoint was saved.".to_string(),
    }
}

/// A duration for progress lines: `mm:ss`, or `h:mm:ss` from an hour on.
pub fn hms(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) as u64 } else { 0 };
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0)
}

/// What the checkpoint's header says about its training.
fn training_summary(h: &History, best: &EpochRecord) -> serde_json::Value {
    serde_json::json!({
        "run": h.name,
        "epoch": best.epoch,
        "epochs_planned": h.config.epochs,
        "top1": best.top1,
        "top5": best.top5,
        "val_loss": best.val_loss,
        "train_images": h.config.limit_train.unwrap_or(data::TRAIN_IMAGES),
        "batch_size": h.config.batch_size,
        "lr": h.config.sgd.lr,
        "schedule": h.config.schedule,
        "seed": h.config.seed,
        "device": h.device,
    })
}

fn save_history(path: &Path, h: &History) -> Result<()> {
    let text = serde_json::to_string_pretty(h)?;
    write_atomic(path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

/// Blocks while paused; true if a stop was asked for.
fn wait_while_paused(control: &TrainControl, on_event: &mut impl FnMut(TrainEvent)) -> bool {
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

fn finish_stopped(
    mut history: History,
    path: &Path,
    epoch: usize,
    on_event: &mut impl FnMut(TrainEvent),
) -> Result<History> {
    history.status = "stopped".into();
    save_history(path, &history)?;
    on_event(TrainEvent::Stopped { epoch: epoch + 1 });
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_matches_pytorch() {
        let s = Schedule::reference();
        assert_eq!(s.lr(0.1, 0, 0.0, 20), 0.1);
        assert_eq!(s.lr(0.1, 14, 0.9, 20), 0.1);
        assert!((s.lr(0.1, 15, 0.0, 20) - 0.01).abs() < 1e-12);
        // Milestone 20 is first felt by the 21st epoch (index 20), as PyTorch's scheduler stepped per epoch.
        assert!((s.lr(0.1, 19, 0.0, 20) - 0.01).abs() < 1e-12);
        assert!((s.lr(0.1, 20, 0.0, 30) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_zero() {
        let s = Schedule::Cosine { warmup_epochs: 2 };
        assert!(s.lr(0.1, 0, 0.0, 10) < 0.001);
        assert!((s.lr(0.1, 2, 0.0, 10) - 0.1).abs() < 1e-9);
        assert!(s.lr(0.1, 9, 0.999, 10) < 1e-4);
    }

    #[test]
    fn the_divergence_guard_stops_non_finite_losses_and_jumps_but_not_noise() {
        let mut g = DivergenceGuard::default();
        for i in 0..200 {
            // A normal run: ~4.6 falling to ~2, with step-to-step noise of a factor of 2.
            let l = 4.6 - 2.5 * (i as f32 / 200.0) * if i % 2 == 0 { 1.0 } else { 0.5 };
            assert_eq!(g.check(l), None, "step {i}");
        }
        assert!(g.check(500.0).unwrap().contains("times its running mean"));
        assert!(DivergenceGuard::default().check(f32::NAN).unwrap().contains("NaN"));
        assert!(DivergenceGuard::default().check(f32::INFINITY).unwrap().contains("inf"));
    }

    #[test]
    fn config_problems_are_reported_per_field() {
        let mut c = TrainConfig::reference(ModelConfig::new(crate::arch::Variant::Small, 0.25));
        assert!(c.problems().is_empty());
        c.epochs = 0;
        c.sgd.lr = -1.0;
        let fields: Vec<&str> = c.problems().iter().map(|p| p.0).collect();
        assert_eq!(fields, vec!["epochs", "lr"]);
    }
}
