//! Train tab: the run's form (checked field by field), start / pause / resume / stop, live curves, progress.

use super::dialog::Pending;
use super::worker::{Command, Worker};
use crate::data::Augment;
use crate::model::arch::{ModelConfig, Variant};
use crate::train::optim::SgdConfig;
use crate::train::{hms, EpochRecord, History, Schedule, SelectBy, TrainConfig, TrainEvent};
use egui::{Color32, RichText};
use egui_plot::{Legend, Line, Plot, PlotPoints};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScheduleKind {
    MultiStep,
    Cosine,
    Constant,
}

/// The form as the user typed it (kept as text so that a bad value can be shown at its field).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub variant: Variant,
    pub width: String,
    pub si: usize,
    pub epochs: String,
    pub batch: String,
    pub lr: String,
    pub schedule: ScheduleKind,
    pub milestones: String,
    pub gamma: String,
    pub warmup: String,
    pub weight_decay: String,
    pub label_smoothing: String,
    pub nesterov: bool,
    pub crop: bool,
    pub flip: bool,
    pub data_dir: String,
    pub device: String,
    pub limit_train: String,
    pub seed: String,
}

impl Default for TrainForm {
    fn default() -> Self {
        TrainForm {
            variant: Variant::Small,
            width: "0.25".into(),
            si: 1,
            epochs: "20".into(),
            batch: "128".into(),
            lr: "0.1".into(),
            schedule: ScheduleKind::MultiStep,
            milestones: "15,20,30".into(),
            gamma: "0.1".into(),
            warmup: "1".into(),
            weight_decay: "0".into(),
            label_smoothing: "0".into(),
            nesterov: false,
            crop: true,
            flip: true,
            data_dir: default_data_dir(),
            device: "cpu".into(),
            limit_train: String::new(),
            seed: "0".into(),
        }
    }
}

fn default_data_dir() -> String {
    crate::data::default_dirs()
        .into_iter()
        .find(|d| crate::train::has_dataset(d))
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

impl TrainForm {
    /// The config, or the problems keyed by field name.
    /// `has_data` says whether a folder holds CIFAR-100 (the caller caches it: it touches the file system).
    pub fn to_config(
        &self,
        out_dir: &Path,
        has_data: impl Fn(&Path) -> bool,
    ) -> Result<TrainConfig, HashMap<&'static str, String>> {
        let mut errs = HashMap::new();
        fn num<T: std::str::FromStr>(
            errs: &mut HashMap<&'static str, String>,
            field: &'static str,
            s: &str,
        ) -> Option<T> {
            match s.trim().parse::<T>() {
                Ok(v) => Some(v),
                Err(_) => {
                    errs.insert(field, format!("not a number: {s:?}"));
                    None
                }
            }
        }
        let width = num::<f64>(&mut errs, "width", &self.width);
        let epochs = num::<usize>(&mut errs, "epochs", &self.epochs);
        let batch = num::<usize>(&mut errs, "batch", &self.batch);
        let lr = num::<f64>(&mut errs, "lr", &self.lr);
        let wd = num::<f64>(&mut errs, "weight_decay", &self.weight_decay);
        let ls = num::<f64>(&mut errs, "label_smoothing", &self.label_smoothing);
        let seed = num::<u64>(&mut errs, "seed", &self.seed);
        let limit = if self.limit_train.trim().is_empty() {
            Some(None)
        } else {
            num::<usize>(&mut errs, "limit_train", &self.limit_train).map(Some)
        };
        let schedule = match self.schedule {
            ScheduleKind::MultiStep => {
                let ms: Result<Vec<usize>, _> =
                    self.milestones.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse()).collect();
                let gamma = num::<f64>(&mut errs, "gamma", &self.gamma);
                match (ms, gamma) {
                    (Ok(milestones), Some(gamma)) => Some(Schedule::MultiStep { milestones, gamma }),
                    (Err(_), _) => {
                        errs.insert("milestones", "epochs separated by commas, e.g. 15,20,30".into());
                        None
                    }
                    _ => None,
                }
            }
            ScheduleKind::Cosine => {
                num::<usize>(&mut errs, "warmup", &self.warmup).map(|w| Schedule::Cosine { warmup_epochs: w })
            }
            ScheduleKind::Constant => Some(Schedule::Constant),
        };
        if self.data_dir.trim().is_empty() {
            errs.insert("data", "choose the CIFAR-100 folder".into());
        } else if !has_data(Path::new(self.data_dir.trim())) {
            errs.insert("data", "no CIFAR-100 here (binary, python or .tar.gz)".into());
        }
        let (
            Some(width),
            Some(epochs),
            Some(batch),
            Some(lr),
            Some(wd),
            Some(ls),
            Some(seed),
            Some(limit),
            Some(schedule),
        ) = (width, epochs, batch, lr, wd, ls, seed, limit, schedule)
        else {
            return Err(errs);
        };
        let cfg = TrainConfig {
            model: ModelConfig::new(self.variant, width).with_initial_stride(self.si),
            epochs,
            batch_size: batch,
            sgd: SgdConfig { lr, momentum: 0.9, weight_decay: wd, nesterov: self.nesterov },
            schedule,
            label_smoothing: ls,
            augment: Augment { crop: self.crop, flip: self.flip },
            seed,
            data_dir: Some(PathBuf::from(self.data_dir.trim())),
            device: self.device.clone(),
            limit_train: limit,
            limit_test: None,
            out_dir: out_dir.to_path_buf(),
            select_by: SelectBy::ValLoss,
            init: crate::model::params::Init::default(),
        };
        for (field, msg) in cfg.problems() {
            let field = if field == "model" { "width" } else { field };
            errs.entry(field).or_insert(msg);
        }
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(errs)
        }
    }
}

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
}

pub struct TrainTab {
    pub form: TrainForm,
    pub state: RunState,
    pub run: RunView,
    /// Past runs found in trained_models/ and whether each is overlaid.
    pub past: Vec<(History, bool)>,
    /// History files of that folder that could not be listed, each with why.
    pub past_problems: Vec<String>,
    /// Past runs whose history says "running" and whose lock a live process holds (this app or a `train`
    /// command); the others that say "running" were interrupted.
    pub past_training: Vec<String>,
    pub out_dir: PathBuf,
    /// The last data folder checked and whether it holds CIFAR-100 (checked when the field changes only).
    data_check: (String, bool),
    /// Where the data set is downloaded to, and from where (URL, expected MD5).
    pub data_home: PathBuf,
    pub data_source: (String, Option<String>),
    pub download: DownloadState,
    /// A folder dialog that is open (the data set folder).
    folder_pick: Option<Pending>,
    /// Why the folder picker could not be shown, shown where it was asked for.
    pub folder_error: Option<String>,
    /// Where curves and histories are exported, and what the last export said.
    pub export_dir: PathBuf,
    pub export_message: Option<String>,
}

/// The data set download, as the tab shows it.
#[derive(Default)]
pub struct DownloadState {
    pub running: bool,
    pub done: u64,
    pub total: Option<u64>,
    /// When the transfer started and the bytes it started from (a resumed one starts past 0), for speed and ETA.
    started: Option<(std::time::Instant, u64)>,
    /// The last outcome: Ok(message) or Err(message).
    pub outcome: Option<Result<String, String>>,
}

impl TrainTab {
    pub fn new(form: TrainForm, out_dir: PathBuf, data_home: PathBuf, export_dir: PathBuf) -> Self {
        let mut t = TrainTab {
            form,
            state: RunState::Idle,
            run: RunView::default(),
            past: Vec::new(),
            past_problems: Vec::new(),
            past_training: Vec::new(),
            out_dir,
            data_check: (String::from("\u{0}"), false),
            data_home,
            data_source: crate::data::download::cifar100_source(),
            download: DownloadState::default(),
            folder_pick: None,
            folder_error: None,
            export_dir,
            export_message: None,
        };
        if t.form.data_dir.trim().is_empty() && crate::train::has_dataset(&t.data_home) {
            t.form.data_dir = t.data_home.display().to_string();
        }
        t.scan_past_runs();
        t
    }

    pub fn scan_past_runs(&mut self) {
        let mut v = Vec::new();
        let mut problems = Vec::new();
        match std::fs::read_dir(&self.out_dir) {
            Ok(rd) => {
                let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
                files.sort();
                for f in files {
                    if !f.to_string_lossy().ends_with(".history.json") {
                        continue;
                    }
                    match History::load(&f) {
                        // The name becomes file names (exports, the resume state): a plain one only.
                        Ok(h) if !crate::train::runfiles::is_plain_name(&h.name) => problems.push(format!(
                            "{}: the run name {:?} is not a plain file name",
                            f.display(),
                            h.name
                        )),
                        Ok(h) => {
                            let shown = self.past.iter().any(|(p, on)| *on && p.name == h.name);
                            v.push((h, shown));
                        }
                        Err(e) => problems.push(format!("{e:#}")),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("{}: {e}", self.out_dir.display())),
        }
        self.past_problems = problems;
        self.past_training = v
            .iter()
            .filter(|(h, _)| h.status == crate::train::Status::Running)
            .filter(|(h, _)| crate::train::runfiles::is_training(&self.out_dir, &h.name))
            .map(|(h, _)| h.name.clone())
            .collect();
        // On first look, overlay the most recent run so the curves are not empty.
        if self.past.is_empty() && self.state == RunState::Idle {
            if let Some(newest) = v.iter_mut().max_by_key(|(h, _)| h.started_unix) {
                newest.1 = true;
            }
        }
        self.past = v;
    }

    pub fn on_event(&mut self, ev: TrainEvent) {
        match ev {
            TrainEvent::Started { name, steps_per_epoch, device, .. } => {
                self.run = RunView { name, steps_per_epoch, device, message: "training".into(), ..Default::default() };
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
                self.scan_past_runs();
            }
            TrainEvent::Finished { history } => {
                self.state = RunState::Idle;
                self.run.message = match history.best() {
                    Some(b) => format!("finished: best top-1 {:.2}% (epoch {})", b.top1 * 100.0, b.epoch),
                    None => "finished".into(),
                };
                self.scan_past_runs();
            }
            TrainEvent::Failed { message } => {
                self.state = RunState::Idle;
                self.run.message = format!("failed: {message}");
            }
        }
    }

    /// The training thread has ended (normally or not): the tab is idle again whatever was missed.
    pub fn on_ended(&mut self) {
        if self.state != RunState::Idle {
            self.state = RunState::Idle;
            if self.run.message.is_empty() || self.run.message == "training" {
                self.run.message = "the run ended".into();
            }
        }
    }

    pub fn on_download_progress(&mut self, done: u64, total: Option<u64>) {
        let d = &mut self.download;
        if d.started.is_none() {
            d.started = Some((std::time::Instant::now(), done));
        }
        d.done = done;
        d.total = total;
    }

    pub fn on_download_done(&mut self, result: Result<PathBuf, String>) {
        self.download.running = false;
        self.download.started = None;
        self.download.outcome = Some(match result {
            Ok(archive) => {
                let folder = archive.parent().map(Path::to_path_buf).unwrap_or_default();
                self.form.data_dir = folder.display().to_string();
                Ok(format!("CIFAR-100 is ready in {}", folder.display()))
            }
            Err(e) => Err(e),
        });
    }

    fn start_download(&mut self, worker: &Worker) {
        worker.download_cancel.store(false, std::sync::atomic::Ordering::SeqCst);
        let (url, md5) = self.data_source.clone();
        worker.send(Command::DownloadData { url, md5, dir: self.data_home.clone() });
        self.download = DownloadState { running: true, ..Default::default() };
    }

    /// What the tab offers while no data set is found: download it, or point at a folder that has it.
    fn data_ui(&mut self, ui: &mut egui::Ui, worker: &Worker) {
        ui.group(|ui| {
            ui.label(RichText::new("CIFAR-100 is needed to train").strong());
            let d = &self.download;
            if d.running {
                let fraction = d.total.map(|t| d.done as f32 / t.max(1) as f32).unwrap_or(0.0);
                ui.add(egui::ProgressBar::new(fraction).show_percentage());
                ui.label(download_line(d));
                if ui.button("Cancel").clicked() {
                    worker.download_cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            } else {
                if ui
                    .button("Download CIFAR-100 (about 160 MiB)")
                    .on_hover_text(format!("{}\nMD5-checked; an interrupted download continues", self.data_source.0))
                    .clicked()
                {
                    self.start_download(worker);
                }
                let picking = self.folder_pick.is_some();
                if ui.add_enabled(!picking, egui::Button::new("Use a folder I already have…")).clicked() {
                    self.folder_error = None;
                    self.folder_pick = Some(Pending::folder(ui.ctx()));
                }
                if let Some(e) = &self.folder_error {
                    ui.colored_label(Color32::from_rgb(220, 80, 60), e);
                }
                ui.label(RichText::new(format!("into {}", self.data_home.display())).small().weak());
            }
            match &self.download.outcome {
                Some(Err(e)) => {
                    ui.colored_label(Color32::from_rgb(220, 80, 60), e);
                }
                Some(Ok(m)) => {
                    ui.label(m);
                }
                None => {}
            }
        });
    }

    /// The data folder the form names, when it holds CIFAR-100 (checked again only when the field changes).
    pub fn data_folder(&mut self) -> Option<PathBuf> {
        let dir = self.form.data_dir.trim().to_string();
        if self.data_check.0 != dir {
            self.data_check = (dir.clone(), crate::train::has_dataset(Path::new(&dir)));
        }
        self.data_check.1.then(|| PathBuf::from(dir))
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, worker: &Worker) {
        if let Some(answer) = self.folder_pick.as_ref().and_then(Pending::poll) {
            self.folder_pick = None;
            match answer.map(|d| d.into_iter().next()) {
                Ok(Some(d)) => self.form.data_dir = d.display().to_string(),
                Ok(None) => {}
                Err(e) => self.folder_error = Some(e),
            }
        }
        let dir = self.form.data_dir.trim().to_string();
        if self.data_check.0 != dir {
            self.data_check = (dir.clone(), crate::train::has_dataset(Path::new(&dir)));
        }
        let ok = self.data_check.1;
        let checked = self.form.to_config(&self.out_dir, |_| ok);
        let mut errors = checked.as_ref().err().cloned().unwrap_or_default();
        let data_panel = !ok || self.download.running;
        if let (Some(e), false) = (&self.folder_error, data_panel) {
            errors.insert("data", e.clone());
        }
        let idle = self.state == RunState::Idle;
        egui::Panel::left("train-form").resizable(false).exact_size(300.0).show(ui, |ui| {
            egui::ScrollArea::vertical().show(ui, |ui| {
                if data_panel {
                    self.data_ui(ui, worker);
                }
                let mut pick_folder = false;
                ui.add_enabled_ui(idle, |ui| form_ui(ui, &mut self.form, &errors, &mut pick_folder));
                if pick_folder && self.folder_pick.is_none() {
                    self.folder_error = None;
                    self.folder_pick = Some(Pending::folder(ui.ctx()));
                }
                ui.separator();
                self.controls(ui, worker, checked.ok());
                ui.separator();
                self.past_runs_ui(ui, worker, ok);
            });
        });
        egui::CentralPanel::no_frame().show(ui, |ui| self.curves(ui));
    }

    fn controls(&mut self, ui: &mut egui::Ui, worker: &Worker, cfg: Option<TrainConfig>) {
        ui.horizontal(|ui| {
            let can_start = self.state == RunState::Idle && cfg.is_some();
            let start = ui.add_enabled(can_start, egui::Button::new("Start"));
            if start.clicked() {
                if let Some(cfg) = cfg {
                    self.run = RunView { message: "starting…".into(), ..Default::default() };
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
            let epochs = self.form.epochs.trim().parse::<usize>().unwrap_or(1).max(1);
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

    /// Past runs, each with a checkbox to overlay its curves and, where a stopped or interrupted run left its
    /// resume state, a Continue button (the same engine as `train --resume`).
    fn past_runs_ui(&mut self, ui: &mut egui::Ui, worker: &Worker, data_ok: bool) {
        ui.horizontal(|ui| {
            ui.strong("Past runs");
            if ui.small_button("Rescan").on_hover_text("Rescan trained_models/").clicked() {
                self.scan_past_runs();
            }
        });
        if self.past.is_empty() && self.past_problems.is_empty() {
            ui.label(RichText::new("none yet").weak());
        }
        for p in &self.past_problems {
            ui.label(RichText::new(format!("not listed: {p}")).small().color(ui.visuals().warn_fg_color));
        }
        let idle = self.state == RunState::Idle;
        let mut resume = None;
        for (h, on) in &mut self.past {
            let best = h.best().map(|b| format!(" · top-1 {:.1}%", b.top1 * 100.0)).unwrap_or_default();
            let training = self.past_training.contains(&h.name);
            ui.horizontal(|ui| {
                ui.checkbox(on, format!("{}{best}", h.name)).on_hover_text(format!(
                    "{} of {} epochs, {}",
                    h.epochs.len(),
                    h.config.epochs,
                    run_status_text(&h.status, training)
                ));
                let state = crate::train::resume_path(&self.out_dir, &h.name);
                if h.status != crate::train::Status::Finished && state.is_file() {
                    let b = ui.add_enabled(idle && !training, egui::Button::new("Continue").small());
                    let b = if training {
                        b.on_disabled_hover_text("Another process is training this run now")
                    } else {
                        b.on_hover_text(format!("Continue from epoch {} of {}", h.epochs.len(), h.config.epochs))
                    };
                    if b.clicked() {
                        resume = Some((h.config.clone(), state));
                    }
                }
            });
        }
        let checked = self.past.iter().filter(|(_, on)| *on).count();
        let export = ui
            .add_enabled(checked > 0, egui::Button::new("Export checked runs").small())
            .on_hover_text("Each checked run's four curves as PNG and SVG, and its history as CSV, to exports/");
        if export.clicked() {
            self.export_message = Some(self.export_checked());
        }
        if let Some(m) = &self.export_message {
            ui.label(RichText::new(m).small());
        }
        if let Some((mut cfg, state)) = resume {
            cfg.out_dir = self.out_dir.clone();
            // The run's own data folder, while it exists; else the one the form names.
            if cfg.data_dir.as_ref().is_none_or(|d| !d.exists()) && data_ok {
                cfg.data_dir = Some(PathBuf::from(self.form.data_dir.trim()));
            }
            self.run = RunView { message: "continuing…".into(), ..Default::default() };
            self.state = RunState::Running;
            worker.train_control.clear_stop();
            worker.train_control.resume();
            worker.send(Command::ResumeTraining { cfg: Box::new(cfg), resume: state });
        }
    }

    /// Writes each checked past run's curves (PNG, SVG) and history (CSV) into the export folder.
    fn export_checked(&self) -> String {
        let mut written = Vec::new();
        for (h, _) in self.past.iter().filter(|(_, on)| *on) {
            let chart = crate::chart::training_curves(h);
            for ext in ["png", "svg"] {
                let path = self.export_dir.join(format!("{}.curves.{ext}", h.name));
                if let Err(e) = crate::chart::save(&chart, &path) {
                    return format!("could not save {e}");
                }
            }
            let csv = self.export_dir.join(format!("{}.history.csv", h.name));
            if let Err(e) = crate::fsutil::write_atomic(&csv, crate::chart::history_csv(h).as_bytes()) {
                return format!("could not save {}: {e}", csv.display());
            }
            written.push(h.name.clone());
        }
        format!("saved {} to {}", written.join(", "), self.export_dir.display())
    }

    fn curves(&self, ui: &mut egui::Ui) {
        let h = ((ui.available_height() - 40.0) / 2.0).max(120.0);
        let w = ((ui.available_width() - 16.0) / 2.0).max(200.0);
        let overlays: Vec<&History> = self.past.iter().filter(|(_, on)| *on).map(|(h, _)| h).collect();
        let epoch_line = |name: String, recs: &[EpochRecord], f: &dyn Fn(&EpochRecord) -> f64| {
            Line::new(name, PlotPoints::from(recs.iter().map(|r| [r.epoch as f64, f(r)]).collect::<Vec<_>>()))
        };
        egui::Grid::new("curves").num_columns(2).spacing([16.0, 8.0]).show(ui, |ui| {
            ui.vertical(|ui| {
                ui.strong("Training loss per step");
                Plot::new("step-loss").height(h).width(w).legend(Legend::default()).x_axis_label("epoch").show(
                    ui,
                    |p| {
                        p.line(
                            Line::new("loss", PlotPoints::from(self.run.step_loss.clone()))
                                .color(Color32::from_gray(150)),
                        );
                        p.line(Line::new("smoothed", PlotPoints::from(self.run.smoothed.clone())).width(2.0));
                        for o in &overlays {
                            p.line(Line::new(format!("{} (smoothed)", o.name), PlotPoints::from(smoothed_steps(o))));
                        }
                    },
                );
            });
            ui.vertical(|ui| {
                ui.strong("Loss per epoch");
                Plot::new("epoch-loss").height(h).width(w).legend(Legend::default()).x_axis_label("epoch").show(
                    ui,
                    |p| {
                        p.line(epoch_line("train".into(), &self.run.epochs, &|r| r.train_loss));
                        p.line(epoch_line("validation".into(), &self.run.epochs, &|r| r.val_loss));
                        for o in &overlays {
                            p.line(epoch_line(format!("{} validation", o.name), &o.epochs, &|r| r.val_loss));
                        }
                    },
                );
            });
            ui.end_row();
            ui.vertical(|ui| {
                ui.strong("Test accuracy per epoch (%)");
                // The highest point shown, so that the top of the curves is never cut off.
                let top = self
                    .run
                    .epochs
                    .iter()
                    .map(|r| r.top5)
                    .chain(overlays.iter().flat_map(|o| o.epochs.iter().map(|r| r.top1)))
                    .fold(0.0f64, f64::max)
                    * 100.0;
                Plot::new("accuracy")
                    .height(h)
                    .width(w)
                    .legend(Legend::default())
                    .x_axis_label("epoch")
                    .include_y((top + 3.0).min(101.0))
                    .show(ui, |p| {
                        p.line(epoch_line("top-1".into(), &self.run.epochs, &|r| r.top1 * 100.0));
                        p.line(epoch_line("top-5".into(), &self.run.epochs, &|r| r.top5 * 100.0));
                        for o in &overlays {
                            p.line(epoch_line(format!("{} top-1", o.name), &o.epochs, &|r| r.top1 * 100.0));
                        }
                    });
            });
            ui.vertical(|ui| {
                ui.strong("Learning rate");
                Plot::new("lr").height(h).width(w).x_axis_label("epoch").show(ui, |p| {
                    p.line(Line::new("lr", PlotPoints::from(self.run.lr.clone())));
                    for o in &overlays {
                        let pts: Vec<[f64; 2]> = o.epochs.iter().map(|r| [r.epoch as f64 - 1.0, r.lr]).collect();
                        p.line(Line::new(o.name.clone(), PlotPoints::from(pts)));
                    }
                });
            });
            ui.end_row();
        });
    }
}

/// A past run's status as the list shows it: a history left "running" by a process that ended (killed, the
/// machine shut down) was interrupted, which is what its Continue button is for.
fn run_status_text(status: &crate::train::Status, training: bool) -> String {
    match status {
        crate::train::Status::Running if training => "training now".into(),
        crate::train::Status::Running => "interrupted".into(),
        other => other.to_string(),
    }
}

/// A past run's per-step losses, smoothed, against epochs (the x axis of the live curve).
fn smoothed_steps(h: &History) -> Vec<[f64; 2]> {
    let steps_per_epoch = (h.step_losses.len() / h.epochs.len().max(1)).max(1) as f64;
    let mut ema = None;
    h.step_losses
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let v = match ema {
                Some(e) => 0.95 * e + 0.05 * *l as f64,
                None => *l as f64,
            };
            ema = Some(v);
            [(i + 1) as f64 / steps_per_epoch, v]
        })
        .collect()
}

/// "12.3 / 161.1 MiB · 4.2 MiB/s · 0:35 left" for a download in progress.
fn download_line(d: &DownloadState) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let done = d.done as f64 / MIB;
    let mut s = match d.total {
        Some(t) => format!("{done:.1} / {:.1} MiB", t as f64 / MIB),
        None => format!("{done:.1} MiB"),
    };
    if let Some((t0, from)) = d.started {
        let secs = t0.elapsed().as_secs_f64();
        let rate = d.done.saturating_sub(from) as f64 / secs.max(1e-3);
        if secs > 0.5 && rate > 0.0 {
            s.push_str(&format!(" · {:.1} MiB/s", rate / MIB));
            if let Some(t) = d.total {
                s.push_str(&format!(" · {} left", hms(t.saturating_sub(d.done) as f64 / rate)));
            }
        }
    }
    s
}

/// One labelled form row with its error, if any, below it.
fn field(
    ui: &mut egui::Ui,
    label: &str,
    errors: &HashMap<&'static str, String>,
    key: &str,
    add: impl FnOnce(&mut egui::Ui) -> egui::Response,
) {
    ui.horizontal(|ui| {
        let l = ui.add_sized([110.0, 18.0], egui::Label::new(label));
        let r = add(ui);
        r.labelled_by(l.id);
    });
    if let Some(e) = errors.get(key) {
        ui.colored_label(Color32::from_rgb(220, 80, 60), format!("  {e}"));
    }
}

fn text(ui: &mut egui::Ui, value: &mut String) -> egui::Response {
    ui.add(egui::TextEdit::singleline(value).desired_width(140.0))
}

/// The form's fields; `pick_folder` is set when the data set folder's "…" button is clicked.
fn form_ui(ui: &mut egui::Ui, f: &mut TrainForm, errors: &HashMap<&'static str, String>, pick_folder: &mut bool) {
    ui.strong("Model");
    field(ui, "Variant", errors, "variant", |ui| {
        egui::ComboBox::from_id_salt("variant")
            .selected_text(f.variant.name())
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut f.variant, Variant::Small, "small");
                ui.selectable_value(&mut f.variant, Variant::Large, "large");
            })
            .response
    });
    field(ui, "Width", errors, "width", |ui| text(ui, &mut f.width));
    field(ui, "Initial stride", errors, "si", |ui| {
        egui::ComboBox::from_id_salt("si")
            .selected_text(if f.si == 1 { "1 (CIFAR)" } else { "2 (paper)" })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut f.si, 1, "1 (CIFAR)");
                ui.selectable_value(&mut f.si, 2, "2 (paper)");
            })
            .response
    });
    ui.strong("Recipe");
    field(ui, "Epochs", errors, "epochs", |ui| text(ui, &mut f.epochs));
    field(ui, "Batch size", errors, "batch", |ui| text(ui, &mut f.batch));
    field(ui, "Learning rate", errors, "lr", |ui| text(ui, &mut f.lr));
    field(ui, "Schedule", errors, "schedule", |ui| {
        egui::ComboBox::from_id_salt("schedule")
            .selected_text(match f.schedule {
                ScheduleKind::MultiStep => "multi-step",
                ScheduleKind::Cosine => "cosine + warm-up",
                ScheduleKind::Constant => "constant",
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut f.schedule, ScheduleKind::MultiStep, "multi-step");
                ui.selectable_value(&mut f.schedule, ScheduleKind::Cosine, "cosine + warm-up");
                ui.selectable_value(&mut f.schedule, ScheduleKind::Constant, "constant");
            })
            .response
    });
    match f.schedule {
        ScheduleKind::MultiStep => {
            field(ui, "Milestones", errors, "milestones", |ui| text(ui, &mut f.milestones));
            field(ui, "Gamma", errors, "gamma", |ui| text(ui, &mut f.gamma));
        }
        ScheduleKind::Cosine => field(ui, "Warm-up epochs", errors, "warmup", |ui| text(ui, &mut f.warmup)),
        ScheduleKind::Constant => {}
    }
    field(ui, "Weight decay", errors, "weight_decay", |ui| text(ui, &mut f.weight_decay));
    field(ui, "Label smoothing", errors, "label_smoothing", |ui| text(ui, &mut f.label_smoothing));
    ui.checkbox(&mut f.nesterov, "Nesterov momentum");
    ui.checkbox(&mut f.crop, "Random crop (pad 4)");
    ui.checkbox(&mut f.flip, "Random horizontal flip");
    ui.strong("Data and device");
    field(ui, "Dataset folder", errors, "data", |ui| {
        let r = ui.add(egui::TextEdit::singleline(&mut f.data_dir).desired_width(100.0));
        if ui.button("…").on_hover_text("Choose the CIFAR-100 folder").clicked() {
            *pick_folder = true;
        }
        r
    });
    field(ui, "Train images", errors, "limit_train", |ui| {
        ui.add(egui::TextEdit::singleline(&mut f.limit_train).hint_text("all").desired_width(140.0))
    });
    // A cuda choice kept from an earlier session falls back to the CPU where CUDA does not open here.
    if f.device == "cuda" && matches!(crate::device::cuda_if_probed(), Some(Err(_))) {
        f.device = "cpu".to_string();
    }
    field(ui, "Device", errors, "device", |ui| {
        egui::ComboBox::from_id_salt("device")
            .selected_text(&f.device)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut f.device, "cpu".to_string(), "cpu");
                let cuda = crate::device::cuda_if_probed();
                ui.add_enabled_ui(matches!(cuda, Some(Ok(()))), |ui| {
                    ui.selectable_value(&mut f.device, "cuda".to_string(), "cuda")
                        .on_disabled_hover_text(super::latency_tab::cuda_unavailable_text(&cuda));
                });
            })
            .response
    });
    field(ui, "Seed", errors, "seed", |ui| text(ui, &mut f.seed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::{ModelConfig, Variant};
    use crate::train::{History, Status, TrainConfig};

    fn history(name: &str) -> History {
        History {
            name: name.into(),
            config: TrainConfig::reference(ModelConfig::new(Variant::Small, 0.25)),
            device: "cpu".into(),
            started_unix: 1,
            epochs: Vec::new(),
            step_losses: Vec::new(),
            best_epoch: None,
            checkpoint: None,
            status: Status::Stopped,
        }
    }

    #[test]
    fn past_runs_list_readable_histories_and_say_which_files_were_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let write = |file: &str, h: &History| {
            std::fs::write(dir.path().join(file), serde_json::to_vec(h).unwrap()).unwrap();
        };
        write("good.history.json", &history("good"));
        // A name that would send exports out of the export folder; a renamed file is still listed.
        write("escape.history.json", &history("../../escape"));
        write("renamed.history.json", &history("other"));
        std::fs::write(dir.path().join("cut.history.json"), b"{\"name\": \"cut\", \"conf").unwrap();
        let t = TrainTab::new(TrainForm::default(), dir.path().into(), dir.path().join("data"), dir.path().join("ex"));
        let names: Vec<&str> = t.past.iter().map(|(h, _)| h.name.as_str()).collect();
        assert_eq!(names, ["good", "other"]);
        assert_eq!(t.past_problems.len(), 2, "{:?}", t.past_problems);
        for file in ["cut.history.json", "escape.history.json"] {
            assert!(t.past_problems.iter().any(|p| p.contains(file)), "{file}: {:?}", t.past_problems);
        }
    }

    #[test]
    fn a_run_left_running_by_a_process_that_ended_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["live", "dead"] {
            let h = History { status: Status::Running, ..history(name) };
            std::fs::write(dir.path().join(format!("{name}.history.json")), serde_json::to_vec(&h).unwrap()).unwrap();
        }
        let _held = crate::train::runfiles::RunLock::acquire(dir.path(), "live").unwrap();
        // The dead run's process wrote its lock file and ended.
        drop(crate::train::runfiles::RunLock::acquire(dir.path(), "dead").unwrap());
        let t = TrainTab::new(TrainForm::default(), dir.path().into(), dir.path().join("data"), dir.path().join("ex"));
        assert_eq!(t.past_training, ["live"]);
        assert_eq!(run_status_text(&Status::Running, true), "training now");
        assert_eq!(run_status_text(&Status::Running, false), "interrupted");
        assert_eq!(run_status_text(&Status::Stopped, false), "stopped");
    }
}
