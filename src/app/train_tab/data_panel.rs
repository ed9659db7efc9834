//! The data set panel of the Train tab: what it offers while no CIFAR-100 is found (download it with progress,
//! or choose a folder that has it).

use super::super::dialog::Pending;
use super::super::worker::{Command, Worker};
use super::TrainTab;
use crate::train::hms;
use egui::{Color32, RichText};
use std::path::{Path, PathBuf};

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
    pub(crate) fn on_download_progress(&mut self, done: u64, total: Option<u64>) {
        let d = &mut self.download;
        if d.started.is_none() {
            d.started = Some((std::time::Instant::now(), done));
        }
        d.done = done;
        d.total = total;
    }

    pub(crate) fn on_download_done(&mut self, result: Result<PathBuf, String>) {
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
    pub(super) fn data_ui(&mut self, ui: &mut egui::Ui, worker: &Worker) {
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
                    self.folder_pick = Some((Pending::folder(ui.ctx()), super::FolderFor::Cifar100));
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
