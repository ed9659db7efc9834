//! The background side of the app: one worker thread owns the loaded model and does all model work; training
//! and benchmarks run on threads of their own so that classification stays responsive. Everything reaches the
//! UI as [`Event`]s through a channel, and each event asks egui for a repaint. A panic in any of these threads
//! is caught and reported as an error event, so the UI never waits for an answer that will not come.

use crate::bench::{self, LatencyRow};
use crate::classify::Classifier;
use crate::classify::{self, Prediction};
use crate::data::preprocess;
use crate::device;
use crate::exec::inference::{GradCam, InferencePlan};
use crate::model::weights::{self, LoadOptions};
use crate::train::{self, TrainConfig, TrainControl, TrainEvent};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

/// A model file and what its header says.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEntry {
    pub path: PathBuf,
    pub name: String,
    pub top1: Option<f64>,
    /// Shipped with the installed package (read-only), not one of the user's.
    pub bundled: bool,
}

impl ModelEntry {
    /// The file name, then what [`Self::summary`] says.
    pub fn describe(&self) -> String {
        let file = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        format!("{file} {}", self.summary())
    }

    /// `(variant, top-1 …%, bundled)`.
    pub fn summary(&self) -> String {
        let origin = if self.bundled { ", bundled" } else { "" };
        match self.top1 {
            Some(t) => format!("({}, top-1 {:.1}%{origin})", self.name, t * 100.0),
            None => format!("({}{origin})", self.name),
        }
    }
}

/// What the UI asks for.
pub enum Command {
    RefreshModels,
    LoadModel(PathBuf),
    /// Files or folders to add: the worker expands folders and answers with [`Event::Queued`].
    AddPaths(Vec<PathBuf>),
    /// Classify again files that are already shown (after a model change).
    Classify(Vec<(u64, PathBuf)>),
    /// Grad-CAM of an evaluated image (`input`, normalised, `side` pixels) for `class`, with the evaluated
    /// model's plan; answered with [`Event::EvalExplained`].
    ExplainEvaluated {
        plan: Arc<InferencePlan>,
        index: usize,
        input: Vec<f32>,
        side: usize,
        class: usize,
    },
    /// A shown file at up to 480 pixels with the Grad-CAM of `class` over it; answered with [`Event::LargeView`].
    LargeView {
        path: PathBuf,
        class: usize,
    },
    /// Grad-CAM of a shown file for another of its classes; answered with [`Event::Explained`].
    Explain {
        id: u64,
        path: PathBuf,
        class: usize,
    },
    /// Start a run; the UI has reset the shared control before sending this.
    StartTraining(Box<TrainConfig>),
    /// Continue a stopped or interrupted run from its resume file (`cfg` gives where files go and the data);
    /// the UI has reset the shared control before sending this.
    ResumeTraining {
        cfg: Box<TrainConfig>,
        resume: PathBuf,
    },
    /// Start a benchmark; the UI has reset the cancel flag before sending this.
    RunLatency(LatencyRequest),
    /// Evaluate a model on the CIFAR-100 test split; the UI has reset the cancel flag before sending this.
    Evaluate {
        model: PathBuf,
        data_dir: Option<PathBuf>,
    },
    /// Export a model file to ONNX at `out`; answered with [`Event::Exported`].
    ExportOnnx {
        model: PathBuf,
        out: PathBuf,
    },
    /// Scan a folder of class folders for the Train tab's preview; answered with [`Event::PreviewProgress`]
    /// and [`Event::Previewed`]. Setting `cancel` stops it (a newer folder was named).
    PreviewFolder {
        /// Echoed in the answers, so that the tab can tell them from those of older requests.
        id: u64,
        dir: PathBuf,
        options: crate::data::SplitOptions,
        cancel: Arc<AtomicBool>,
    },
    /// Download the data set archive from `url` into `dir`; the UI has reset the cancel flag before sending this.
    DownloadData {
        url: String,
        md5: Option<String>,
        dir: PathBuf,
    },
}

#[derive(Clone, Debug)]
pub struct LatencyRequest {
    pub variants: Vec<crate::model::arch::ModelConfig>,
    pub devices: Vec<String>,
    pub batches: Vec<usize>,
    pub runs: usize,
    pub warmup: usize,
}

/// An image prepared for display: RGBA pixels of a thumbnail.
#[derive(Debug)]
pub struct Thumbnail {
    pub size: [usize; 2],
    pub rgba: Vec<u8>,
}

impl Thumbnail {
    /// The thumbnail as a texture named `name`, drawn smoothly.
    pub fn texture(&self, ctx: &egui::Context, name: String) -> egui::TextureHandle {
        let img = egui::ColorImage::from_rgba_unmultiplied(self.size, &self.rgba);
        ctx.load_texture(name, img, egui::TextureOptions::LINEAR)
    }
}

/// What the worker reports.
pub enum Event {
    /// The usable model files, and each file that cannot be used with the reason.
    Models {
        models: Vec<ModelEntry>,
        rejected: Vec<(PathBuf, String)>,
    },
    ModelLoaded {
        path: PathBuf,
        name: String,
    },
    ModelFailed {
        path: PathBuf,
        error: String,
    },
    /// Files found for an [`Command::AddPaths`], each with the id its result will carry.
    Queued(Vec<(u64, PathBuf)>),
    Classified {
        id: u64,
        model: PathBuf,
        outcome: Result<Vec<Prediction>, String>,
        thumbnail: Option<Thumbnail>,
        /// Where the model found its top class (Grad-CAM), for the cards' heat maps.
        cam: Option<GradCam>,
    },
    /// A file with a class's Grad-CAM over it (interleaved RGB), for a larger view; `title` names both.
    LargeView {
        title: String,
        size: [usize; 2],
        rgb: Vec<u8>,
    },
    /// Grad-CAM of an evaluated image (by its index in the split).
    EvalExplained {
        index: usize,
        cam: GradCam,
    },
    /// Grad-CAM of a card's image for the class the user picked.
    Explained {
        id: u64,
        model: PathBuf,
        cam: GradCam,
    },
    Train(TrainEvent),
    TrainingEnded,
    /// Files seen so far by the scan of a previewed folder.
    PreviewProgress {
        id: u64,
        seen: usize,
    },
    Previewed {
        id: u64,
        outcome: Result<super::train_tab::preview::FolderPreview, String>,
    },
    LatencyProgress {
        done: usize,
        total: usize,
        current: String,
    },
    LatencyRow(LatencyRow),
    LatencyDone {
        cancelled: bool,
        error: Option<String>,
    },
    /// Test images evaluated so far, of the total.
    EvalProgress {
        done: usize,
        total: usize,
    },
    /// The evaluation's report, None if it was cancelled, or why it failed.
    EvalDone(Result<Option<Box<EvalReport>>, String>),
    /// Bytes of the data set received so far, and the total when the server said.
    DownloadProgress {
        done: u64,
        total: Option<u64>,
    },
    /// The archive's path once downloaded and verified, or why not.
    DownloadDone(Result<PathBuf, String>),
    /// What an ONNX export wrote (one line for the user), or why it failed.
    Exported(Result<String, String>),
    /// Something went wrong outside any request that could report it.
    Error(String),
}

/// What the Evaluate tab shows: the figures of `mobilenetv3 evaluate` and the images of the worst mistakes.
pub struct EvalReport {
    pub model: PathBuf,
    pub name: String,
    pub class_names: Vec<String>,
    pub result: crate::train::EvalResult,
    /// What it was evaluated on, in words (the CIFAR-100 test split, or the validation images of a folder).
    pub data: String,
    /// Side of the mistake images (the model's input size).
    pub side: usize,
    /// side x side RGB pixels (interleaved) of each of `result.mistakes`, in order.
    pub mistake_images: Vec<Vec<u8>>,
    /// The images evaluated (split order, as `result.predictions`): a confusion-matrix cell shows its own.
    pub test: Arc<crate::data::Split>,
    /// The model's CPU plan and normalisation, for Grad-CAM of those images on demand.
    pub plan: Arc<InferencePlan>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl EvalReport {
    /// Image `i` of the evaluated split as interleaved RGB.
    pub fn rgb(&self, i: usize) -> Vec<u8> {
        planar_to_rgb(self.test.image(i))
    }

    /// The indices of the images whose true class is `truth` and predicted `predicted` (None: any), most
    /// confident first.
    pub fn cell(&self, truth: usize, predicted: Option<usize>) -> Vec<usize> {
        let mut hits: Vec<usize> = (0..self.test.len())
            .filter(|&i| {
                self.test.labels[i] as usize == truth
                    && self.result.predictions.get(i).is_some_and(|p| predicted.is_none_or(|c| p.0 as usize == c))
            })
            .collect();
        hits.sort_by(|&a, &b| self.result.predictions[b].1.total_cmp(&self.result.predictions[a].1));
        hits
    }

    /// The normalised input of image `i` at the model's input size, for Grad-CAM.
    pub fn input(&self, i: usize) -> Vec<f32> {
        let s = self.side as u32;
        let img = image::RgbImage::from_raw(s, s, self.rgb(i)).unwrap_or_else(|| image::RgbImage::new(s, s));
        crate::data::preprocess::normalise(&img, self.mean, self.std)
    }
}

/// The UI's handle on the worker.
pub struct Worker {
    tx: Sender<Command>,
    pub rx: Receiver<Event>,
    pub train_control: Arc<TrainControl>,
    pub latency_cancel: Arc<AtomicBool>,
    pub download_cancel: Arc<AtomicBool>,
    pub eval_cancel: Arc<AtomicBool>,
}

impl Worker {
    /// Starts the worker thread; `repaint` wakes the UI when an event is sent.
    /// `model_dirs`: the folders whose model files are listed, the user's (where training saves) first.
    pub fn start(model_dirs: Vec<PathBuf>, repaint: impl Fn() + Send + Sync + 'static) -> Worker {
        let (tx, cmd_rx) = channel::<Command>();
        // Bounded: a worker that gets ahead of the UI waits for it (progress events are dropped instead).
        let (ev_tx, rx) = sync_channel::<Event>(EVENT_QUEUE);
        let repaint: Arc<dyn Fn() + Send + Sync> = Arc::new(repaint);
        let train_control = TrainControl::new();
        let latency_cancel = Arc::new(AtomicBool::new(false));
        let download_cancel = Arc::new(AtomicBool::new(false));
        let eval_cancel = Arc::new(AtomicBool::new(false));
        let state = WorkerState {
            model_dirs,
            model: None,
            next_id: 0,
            events: Notifier { tx: ev_tx, repaint },
            train_control: train_control.clone(),
            latency_cancel: latency_cancel.clone(),
            download_cancel: download_cancel.clone(),
            eval_cancel: eval_cancel.clone(),
        };
        std::thread::Builder::new()
            .name("model-worker".into())
            .spawn(move || state.run(cmd_rx))
            .expect("spawning the model worker");
        Worker { tx, rx, train_control, latency_cancel, download_cancel, eval_cancel }
    }

    pub fn send(&self, c: Command) {
        // The worker outlives every command (panics are caught per command); a send fails only at shutdown.
        let _ = self.tx.send(c);
    }
}

/// Events waiting for the UI at most; the UI drains them every frame.
const EVENT_QUEUE: usize = 1024;

#[derive(Clone)]
struct Notifier {
    tx: SyncSender<Event>,
    repaint: Arc<dyn Fn() + Send + Sync>,
}

impl Notifier {
    /// Sends an event the UI must see, waiting while the queue is full (it fails only once the UI is gone).
    fn send(&self, e: Event) {
        (self.repaint)();
        let _ = self.tx.send(e);
        (self.repaint)();
    }

    /// Sends a progress event that a newer one supersedes: dropped when the queue is full, so that a window
    /// that is not drawing (minimised) never holds up training or a benchmark.
    fn offer(&self, e: Event) {
        let _ = self.tx.try_send(e);
        (self.repaint)();
    }
}

/// The loaded model, ready to run.
struct Ready {
    path: PathBuf,
    classifier: Classifier,
}

struct WorkerState {
    model_dirs: Vec<PathBuf>,
    model: Option<Ready>,
    next_id: u64,
    events: Notifier,
    train_control: Arc<TrainControl>,
    latency_cancel: Arc<AtomicBool>,
    download_cancel: Arc<AtomicBool>,
    eval_cancel: Arc<AtomicBool>,
}

/// Exports `model` to `out` (a second or so for the largest model): the line the Classify tab shows.
fn export_onnx(model: &Path, out: &Path) -> Result<String, String> {
    let done = crate::export::export_file(model, out, crate::export::ExportOptions::default())
        .map_err(|e| format!("ONNX export failed: {e}"))?;
    Ok(format!(
        "Exported {} to {} ({:.1} MB, ONNX opset {}, input (batch, 3, {s}, {s}), {} classes)",
        done.model_name,
        done.path.display(),
        done.bytes as f64 / 1e6,
        crate::export::OPSET,
        done.classes,
        s = done.image_size
    ))
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl WorkerState {
    fn run(mut self, commands: Receiver<Command>) {
        for c in commands {
            let result = catch_unwind(AssertUnwindSafe(|| self.handle(c)));
            if let Err(p) = result {
                self.events.send(Event::Error(format!("internal error in the model worker: {}", panic_message(p))));
            }
        }
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::RefreshModels => self.events.send(models_event(&self.model_dirs)),
            Command::LoadModel(p) => self.load(&p),
            Command::AddPaths(paths) => {
                let files: Vec<(u64, PathBuf)> = classify::collect_images(&paths)
                    .into_iter()
                    .map(|p| {
                        self.next_id += 1;
                        (self.next_id, p)
                    })
                    .collect();
                self.events.send(Event::Queued(files.clone()));
                self.classify(files);
            }
            Command::Classify(files) => self.classify(files),
            Command::ExplainEvaluated { plan, index, input, side, class } => {
                let cam = plan.grad_cam(&input, side, Some(class));
                self.events.send(Event::EvalExplained { index, cam });
            }
            Command::LargeView { path, class } => {
                if let (Some(m), Ok(img)) = (&self.model, preprocess::decode(&path)) {
                    if let Some(cam) = m.classifier.grad_cam(&img, Some(class)) {
                        let view = crate::explain::overlay(&img, &cam, 480);
                        let label = m.classifier.meta.class_names.get(class).cloned().unwrap_or_default();
                        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        let size = [view.width() as usize, view.height() as usize];
                        let title = format!("{name}: where {} found {label}", m.classifier.meta.config.name());
                        self.events.send(Event::LargeView { title, size, rgb: view.into_raw() });
                    }
                }
            }
            Command::Explain { id, path, class } => {
                if let (Some(m), Ok(img)) = (&self.model, preprocess::decode(&path)) {
                    if let Some(cam) = m.classifier.grad_cam(&img, Some(class)) {
                        if verbose() {
                            let label = m.classifier.meta.class_names.get(class).cloned().unwrap_or_default();
                            eprintln!("explained {}: {label}", path.display());
                        }
                        self.events.send(Event::Explained { id, model: m.path.clone(), cam });
                    }
                }
            }
            Command::StartTraining(cfg) => self.start_training(*cfg, None),
            Command::ResumeTraining { cfg, resume } => self.start_training(*cfg, Some(resume)),
            Command::RunLatency(r) => self.start_latency(r),
            Command::DownloadData { url, md5, dir } => self.start_download(url, md5, dir),
            Command::Evaluate { model, data_dir } => self.start_evaluation(model, data_dir),
            Command::PreviewFolder { id, dir, options, cancel } => self.start_preview(id, dir, options, cancel),
            Command::ExportOnnx { model, out } => {
                let result = export_onnx(&model, &out);
                if verbose() {
                    match &result {
                        Ok(line) => eprintln!("{line}"),
                        Err(e) => eprintln!("{e}"),
                    }
                }
                self.events.send(Event::Exported(result))
            }
        }
    }

    fn load(&mut self, path: &Path) {
        self.model = None;
        // The app classifies on the CPU (the inference plan), whatever device training uses.
        match Classifier::load(path, &candle_core::Device::Cpu, &LoadOptions::default()) {
            Ok(classifier) => {
                let name = classifier.meta.config.name();
                self.model = Some(Ready { path: path.to_path_buf(), classifier });
                self.events.send(Event::ModelLoaded { path: path.to_path_buf(), name });
            }
            Err(error) => {
                eprintln!("cannot load model {}: {error}", path.display());
                self.events.send(Event::ModelFailed { path: path.to_path_buf(), error: error.to_string() })
            }
        }
    }

    fn classify(&mut self, files: Vec<(u64, PathBuf)>) {
        // Files that arrive before any model has loaded (the app opened with photos) wait on their cards: the
        // tab classifies every card again once a model has loaded.
        if self.model.is_none() {
            return;
        }
        for (id, path) in files {
            let decoded = preprocess::decode(&path);
            let thumbnail = decoded.as_ref().ok().map(|img| thumbnail(img, 112));
            let (model_path, outcome, cam) = match (&self.model, decoded) {
                (None, _) => continue,
                (Some(m), Err(e)) => (m.path.clone(), Err(e), None),
                (Some(m), Ok(img)) => match m.classifier.classify_and_explain(&img, 5) {
                    Ok((top, cam)) => (m.path.clone(), Ok(top), cam),
                    Err(e) => (m.path.clone(), Err(e.to_string()), None),
                },
            };
            // With MBV3_VERBOSE=1, one log line per image: what scripts (and the real-window check) read.
            if verbose() {
                match &outcome {
                    Ok(top) => {
                        if let Some(t) = top.first() {
                            eprintln!("classified {}: {} ({:.1}%)", path.display(), t.label, t.prob * 100.0)
                        }
                    }
                    Err(e) => eprintln!("could not classify {}: {e}", path.display()),
                }
            }
            self.events.send(Event::Classified { id, model: model_path, outcome, thumbnail, cam });
        }
    }

    fn start_training(&mut self, cfg: TrainConfig, resume: Option<PathBuf>) {
        let control = self.train_control.clone();
        let events = self.events.clone();
        let model_dirs = self.model_dirs.clone();
        let spawned = std::thread::Builder::new().name("training".into()).spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                train::run(&cfg, resume.as_deref(), &control, |ev| {
                    let saved = matches!(ev, TrainEvent::Checkpoint { .. });
                    if verbose() {
                        match &ev {
                            TrainEvent::Epoch(r) => {
                                eprintln!("epoch {}: val loss {:.4}, top-1 {:.2}%", r.epoch, r.val_loss, r.top1 * 100.0)
                            }
                            TrainEvent::Data(d) => eprintln!(
                                "data {}: {} classes ({}), {} skipped",
                                d.root.display(),
                                d.class_names.len(),
                                d.class_names.join(", "),
                                d.skipped.len()
                            ),
                            TrainEvent::Finished { history } => eprintln!(
                                "finished {}: {}",
                                history.name,
                                history.checkpoint.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                            ),
                            TrainEvent::Failed { message } => eprintln!("training failed: {message}"),
                            _ => {}
                        }
                    }
                    if matches!(ev, TrainEvent::Step { .. }) {
                        events.offer(Event::Train(ev));
                    } else {
                        events.send(Event::Train(ev));
                    }
                    if saved {
                        // A new best model appears in the Classify tab's list at once.
                        events.send(models_event(&model_dirs));
                    }
                })
            }));
            if let Err(p) = result {
                let message = format!("internal error: {}", panic_message(p));
                events.send(Event::Train(TrainEvent::Failed { message }));
            }
            events.send(Event::TrainingEnded);
        });
        if let Err(e) = spawned {
            self.events.send(Event::Train(TrainEvent::Failed { message: format!("cannot start a thread: {e}") }));
            self.events.send(Event::TrainingEnded);
        }
    }

    fn start_preview(&mut self, id: u64, dir: PathBuf, options: crate::data::SplitOptions, cancel: Arc<AtomicBool>) {
        let events = self.events.clone();
        let spawned = std::thread::Builder::new().name("preview".into()).spawn(move || {
            let progress = |seen| events.offer(Event::PreviewProgress { id, seen });
            let outcome =
                catch_unwind(AssertUnwindSafe(|| super::train_tab::preview::gather(&dir, &options, &cancel, progress)))
                    .unwrap_or_else(|p| Err(format!("internal error: {}", panic_message(p))));
            if verbose() {
                match &outcome {
                    Ok(p) => eprintln!(
                        "previewed {}: {} classes, {} images shown, {} left out",
                        dir.display(),
                        p.classes.len(),
                        p.classes.iter().map(|c| c.thumbs.len()).sum::<usize>(),
                        p.skipped.len()
                    ),
                    Err(e) => eprintln!("could not preview {}: {e}", dir.display()),
                }
            }
            events.send(Event::Previewed { id, outcome });
        });
        if let Err(e) = spawned {
            self.events.send(Event::Error(format!("cannot start a thread: {e}")));
        }
    }

    fn start_evaluation(&mut self, model: PathBuf, data_dir: Option<PathBuf>) {
        let cancel = self.eval_cancel.clone();
        let events = self.events.clone();
        let spawned = std::thread::Builder::new().name("evaluate".into()).spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| evaluate_report(&model, data_dir, &cancel, &events)))
                .unwrap_or_else(|p| Err(format!("internal error: {}", panic_message(p))));
            if verbose() {
                if let Ok(Some(r)) = &result {
                    eprintln!(
                        "evaluated {}: top-1 {:.2}%, top-5 {:.2}% on {} test images",
                        r.model.display(),
                        r.result.top1 * 100.0,
                        r.result.top5 * 100.0,
                        r.result.images
                    );
                }
            }
            events.send(Event::EvalDone(result));
        });
        if let Err(e) = spawned {
            self.events.send(Event::EvalDone(Err(format!("cannot start a thread: {e}"))));
        }
    }

    fn start_download(&mut self, url: String, md5: Option<String>, dir: PathBuf) {
        let cancel = self.download_cancel.clone();
        let events = self.events.clone();
        let spawned = std::thread::Builder::new().name("download".into()).spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| {
                crate::data::download::download_cancellable(
                    &url,
                    &dir,
                    md5.as_deref(),
                    &mut |done, total| events.offer(Event::DownloadProgress { done, total }),
                    &cancel,
                )
                .map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|p| Err(format!("internal error: {}", panic_message(p))));
            if verbose() {
                match &result {
                    Ok(p) => eprintln!("downloaded {}", p.display()),
                    Err(e) => eprintln!("download failed: {e}"),
                }
            }
            events.send(Event::DownloadDone(result));
        });
        if let Err(e) = spawned {
            self.events.send(Event::DownloadDone(Err(format!("cannot start a thread: {e}"))));
        }
    }

    fn start_latency(&mut self, r: LatencyRequest) {
        let cancel = self.latency_cancel.clone();
        let events = self.events.clone();
        let spawned = std::thread::Builder::new().name("latency".into()).spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| run_latency(&r, &cancel, &events)));
            let (cancelled, error) = match result {
                Ok(Ok(cancelled)) => (cancelled, None),
                Ok(Err(e)) => (false, Some(e)),
                Err(p) => (false, Some(format!("internal error: {}", panic_message(p)))),
            };
            events.send(Event::LatencyDone { cancelled, error });
        });
        if let Err(e) = spawned {
            self.events.send(Event::LatencyDone { cancelled: false, error: Some(e.to_string()) });
        }
    }
}

/// Loads the model and the test split and evaluates, as `mobilenetv3 evaluate` does; Ok(None) if cancelled.
fn evaluate_report(
    path: &Path,
    data_dir: Option<PathBuf>,
    cancel: &AtomicBool,
    events: &Notifier,
) -> Result<Option<Box<EvalReport>>, String> {
    let loaded =
        weights::load_model(path, &candle_core::Device::Cpu, &LoadOptions::default()).map_err(|e| e.to_string())?;
    let (cfg, data) = train::evaluation_config(path, &loaded.meta, data_dir).map_err(|e| format!("{e:#}"))?;
    let ds = train::load_data(&cfg).map_err(|e| format!("{e:#}"))?;
    // A folder's classes are matched by name, as `mobilenetv3 evaluate --images` does.
    if cfg.images.is_some() && ds.class_names != loaded.meta.class_names {
        return Err(format!(
            "{} now holds the classes {}, not the model's {}: it changed since the run",
            data,
            ds.class_names.join(", "),
            loaded.meta.class_names.join(", ")
        ));
    }
    let test = Arc::new(ds.test);
    let model = crate::MobileNetV3::from_params(&loaded.meta.config, loaded.params);
    let result = train::evaluate_with_progress(
        &model,
        &test,
        256,
        || cancel.load(Ordering::SeqCst),
        |done, total| events.offer(Event::EvalProgress { done, total }),
    )
    .map_err(|e| format!("{e:#}"))?;
    let Some(result) = result else { return Ok(None) };
    let mistake_images = result.mistakes.iter().map(|m| planar_to_rgb(test.image(m.index))).collect();
    let plan = InferencePlan::new(model.spec(), model.params()).map_err(|e| e.to_string())?;
    Ok(Some(Box::new(EvalReport {
        model: path.to_path_buf(),
        name: loaded.meta.config.name(),
        class_names: loaded.meta.class_names,
        result,
        data,
        side: test.side,
        mistake_images,
        test,
        plan: Arc::new(plan),
        mean: loaded.meta.mean,
        std: loaded.meta.std,
    })))
}

/// A channel-planar image (CIFAR's layout, and a decoded folder's) as interleaved RGB.
fn planar_to_rgb(planar: &[u8]) -> Vec<u8> {
    let plane = planar.len() / 3;
    (0..plane).flat_map(|i| [planar[i], planar[plane + i], planar[2 * plane + i]]).collect()
}

/// Runs the benchmark; Ok(true) if it was cancelled.
fn run_latency(r: &LatencyRequest, cancel: &AtomicBool, events: &Notifier) -> Result<bool, String> {
    let total = r.variants.len() * r.devices.len() * r.batches.len();
    let mut done = 0;
    for dev_name in &r.devices {
        let dev = device::open(dev_name).map_err(|e| e.to_string())?;
        for cfg in &r.variants {
            for &b in &r.batches {
                events.offer(Event::LatencyProgress {
                    done,
                    total,
                    current: format!("{} on {dev_name}, batch {b}", cfg.name()),
                });
                let stop = |_| cancel.load(Ordering::SeqCst);
                match bench::time_inference(cfg, &dev, b, crate::model::arch::INPUT_SIZE, r.warmup, r.runs, stop)
                    .map_err(|e| e.to_string())?
                {
                    Some(row) => events.send(Event::LatencyRow(row)),
                    None => return Ok(true),
                }
                done += 1;
            }
        }
    }
    Ok(false)
}

/// Whether `MBV3_VERBOSE=1` asks for a log line per classified image.
pub(crate) fn verbose() -> bool {
    static VERBOSE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var("MBV3_VERBOSE").is_ok_and(|v| v == "1"))
}

fn models_event(dirs: &[PathBuf]) -> Event {
    let (mut models, mut rejected) = (Vec::new(), Vec::new());
    for (i, dir) in dirs.iter().enumerate() {
        let (m, r) = list_models(dir);
        models.extend(m.into_iter().map(|m| ModelEntry { bundled: i > 0, ..m }));
        rejected.extend(r);
    }
    for (path, reason) in &rejected {
        eprintln!("cannot use model file {}: {reason}", path.display());
    }
    if verbose() {
        for m in &models {
            eprintln!("model {} {}", m.path.display(), m.summary());
        }
    }
    Event::Models { models, rejected }
}

/// Every model file in the folder, with what its header says, and the files that cannot be used with the
/// reason. Only headers (safetensors) and pickles (`.pth`) are read, never tensor data, and every tensor's name,
/// shape and type is checked against the architecture, so a hostile file costs little and hides no good one.
pub fn list_models(dir: &Path) -> (Vec<ModelEntry>, Vec<(PathBuf, String)>) {
    let (usable, rejected) = classify::scan_models(dir, &LoadOptions::default());
    let models = usable
        .into_iter()
        .map(|m| ModelEntry { top1: m.summary.top1(), name: m.summary.config.name(), path: m.path, bundled: false })
        .collect();
    (models, rejected)
}

fn thumbnail(img: &image::DynamicImage, side: u32) -> Thumbnail {
    let t = img.thumbnail(side, side).to_rgba8();
    Thumbnail { size: [t.width() as usize, t.height() as usize], rgba: t.into_raw() }
}
