//! The background side of the app: one worker thread owns the loaded model and does all model work; training
//! and benchmarks run on threads of their own so that classification stays responsive. Everything reaches the
//! UI as [`Event`]s through a channel, and each event asks egui for a repaint. The UI thread never waits.

use crate::bench::{self, LatencyRow};
use crate::classify::{self, Prediction};
use crate::train::{self, TrainConfig, TrainControl, TrainEvent};
use crate::weights::{self, LoadOptions, LoadedModel};
use crate::{device, preprocess};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

/// A model file and what its header says.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelEntry {
    pub path: PathBuf,
    pub name: String,
    pub top1: Option<f64>,
}

impl ModelEntry {
    pub fn describe(&self) -> String {
        let file = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match self.top1 {
            Some(t) => format!("{file} ({}, top-1 {:.1}%)", self.name, t * 100.0),
            None => format!("{file} ({})", self.name),
        }
    }
}

/// What the UI asks for.
pub enum Command {
    RefreshModels,
    LoadModel(PathBuf),
    /// Classify files; each result comes back under its id.
    Classify(Vec<(u64, PathBuf)>),
    StartTraining(Box<TrainConfig>),
    RunLatency(LatencyRequest),
}

#[derive(Clone, Debug)]
pub struct LatencyRequest {
    pub variants: Vec<crate::arch::ModelConfig>,
    pub devices: Vec<String>,
    pub batches: Vec<usize>,
    pub runs: usize,
    pub warmup: usize,
}

/// An image prepared for display: RGBA pixels of a thumbnail.
pub struct Thumbnail {
    pub size: [usize; 2],
    pub rgba: Vec<u8>,
}

/// What the worker reports.
pub enum Event {
    Models(Vec<ModelEntry>),
    ModelLoaded { path: PathBuf, name: String },
    ModelFailed { path: PathBuf, error: String },
    Classified { id: u64, model: PathBuf, outcome: Result<Vec<Prediction>, String>, thumbnail: Option<Thumbnail> },
    Train(TrainEvent),
    TrainingEnded,
    LatencyProgress { done: usize, total: usize, current: String },
    LatencyRow(LatencyRow),
    LatencyDone { cancelled: bool, error: Option<String> },
}

/// The UI's handle on the worker.
pub struct Worker {
    tx: Sender<Command>,
    pub rx: Receiver<Event>,
    pub train_control: Arc<TrainControl>,
    pub latency_cancel: Arc<AtomicBool>,
}

impl Worker {
    /// Starts the worker thread; `repaint` wakes the UI when an event is sent.
    pub fn start(models_dir: PathBuf, repaint: impl Fn() + Send + Sync + 'static) -> Worker {
        let (tx, cmd_rx) = channel::<Command>();
        let (ev_tx, rx) = channel::<Event>();
        let repaint: Arc<dyn Fn() + Send + Sync> = Arc::new(repaint);
        let train_control = TrainControl::new();
        let latency_cancel = Arc::new(AtomicBool::new(false));
        let state = WorkerState {
            models_dir,
            model: None,
            events: Notifier { tx: ev_tx, repaint },
            train_control: train_control.clone(),
            latency_cancel: latency_cancel.clone(),
        };
        std::thread::Builder::new()
            .name("model-worker".into())
            .spawn(move || state.run(cmd_rx))
            .expect("spawning the model worker");
        Worker { tx, rx, train_control, latency_cancel }
    }

    pub fn send(&self, c: Command) {
        // The worker lives as long as the app; a send can only fail while the app shuts down.
        let _ = self.tx.send(c);
    }
}

#[derive(Clone)]
struct Notifier {
    tx: Sender<Event>,
    repaint: Arc<dyn Fn() + Send + Sync>,
}

impl Notifier {
    fn send(&self, e: Event) {
        let _ = self.tx.send(e);
        (self.repaint)();
    }
}

struct WorkerState {
    models_dir: PathBuf,
    model: Option<LoadedModel>,
    events: Notifier,
    train_control: Arc<TrainControl>,
    latency_cancel: Arc<AtomicBool>,
}

impl WorkerState {
    fn run(mut self, commands: Receiver<Command>) {
        for c in commands {
            match c {
                Command::RefreshModels => self.events.send(Event::Models(list_models(&self.models_dir))),
                Command::LoadModel(p) => self.load(&p),
                Command::Classify(files) => self.classify(files),
                Command::StartTraining(cfg) => self.start_training(*cfg),
                Command::RunLatency(r) => self.start_latency(r),
            }
        }
    }

    fn load(&mut self, path: &Path) {
        let opts = LoadOptions::default();
        match weights::load_model(path, &candle_core::Device::Cpu, &opts) {
            Ok(m) => {
                let name = m.meta.config.name();
                self.model = Some(m);
                self.events.send(Event::ModelLoaded { path: path.to_path_buf(), name });
            }
            Err(e) => {
                self.model = None;
                self.events.send(Event::ModelFailed { path: path.to_path_buf(), error: e.to_string() });
            }
        }
    }

    fn classify(&mut self, files: Vec<(u64, PathBuf)>) {
        for (id, path) in files {
            let thumbnail = preprocess::decode(&path).ok().map(|img| thumbnail(&img, 112));
            let (model_path, outcome) = match &self.model {
                None => (PathBuf::new(), Err("no model loaded: pick one in the model list".to_string())),
                Some(m) => {
                    let outcome = classify::classify_files(m, std::slice::from_ref(&path), 5)
                        .map_err(|e| e.to_string())
                        .and_then(|mut r| r.pop().map(|r| r.outcome).unwrap_or(Err("no result".into())));
                    (m.path.clone(), outcome)
                }
            };
            // One log line per image: what scripts (and the real-window check) read.
            match &outcome {
                Ok(top) => eprintln!("classified {}: {} ({:.1}%)", path.display(), top[0].label, top[0].prob * 100.0),
                Err(e) => eprintln!("could not classify {}: {e}", path.display()),
            }
            self.events.send(Event::Classified { id, model: model_path, outcome, thumbnail });
        }
    }

    fn start_training(&mut self, cfg: TrainConfig) {
        let control = self.train_control.clone();
        control.resume();
        // A fresh control state for this run: clear a stop left from the previous one.
        control.clear_stop();
        let events = self.events.clone();
        let models_dir = self.models_dir.clone();
        std::thread::Builder::new()
            .name("training".into())
            .spawn(move || {
                let _ = train::run(&cfg, None, &control, |ev| {
                    let saved = matches!(ev, TrainEvent::Checkpoint { .. });
                    events.send(Event::Train(ev));
                    if saved {
                        // A new best model appears in the Classify tab's list at once.
                        events.send(Event::Models(list_models(&models_dir)));
                    }
                });
                events.send(Event::TrainingEnded);
            })
            .expect("spawning the training thread");
    }

    fn start_latency(&mut self, r: LatencyRequest) {
        let cancel = self.latency_cancel.clone();
        cancel.store(false, Ordering::SeqCst);
        let events = self.events.clone();
        std::thread::Builder::new()
            .name("latency".into())
            .spawn(move || {
                let total = r.variants.len() * r.devices.len() * r.batches.len();
                let mut done = 0;
                for dev_name in &r.devices {
                    let dev = match device::open(dev_name) {
                        Ok(d) => d,
                        Err(e) => {
                            events.send(Event::LatencyDone { cancelled: false, error: Some(e.to_string()) });
                            return;
                        }
                    };
                    for cfg in &r.variants {
                        for &b in &r.batches {
                            events.send(Event::LatencyProgress {
                                done,
                                total,
                                current: format!("{} on {dev_name}, batch {b}", cfg.name()),
                            });
                            let result = bench::time_inference(cfg, &dev, b, r.warmup, r.runs, |_| {
                                cancel.load(Ordering::SeqCst)
                            });
                            match result {
                                Ok(Some(row)) => events.send(Event::LatencyRow(row)),
                                Ok(None) => {
                                    events.send(Event::LatencyDone { cancelled: true, error: None });
                                    return;
                                }
                                Err(e) => {
                                    events.send(Event::LatencyDone { cancelled: false, error: Some(e.to_string()) });
                                    return;
                                }
                            }
                            done += 1;
                        }
                    }
                }
                events.send(Event::LatencyDone { cancelled: false, error: None });
            })
            .expect("spawning the latency thread");
    }
}

/// Every model file in the folder, with what its header says.
pub fn list_models(dir: &Path) -> Vec<ModelEntry> {
    classify::list_models(dir)
        .into_iter()
        .filter_map(|path| {
            let raw = weights::read_raw(&path).ok()?;
            let header = raw.header.unwrap_or_default();
            let name = match (header.get("variant"), header.get("width")) {
                (Some(v), Some(w)) => format!("{v}_{w}"),
                _ => weights::detect_config(&raw.tensors, &path.to_string_lossy()).ok()?.name(),
            };
            let top1 = header
                .get("training")
                .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
                .and_then(|v| v["top1"].as_f64());
            Some(ModelEntry { path, name, top1 })
        })
        .collect()
}

fn thumbnail(img: &image::DynamicImage, side: u32) -> Thumbnail {
    let t = img.thumbnail(side, side).to_rgba8();
    Thumbnail { size: [t.width() as usize, t.height() as usize], rgba: t.into_raw() }
}
