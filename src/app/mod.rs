//! MobileNetV3 Studio, the desktop app: a thin shell that owns the tab choice, the status line and drag and
//! drop, over one struct per tab. Model work happens on the background [`worker`].

// The tabs, the worker and the settings are the app's own: the library's users get [`run`] and [`Tab`].
pub(crate) mod classify_tab;
pub(crate) mod dialog;
pub(crate) mod evaluate_tab;
pub(crate) mod latency_tab;
pub(crate) mod settings_file;
#[cfg(test)]
mod tests;
pub(crate) mod train_tab;
pub(crate) mod worker;

pub use crate::paths::AppPaths;
use classify_tab::ClassifyTab;
use evaluate_tab::EvaluateTab;
use latency_tab::{LatencyForm, LatencyTab};
use serde::{Deserialize, Serialize};
use settings_file::SettingsFile;
use std::path::PathBuf;
use train_tab::{TrainForm, TrainTab};
use worker::{Command, Event, Worker};

pub(crate) const APP_TITLE: &str = "MobileNetV3 Studio";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    Train,
    Classify,
    Latency,
    Evaluate,
}

/// What survives a restart (saved by [`SettingsFile`]).
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Settings {
    pub tab: Option<Tab>,
    pub train: TrainForm,
    pub latency: LatencyForm,
    pub model: Option<PathBuf>,
    /// The batch-1 CPU medians last measured on this machine, by variant: after a restart the model pickers and
    /// the accuracy chart still show them, until the Latency tab measures again.
    pub batch1_cpu_ms: Vec<(String, f64)>,
}

pub(crate) struct StudioApp {
    pub tab: Tab,
    pub worker: Worker,
    pub train: TrainTab,
    pub classify: ClassifyTab,
    pub latency: LatencyTab,
    pub evaluate: EvaluateTab,
    /// Time of the slowest recent frame, for the status line (the UI must never wait on the model).
    pub frame_ms: f32,
    /// An error the worker reported outside any request.
    pub error: Option<String>,
    /// The window was asked to close while a run trains: the question is on screen.
    pub confirm_close: bool,
    /// Where the settings are saved (none in tests that build the app directly).
    settings_file: SettingsFile,
}

impl StudioApp {
    /// The app opened with image files or folders (from the command line or the desktop launcher): on Classify,
    /// with those classified instead of the sample photos.
    pub(crate) fn with_images(ctx: &egui::Context, paths: AppPaths, settings: Settings, images: &[PathBuf]) -> Self {
        let mut app = Self::build(ctx, paths, settings, !images.is_empty());
        if !images.is_empty() {
            app.tab = Tab::Classify;
            app.classify.add_paths(&app.worker, images);
        }
        app
    }

    /// The app on `settings`, with the sample photos shown (what the tests drive).
    #[cfg(test)]
    pub(crate) fn with_settings(ctx: &egui::Context, paths: AppPaths, settings: Settings) -> Self {
        Self::build(ctx, paths, settings, false)
    }

    fn build(ctx: &egui::Context, paths: AppPaths, settings: Settings, skip_samples: bool) -> Self {
        let repaint_ctx = ctx.clone();
        let worker = Worker::start(paths.model_dirs(), move || repaint_ctx.request_repaint());
        let mut classify = ClassifyTab::new(paths.exports.clone());
        if let Some(m) = settings.model.clone().filter(|m| m.is_file()) {
            classify.select_model(&worker, m);
        }
        worker.send(Command::RefreshModels);
        // Whether CUDA opens is asked once, off the UI thread (a CUDA context takes a while to create); the
        // device choices stay greyed out until the answer is in.
        let probe_ctx = ctx.clone();
        std::thread::spawn(move || {
            let _ = crate::device::cuda();
            probe_ctx.request_repaint();
        });
        // The bundled sample photos are shown at start, where there are any.
        if !skip_samples && paths.samples.is_dir() {
            classify.add_paths(&worker, std::slice::from_ref(&paths.samples));
        }
        StudioApp {
            tab: settings.tab.unwrap_or(Tab::Classify),
            train: TrainTab::new(settings.train, paths.models.clone(), paths.data.clone(), paths.exports.clone()),
            latency: LatencyTab::new(settings.latency, paths.exports.clone(), settings.batch1_cpu_ms),
            evaluate: EvaluateTab::new(paths.exports.clone()),
            classify,
            worker,
            frame_ms: 0.0,
            error: None,
            confirm_close: false,
            settings_file: SettingsFile::default(),
        }
    }

    pub fn settings(&self) -> Settings {
        Settings {
            tab: Some(self.tab),
            train: self.train.form.clone(),
            latency: self.latency.form.clone(),
            model: self.classify.selected.clone(),
            batch1_cpu_ms: self.latency.cpu_batch1_ms(),
        }
    }

    /// Applies everything the worker sent since the last frame.
    fn drain_events(&mut self, ctx: &egui::Context) {
        while let Ok(ev) = self.worker.rx.try_recv() {
            match ev {
                Event::Models { models, rejected } => self.classify.on_models(&self.worker, models, rejected),
                Event::ModelLoaded { path, name } => self.classify.on_model_loaded(&self.worker, path, name),
                Event::ModelFailed { path, error } => self.classify.on_model_failed(&self.worker, path, error),
                Event::Queued(files) => self.classify.on_queued(files),
                Event::Classified { id, model, outcome, thumbnail, cam } => {
                    self.classify.on_classified(ctx, id, model, outcome, thumbnail, cam)
                }
                Event::Explained { id, model, cam } => self.classify.on_explained(ctx, id, model, cam),
                Event::EvalExplained { index, cam } => self.evaluate.on_explained(ctx, index, cam),
                Event::LargeView { title, size, rgb } => self.classify.on_large_view(ctx, title, size, &rgb),
                Event::Train(e) => {
                    // A model trained on the user's own images is what they want Classify to use next.
                    if let crate::train::TrainEvent::Finished { history } = &e {
                        if let (Some(_), Some(model)) = (&history.config.images, &history.checkpoint) {
                            self.classify.select_model(&self.worker, model.clone());
                        }
                    }
                    self.train.on_event(e)
                }
                Event::TrainingEnded => self.train.on_ended(),
                Event::PreviewProgress { id, seen } => self.train.preview.on_progress(id, seen),
                Event::Previewed { id, outcome } => self.train.preview.on_done(id, outcome),
                Event::Error(e) => self.error = Some(e),
                Event::DownloadProgress { done, total } => self.train.on_download_progress(done, total),
                Event::EvalProgress { done, total } => self.evaluate.on_progress(done, total),
                Event::EvalDone(result) => self.evaluate.on_done(ctx, result),
                Event::DownloadDone(result) => self.train.on_download_done(result),
                Event::Exported(result) => self.classify.on_exported(result),
                Event::LatencyProgress { done, total, current } => self.latency.on_progress(done, total, current),
                Event::LatencyRow(r) => self.latency.on_row(r),
                Event::LatencyDone { cancelled, error } => self.latency.on_done(cancelled, error),
            }
        }
    }

    /// Closing the window while a run trains asks first: the run would stop (it can be continued later from
    /// its last finished epoch).
    fn guard_close(&mut self, ctx: &egui::Context) {
        let training = self.train.state != train_tab::RunState::Idle;
        if ctx.input(|i| i.viewport().close_requested()) && training && !self.confirm_close {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.confirm_close = true;
        }
        if !self.confirm_close {
            return;
        }
        if !training {
            self.confirm_close = false;
            return;
        }
        egui::Modal::new(egui::Id::unique("confirm-close")).show(ctx, |ui| {
            ui.heading("A run is training");
            ui.label(format!(
                "Closing stops {} after its current step. The best checkpoint is kept, and the run can be continued \
                 from its last finished epoch (Train tab, Past runs).",
                self.train.run.name
            ));
            ui.horizontal(|ui| {
                if ui.button("Stop the run and close").clicked() {
                    self.worker.train_control.stop();
                    self.train.state = train_tab::RunState::Idle;
                    self.confirm_close = false;
                    ctx.send_viewport_cmd(egui::ViewportCommand::Close);
                }
                if ui.button("Keep training").clicked() {
                    self.confirm_close = false;
                }
            });
        });
    }

    /// Files dropped anywhere on the window go to the Classify tab; one folder dropped on the Train tab (while no
    /// run trains) becomes the folder of images to train on.
    fn handle_drops(&mut self, ctx: &egui::Context) {
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw.dropped_files.iter().map(|f| f.path().to_path_buf()).filter(|p| !p.as_os_str().is_empty()).collect()
        });
        if !dropped.is_empty() && worker::verbose() {
            let names: Vec<String> = dropped.iter().map(|p| p.display().to_string()).collect();
            eprintln!("dropped on the {:?} tab: {}", self.tab, names.join(", "));
        }
        if let ([folder], true) = (&dropped[..], self.takes_a_training_folder()) {
            if folder.is_dir() {
                self.train.set_folder(train_tab::FolderFor::Images, folder);
                return;
            }
        }
        if !dropped.is_empty() {
            self.tab = Tab::Classify;
            self.classify.add_paths(&self.worker, &dropped);
        }
    }

    fn takes_a_training_folder(&self) -> bool {
        self.tab == Tab::Train && self.train.state == train_tab::RunState::Idle
    }

    fn drop_hint(&self, ctx: &egui::Context) {
        let hovering = ctx.input(|i| !i.raw.hovered_files.is_empty());
        if !hovering {
            return;
        }
        let screen = ctx.content_rect();
        let painter = ctx.layer_painter(egui::LayerId::new(egui::Order::Foreground, egui::Id::unique("drop-hint")));
        painter.rect_filled(screen, 0.0, egui::Color32::from_black_alpha(170));
        painter.text(
            screen.center(),
            egui::Align2::CENTER_CENTER,
            if self.takes_a_training_folder() {
                "Drop a folder of class folders to train on it"
            } else {
                "Drop images to classify them"
            },
            egui::FontId::proportional(28.0),
            egui::Color32::WHITE,
        );
    }

    fn status_line(&self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            // The device that is working: the training run's while one runs, else the CPU (classification and
            // the plan run there).
            let device = if self.train.state != train_tab::RunState::Idle && !self.train.run.device.is_empty() {
                self.train.run.device.clone()
            } else {
                "cpu".to_string()
            };
            ui.label(format!("device: {device}"));
            ui.separator();
            let model = match (&self.classify.loaded, &self.classify.selected, &self.classify.model_error) {
                (Some(n), _, _) => n.clone(),
                (None, Some(_), Some(_)) => "failed to load".into(),
                (None, Some(_), None) => "loading…".into(),
                (None, None, _) => "none".into(),
            };
            ui.label(format!("model: {model}"));
            ui.separator();
            let mut jobs = Vec::new();
            if self.train.state != train_tab::RunState::Idle {
                jobs.push(format!("training {}", self.train.run.name));
            }
            if self.latency.running {
                jobs.push("timing models".to_string());
            }
            let pending = self.classify.cards.iter().filter(|c| c.outcome.is_none()).count();
            if pending > 0 {
                jobs.push(format!("classifying {pending} image(s)"));
            }
            ui.label(if jobs.is_empty() { "idle".to_string() } else { jobs.join(", ") });
            if let Some(e) = &self.error {
                ui.separator();
                ui.colored_label(egui::Color32::from_rgb(220, 80, 60), e);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                ui.label(egui::RichText::new(format!("frame {:.1} ms", self.frame_ms)).weak().small());
            });
        });
    }
}

impl eframe::App for StudioApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let started = std::time::Instant::now();
        let ctx = ui.ctx().clone();
        self.drain_events(&ctx);
        self.handle_drops(&ctx);
        egui::Panel::top("tabs").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading(APP_TITLE);
                ui.add_space(16.0);
                for (tab, label) in [
                    (Tab::Train, "Train"),
                    (Tab::Classify, "Classify"),
                    (Tab::Evaluate, "Evaluate"),
                    (Tab::Latency, "Latency"),
                ] {
                    ui.selectable_value(&mut self.tab, tab, egui::RichText::new(label).size(16.0));
                }
            });
        });
        egui::Panel::bottom("status").show(ui, |ui| self.status_line(ui));
        egui::CentralPanel::default_margins().show(ui, |ui| match self.tab {
            Tab::Train => self.train.ui(ui, &self.worker, &self.classify.models),
            Tab::Classify => {
                self.classify.latency_ms = self.latency.cpu_batch1_ms();
                self.classify.ui(ui, &self.worker)
            }
            Tab::Latency => self.latency.ui(ui, &self.worker, &self.classify.models),
            Tab::Evaluate => {
                let data = self.train.data_folder();
                self.evaluate.ui(ui, &self.worker, &self.classify.models, data)
            }
        });
        self.drop_hint(&ctx);
        self.guard_close(&ctx);
        let ms = started.elapsed().as_secs_f32() * 1e3;
        self.frame_ms = if ms > self.frame_ms { ms } else { 0.9 * self.frame_ms + 0.1 * ms };
    }

    /// Called by eframe every 30 s and on exit; eframe's own storage keeps only the window's state.
    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if let Err(e) = self.settings_file.save_to(&self.settings(), storage) {
            self.error = Some(e);
        }
    }
}

/// Opens the app window; returns when it is closed.
pub fn run(paths: AppPaths, tab: Option<Tab>, images: Vec<PathBuf>) -> Result<(), eframe::Error> {
    let icon = eframe::icon_data::from_png_bytes(include_bytes!("../../assets/icon.png")).ok();
    let mut viewport = egui::ViewportBuilder::default()
        .with_title(APP_TITLE)
        .with_app_id("mobilenetv3-studio")
        .with_inner_size([1200.0, 780.0])
        .with_min_inner_size([800.0, 560.0])
        .with_drag_and_drop(true);
    if let Some(icon) = icon {
        viewport = viewport.with_icon(icon);
    }
    let window_state = crate::paths::window_state_file();
    if let Some(file) = &window_state {
        adopt_old_settings(file);
    }
    let options = eframe::NativeOptions { viewport, persistence_path: window_state, ..Default::default() };
    eframe::run_native(
        APP_TITLE,
        options,
        Box::new(move |cc| {
            let mut file = SettingsFile::new(crate::paths::settings_file());
            let (settings, problem) = file.load_from(cc.storage);
            let mut app = StudioApp::with_images(&cc.egui_ctx, paths, settings, &images);
            app.settings_file = file;
            app.error = problem;
            if let Some(t) = tab {
                app.tab = t;
            }
            Ok(Box::new(app))
        }),
    )
}

/// Settings were kept in the data folder (`app.ron`, eframe's default) before they moved to the config folder:
/// carry them over once (into eframe's file, where [`SettingsFile::load`] finds them as the legacy settings),
/// so that an update keeps the user's choices.
fn adopt_old_settings(file: &std::path::Path) {
    let Some(old) = crate::paths::user_dir().map(|d| d.join("app.ron")) else { return };
    if !file.exists() && old.is_file() {
        if let Ok(bytes) = std::fs::read(&old) {
            let _ = file.parent().map(std::fs::create_dir_all);
            let _ = crate::fsutil::write_atomic(file, &bytes);
        }
    }
}
