//! Past runs: the histories in the models folder, read on a background thread (a folder of many long runs
//! takes a while to parse), listed with a checkbox that overlays each one's curves, a Continue button where a
//! run left its resume state, and the export of the checked ones.

use super::super::worker::{Command, Worker};
use super::{RunState, RunView, TrainTab};
use crate::train::{History, Status};
use egui::RichText;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};

/// What one look at the folder found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Readable histories, by file name.
    pub runs: Vec<History>,
    /// History files that could not be listed, each with why.
    pub problems: Vec<String>,
    /// Runs whose history says "running" and whose lock a live process holds (this app or a `train` command);
    /// the others that say "running" were interrupted.
    pub training: Vec<String>,
    /// Unfinished runs that left their resume state (each can be continued).
    pub resumable: Vec<String>,
}

/// Reads every `*.history.json` in `out_dir` (a missing folder is no runs).
pub(crate) fn scan(out_dir: &Path) -> Scan {
    let mut found = Scan::default();
    match std::fs::read_dir(out_dir) {
        Ok(rd) => {
            let mut files: Vec<PathBuf> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort();
            for f in files.iter().filter(|f| f.to_string_lossy().ends_with(".history.json")) {
                match History::load(f) {
                    // The name becomes file names (exports, the resume state): a plain one only.
                    Ok(h) if !crate::train::runfiles::is_plain_name(&h.name) => found.problems.push(format!(
                        "{}: the run name {:?} is not a plain file name",
                        f.display(),
                        h.name
                    )),
                    Ok(h) => found.runs.push(h),
                    Err(e) => found.problems.push(format!("{e:#}")),
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => found.problems.push(format!("{}: {e}", out_dir.display())),
    }
    found.training = found
        .runs
        .iter()
        .filter(|h| h.status == Status::Running && crate::train::runfiles::is_training(out_dir, &h.name))
        .map(|h| h.name.clone())
        .collect();
    found.resumable = found
        .runs
        .iter()
        .filter(|h| h.status != Status::Finished && crate::train::resume_path(out_dir, &h.name).is_file())
        .map(|h| h.name.clone())
        .collect();
    found
}

/// The list as the tab shows it, and the scan that will replace it.
#[derive(Default)]
pub struct PastRuns {
    /// Each run and whether its curves are overlaid.
    pub list: Vec<(History, bool)>,
    pub problems: Vec<String>,
    pub training: Vec<String>,
    pub resumable: Vec<String>,
    /// A scan has been asked for and not started yet (it starts on the next frame, which has a context to wake).
    wanted: bool,
    /// A scan on its way.
    pending: Option<Receiver<Scan>>,
    /// Whether any scan has arrived (the first one overlays the newest run).
    arrived: bool,
}

impl PastRuns {
    /// Asks for the folder to be read again.
    pub(crate) fn rescan(&mut self) {
        self.wanted = true;
    }

    /// Whether a scan is asked for or on its way.
    pub(crate) fn scanning(&self) -> bool {
        self.wanted || self.pending.is_some()
    }

    /// Starts an asked-for scan on a background thread that wakes `ctx` when done; takes a finished one in.
    /// `idle`: no run is training (only then is the newest past run overlaid on first look).
    pub(crate) fn poll(&mut self, ctx: &egui::Context, out_dir: &Path, idle: bool) {
        if self.wanted && self.pending.is_none() {
            self.wanted = false;
            let (tx, rx) = channel();
            let (dir, ctx) = (out_dir.to_path_buf(), ctx.clone());
            let started = std::thread::Builder::new().name("past-runs".into()).spawn(move || {
                let _ = tx.send(scan(&dir));
                ctx.request_repaint();
            });
            match started {
                Ok(_) => self.pending = Some(rx),
                // No thread to be had: read it here, once.
                Err(_) => self.take(scan(out_dir), idle),
            }
        }
        if let Some(rx) = &self.pending {
            match rx.try_recv() {
                Ok(found) => {
                    self.pending = None;
                    self.take(found, idle);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => self.pending = None,
            }
        }
    }

    /// Replaces the list with `found`, keeping the overlays that were on.
    pub fn take(&mut self, found: Scan, idle: bool) {
        let mut list: Vec<(History, bool)> = found
            .runs
            .into_iter()
            .map(|h| {
                let shown = self.list.iter().any(|(p, on)| *on && p.name == h.name);
                (h, shown)
            })
            .collect();
        // On first look, overlay the most recent run so the curves are not empty.
        if !self.arrived && idle && !list.iter().any(|(_, on)| *on) {
            if let Some(newest) = list.iter_mut().max_by_key(|(h, _)| h.started_unix) {
                newest.1 = true;
            }
        }
        self.arrived = true;
        self.list = list;
        self.problems = found.problems;
        self.training = found.training;
        self.resumable = found.resumable;
    }

    /// The runs whose curves are overlaid.
    pub fn shown(&self) -> impl Iterator<Item = &History> {
        self.list.iter().filter(|(_, on)| *on).map(|(h, _)| h)
    }

    /// Writes each checked run's curves (PNG, SVG) and history (CSV) into `export_dir`.
    pub(crate) fn export_checked(&self, export_dir: &Path) -> String {
        let mut written = Vec::new();
        for h in self.shown() {
            let chart = crate::chart::training_curves(h);
            for ext in ["png", "svg"] {
                let path = export_dir.join(format!("{}.curves.{ext}", h.name));
                if let Err(e) = crate::chart::save(&chart, &path) {
                    return format!("could not save {e}");
                }
            }
            let csv = export_dir.join(format!("{}.history.csv", h.name));
            if let Err(e) = crate::fsutil::write_atomic(&csv, crate::chart::history_csv(h).as_bytes()) {
                return format!("could not save {}: {e}", csv.display());
            }
            written.push(h.name.clone());
        }
        format!("saved {} to {}", written.join(", "), export_dir.display())
    }
}

impl TrainTab {
    /// Past runs, each with a checkbox to overlay its curves and, where a stopped or interrupted run left its
    /// resume state, a Continue button (the same engine as `train --resume`).
    pub(super) fn past_runs_ui(&mut self, ui: &mut egui::Ui, worker: &Worker, data_ok: bool) {
        ui.horizontal(|ui| {
            ui.strong("Past runs");
            let tip = format!("Read {} again", self.out_dir.display());
            if ui.add_enabled(!self.past.scanning(), egui::Button::new("Rescan").small()).on_hover_text(tip).clicked() {
                self.past.rescan();
            }
            if self.past.scanning() {
                ui.spinner();
            }
        });
        if self.past.list.is_empty() && self.past.problems.is_empty() && !self.past.scanning() {
            ui.label(RichText::new("none yet").weak());
        }
        for p in &self.past.problems {
            ui.label(RichText::new(format!("not listed: {p}")).small().color(ui.visuals().warn_fg_color));
        }
        let idle = self.state == RunState::Idle;
        let mut resume = None;
        for (h, on) in &mut self.past.list {
            let best = h.best().map(|b| format!(" · top-1 {:.1}%", b.top1 * 100.0)).unwrap_or_default();
            let training = self.past.training.contains(&h.name);
            ui.horizontal(|ui| {
                ui.checkbox(on, format!("{}{best}", h.name)).on_hover_text(format!(
                    "{} of {} epochs, {}",
                    h.epochs.len(),
                    h.config.epochs,
                    run_status_text(&h.status, training)
                ));
                if self.past.resumable.contains(&h.name) {
                    let b = ui.add_enabled(idle && !training, egui::Button::new("Continue").small());
                    let b = if training {
                        b.on_disabled_hover_text("Another process is training this run now")
                    } else {
                        b.on_hover_text(format!("Continue from epoch {} of {}", h.epochs.len(), h.config.epochs))
                    };
                    if b.clicked() {
                        resume = Some((h.config.clone(), crate::train::resume_path(&self.out_dir, &h.name)));
                    }
                }
            });
        }
        let checked = self.past.shown().count();
        let export = ui
            .add_enabled(checked > 0, egui::Button::new("Export checked runs").small())
            .on_hover_text("Each checked run's four curves as PNG and SVG, and its history as CSV, to exports/");
        if export.clicked() {
            self.export_message = Some(self.past.export_checked(&self.export_dir));
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
}

/// A past run's status as the list shows it: a history left "running" by a process that ended (killed, the
/// machine shut down) was interrupted, which is what its Continue button is for.
pub(crate) fn run_status_text(status: &Status, training: bool) -> String {
    match status {
        Status::Running if training => "training now".into(),
        Status::Running => "interrupted".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::{ModelConfig, Variant};
    use crate::train::TrainConfig;

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
        let found = scan(dir.path());
        let names: Vec<&str> = found.runs.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["good", "other"]);
        assert_eq!(found.problems.len(), 2, "{:?}", found.problems);
        for file in ["cut.history.json", "escape.history.json"] {
            assert!(found.problems.iter().any(|p| p.contains(file)), "{file}: {:?}", found.problems);
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
        assert_eq!(scan(dir.path()).training, ["live"]);
        assert_eq!(run_status_text(&Status::Running, true), "training now");
        assert_eq!(run_status_text(&Status::Running, false), "interrupted");
        assert_eq!(run_status_text(&Status::Stopped, false), "stopped");
    }

    #[test]
    fn the_scan_runs_off_the_calling_thread_and_keeps_the_overlays_that_were_on() {
        let dir = tempfile::tempdir().unwrap();
        for (name, started) in [("old", 1), ("new", 2)] {
            let h = History { started_unix: started, ..history(name) };
            std::fs::write(dir.path().join(format!("{name}.history.json")), serde_json::to_vec(&h).unwrap()).unwrap();
        }
        let ctx = egui::Context::default();
        let mut runs = PastRuns::default();
        runs.rescan();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while runs.scanning() {
            runs.poll(&ctx, dir.path(), true);
            assert!(std::time::Instant::now() < deadline, "the scan never arrived");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // The newest run is overlaid on first look; the user's choice then holds across scans.
        let shown: Vec<&str> = runs.shown().map(|h| h.name.as_str()).collect();
        assert_eq!(shown, ["new"]);
        runs.list.iter_mut().for_each(|(h, on)| *on = h.name == "old");
        runs.take(scan(dir.path()), true);
        let shown: Vec<&str> = runs.shown().map(|h| h.name.as_str()).collect();
        assert_eq!(shown, ["old"]);
    }
}
