//! Train tab: the run's form (checked field by field), start / pause / resume / stop, live curves, progress.
//!
//! One job a file: the form ([`form`]), the data set panel ([`data_panel`]), the preview of a folder of
//! images ([`preview`]), past runs ([`runs`], read off
//! the UI thread) and the plots ([`plots`]); this file holds the run's state and lays the tab out.

mod data_panel;
pub mod form;
mod plots;
pub mod preview;
pub mod runs;

use super::dialog::Pending;
use super::worker::{Command, ModelEntry, Worker};
use crate::train::{hms, EpochRecord, TrainConfig, TrainEvent};
pub use data_panel::DownloadState;
use egui::Color32;
pub use form::{DataSource, FolderFor, TrainForm};
use runs::PastRuns;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Idle,
    Running,
    Paused,
}

/// What the curves show for the current run.
#[derive(Default)]
pub struct RunView {
    pub name: String,
    pub steps_per_epoch: usize,
    pub step_loss: Vec<[f64; 2]>,
    pub smoothed: Vec<[f64; 2]>,
    pub epochs: Vec<EpochRecord>,
    pub lr: Vec<[f64; 2]>,
    pub epoch: usize,
    pub step: usize,
    pub img_per_s: f64,
    pub eta_s: f64,
    pub message: String,
    /// The device the run trains on.
    pub device: String,
    /// The run's epochs (a resumed run's own count).
    pub epochs_total: usize,
}

pub struct TrainTab {
    pub form: TrainForm,
    pub state: RunState,
    pub run: RunView,
    /// Past runs found in the models folder (read off the UI thread).
    pub past: PastRuns,
    pub out_dir: PathBuf,
    /// The last data folder checked and whether it holds CIFAR-100 (checked when the field changes only).
    data_check: (String, bool),
    /// The same for the folder of the user's images (whether it is a folder).
    images_check: (String, bool),
    /// Where the data set is downloaded to, and from where (URL, expected MD5).
    pub data_home: PathBuf,
    pub data_source: (String, Option<String>),
    pub download: DownloadState,
    /// A folder dialog that is open, and the field it fills.
    folder_pick: Option<(Pending, FolderFor)>,
    /// Why the folder picker could not be shown, shown where it was asked for.
    pub folder_error: Option<String>,
    /// Where curves and histories are exported, and what the last export said.
    pub export_dir: PathBuf,
    pub export_message: Option<String>,
    /// The preview of the folder of images the form names (scanned by the worker).
    pub preview: preview::PreviewState,
}

impl TrainTab {
    pub fn new(form: TrainForm, out_dir: PathBuf, data_home: PathBuf, export_dir: PathBuf) -> Self {
        let mut t = TrainTab {
            form,
            state: RunState::Idle,
            run: RunView::default(),
            past: PastRuns::default(),
            out_dir,
            data_check: (String::from("\u{0}"), false),
            images_check: (String::from("\u{0}"), false),
            data_home,
            data_source: crate::data::download::cifar100_source(),
            download: DownloadState::default(),
            folder_pick: None,
            folder_error: None,
            export_dir,
            export_message: None,
            preview: preview::PreviewState::default(),
        };
        if t.form.data_dir.trim().is_empty() && crate::train::has_dataset(&t.data_home) {
            t.form.data_dir = t.data_home.display().to_string();
        }
        t.past.rescan();
        t
    }

    pub(crate) fn on_event(&mut self, ev: TrainEvent) {
        match ev {
            TrainEvent::Started { name, epochs, steps_per_epoch, device, .. } => {
                self.run = RunView {
                    name,
                    steps_per_epoch,
                    device,
                    epochs_total: epochs,
                    message: "training".into(),
                    ..Default::default()
                };
                self.state = RunState::Running;
            }
            TrainEvent::Step { epoch, step, steps_per_epoch, loss, lr, img_per_s, eta_s } => {
                let x = ((epoch - 1) * steps_per_epoch + step) as f64 / steps_per_epoch as f64;
                self.run.step_loss.push([x, loss as f64]);
                let prev = self.run.smoothed.last().map(|p| p[1]).unwrap_or(loss as f64);
                self.run.smoothed.push([x, 0.95 * prev + 0.05 * loss as f64]);
                self.run.lr.push([x, lr]);
                self.run.epoch = epoch;
                self.run.step = step;
                self.run.steps_per_epoch = steps_per_epoch;
                self.run.img_per_s = img_per_s;
                self.run.eta_s = eta_s;
            }
            TrainEvent::Decoding { done, total } => self.run.message = format!("decoding images: {done}/{total}"),
            TrainEvent::Embedding { done, total } => {
                self.run.message = format!("embedding images with the frozen backbone: {done}/{total}")
            }
            TrainEvent::Data(summary) => {
                self.run.message = format!(
                    "{} classes, {} training images at {}x{}",
                    summary.class_names.len(),
                    summary.train_per_class.iter().sum::<usize>(),
                    summary.side,
                    summary.side
                )
            }
            TrainEvent::Evaluating { epoch } => self.run.message = format!("evaluating epoch {epoch}"),
            TrainEvent::Epoch(r) => {
                self.run.message = format!("epoch {}: top-1 {:.2}%", r.epoch, r.top1 * 100.0);
                self.run.epochs.push(r);
            }
            TrainEvent::Checkpoint { path, epoch } => {
                self.run.message = format!("saved best model (epoch {epoch}) to {}", path.display())
            }
            TrainEvent::Paused => self.state = RunState::Paused,
            TrainEvent::Resumed => self.state = RunState::Running,
            TrainEvent::Stopped { epoch } => {
                self.state = RunState::Idle;
                self.run.message = format!("stopped in epoch {epoch}");
                self.past.rescan();
            }
            TrainEvent::Finished { history } => {
                self.state = RunState::Idle;
                self.run.message = match history.best() {
                    Some(b) => format!("finished: best top-1 {:.2}% (epoch {})", b.top1 * 100.0, b.epoch),
                    None => "finished".into(),
                };
                self.past.rescan();
            }
            TrainEvent::Failed { message } => {
                self.state = RunState::Idle;
                self.run.message = format!("failed: {message}");
            }
        }
    }

    /// A folder chosen in a dialog or dropped on the tab: a folder of images selects *My images*.
    pub(crate) fn set_folder(&mut self, target: FolderFor, dir: &Path) {
        match target {
            FolderFor::Cifar100 => self.form.data_dir = dir.display().to_string(),
            FolderFor::Images => {
                self.form.source = DataSource::Images;
                self.form.images_dir = dir.display().to_string();
            }
        }
    }

    /// The training thread has ended (normally or not): the tab is idle again whatever was missed.
    pub(crate) fn on_ended(&mut self) {
        if self.state != RunState::Idle {
            self.state = RunState::Idle;
            if self.run.message.is_empty() || self.run.message == "training" {
                self.run.message = "the run ended".into();
            }
        }
    }

    /// The data folder the form names, when it holds CIFAR-100 (checked again only when the field changes).
    pub(crate) fn data_folder(&mut self) -> Option<PathBuf> {
        let dir = self.form.data_dir.trim().to_string();
        if self.data_check.0 != dir {
            self.data_check = (dir.clone(), crate::train::has_dataset(Path::new(&dir)));
        }
        self.data_check.1.then(|| PathBuf::from(dir))
    }

    pub(crate) fn ui(&mut self, ui: &mut egui::Ui, worker: &Worker, models: &[ModelEntry]) {
        self.past.poll(ui.ctx(), &self.out_dir, self.state == RunState::Idle);
        if let Some((answer, target)) = self.folder_pick.as_ref().and_then(|(p, t)| p.poll().map(|a| (a, *t))) {
            self.folder_pick = None;
            match answer.map(|d| d.into_iter().next()) {
                Ok(Some(d)) => self.set_folder(target, &d),
                Ok(None) => {}
                Err(e) => self.folder_error = Some(e),
            }
        }
        let dir = self.form.data_dir.trim().to_string();
        if self.data_check.0 != dir {
            self.data_check = (dir.clone(), crate::train::has_dataset(Path::new(&dir)));
        }
        let images = self.form.images_dir.trim().to_string();
        if self.images_check.0 != images {
            self.images_check = (images.clone(), Path::new(&images).is_dir());
        }
        let cifar = self.form.source == DataSource::Cifar100;
        let ok = if cifar { self.data_check.1 } else { self.images_check.1 };
        let checked = self.form.to_config(&self.out_dir, |_| ok);
        let mut errors = checked.as_ref().err().cloned().unwrap_or_default();
        // The CIFAR-100 panel (where to get it, the download) shows while CIFAR-100 is chosen and not found.
        let data_panel = cifar && (!self.data_check.1 || self.download.running);
        if let (Some(e), false) = (&self.folder_error, data_panel) {
            errors.insert(if cifar { "data" } else { "images" }, e.clone());
        }
        let idle = self.state == RunState::Idle;
        egui::Panel::left("train-form").resizable(false).exact_size(300.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                if data_panel {
                    self.data_ui(ui, worker);
                }
                let mut pick_folder = None;
                ui.add_enabled_ui(idle, |ui| form::form_ui(ui, &mut self.form, &errors, models, &mut pick_folder));
                if let (Some(target), None) = (pick_folder, &self.folder_pick) {
                    self.folder_error = None;
                    self.folder_pick = Some((Pending::folder(ui.ctx()), target));
                }
                ui.separator();
                self.controls(ui, worker, checked.ok());
                ui.separator();
                self.past_runs_ui(ui, worker, ok);
            });
        });
        // A folder of images the form names is previewed above the curves.
        let previewing = !cifar && self.images_check.1;
        if previewing {
            self.preview.request(worker, &images, &self.form.val_split, &self.form.seed);
        } else {
            self.preview.clear();
        }
        let overlays: Vec<_> = self.past.shown().collect();
        egui::CentralPanel::no_frame().show(ui, |ui| {
            if previewing {
                // Open until a run starts: then the curves want the room (it can be opened again).
                let collapse = std::mem::take(&mut self.preview.collapse).then_some(false);
                let height = ui.available_height() * 0.45;
                egui::CollapsingHeader::new(self.preview.headline())
                    .id_salt("data-preview")
                    .default_open(true)
                    .open(collapse)
                    .show(ui, |ui| {
                        egui::ScrollArea::vertical().id_salt("preview-scroll").max_height(height).show(ui, |ui| {
                            self.preview.ui(ui, worker);
                        });
                    });
                ui.separator();
            }
            plots::curves(ui, &self.run, &overlays)
        });
    }

    fn controls(&mut self, ui: &mut egui::Ui, worker: &Worker, cfg: Option<TrainConfig>) {
        ui.horizontal(|ui| {
            let can_start = self.state == RunState::Idle && cfg.is_some();
            let start = ui.add_enabled(can_start, egui::Button::new("Start"));
            if start.clicked() {
                if let Some(cfg) = cfg {
                    self.run = RunView { message: "starting…".into(), ..Default::default() };
                    // The run reads the folder itself; the preview's panel makes room for the curves.
                    self.preview.cancel();
                    self.preview.collapse = self.form.source == DataSource::Images;
                    self.state = RunState::Running;
                    // Reset the shared switches here, before the request: a Stop clicked while the request
                    // waits in the worker's queue is then honoured, not erased.
                    worker.train_control.clear_stop();
                    worker.train_control.resume();
                    worker.send(Command::StartTraining(Box::new(cfg)));
                }
            }
            match self.state {
                RunState::Running => {
                    if ui.button("Pause").clicked() {
                        worker.train_control.pause();
                    }
                }
                RunState::Paused => {
                    if ui.button("Resume").clicked() {
                        worker.train_control.resume();
                    }
                }
                RunState::Idle => {}
            }
            if ui.add_enabled(self.state != RunState::Idle, egui::Button::new("Stop")).clicked() {
                worker.train_control.stop();
                worker.train_control.resume();
            }
        });
        let r = &self.run;
        if self.state != RunState::Idle && r.steps_per_epoch > 0 {
            let epochs = r.epochs_total.max(1);
            let done = ((r.epoch.max(1) - 1) * r.steps_per_epoch + r.step) as f32 / (epochs * r.steps_per_epoch) as f32;
            ui.add(egui::ProgressBar::new(done).show_percentage());
            ui.label(format!(
                "epoch {}/{epochs} · step {}/{} · {:.0} img/s · ETA {}",
                r.epoch,
                r.step,
                r.steps_per_epoch,
                r.img_per_s,
                hms(r.eta_s)
            ));
        }
        if !r.message.is_empty() {
            let color = if r.message.starts_with("failed") {
                Color32::from_rgb(220, 80, 60)
            } else {
                ui.visuals().text_color()
            };
            ui.colored_label(color, &r.message);
        }
    }
}
