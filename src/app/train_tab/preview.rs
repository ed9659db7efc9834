//! The Train tab's preview of a folder of class folders, before anything trains: each class with its training
//! and validation counts and a few of its images, the files left out with the reason, and the warnings. The
//! worker scans and decodes ([`gather`]; a large folder takes seconds, and a newer folder cancels the scan);
//! the tab shows what comes back ([`PreviewState`]).

use super::super::worker::{Command, Thumbnail, Worker};
use crate::data::{self, ImageFolder, Layout, SplitOptions};
use egui::{Color32, RichText, TextureHandle};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Images shown per class.
pub const THUMBS_PER_CLASS: usize = 4;
/// Classes that get images (a folder of 1000 classes shows every count, and images for the first ones only).
pub const CLASSES_WITH_THUMBS: usize = 40;
/// Side of a preview image in pixels (a centred square crop of the photo).
const THUMB_SIDE: u32 = 64;
/// Files left out that the panel lists by name.
const SKIPPED_LISTED: usize = 200;

/// One class as the preview shows it.
#[derive(Debug)]
pub struct ClassPreview {
    pub name: String,
    pub train: usize,
    pub val: usize,
    /// Thumbnails (RGBA) of those of its first few training images that decode.
    pub thumbs: Vec<Thumbnail>,
}

/// A scanned folder, as the Train tab previews it.
#[derive(Debug)]
pub struct FolderPreview {
    pub root: PathBuf,
    pub classes: Vec<ClassPreview>,
    /// "path: reason" for each file or folder left out.
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
    /// How the validation images are chosen, in words.
    pub split: String,
}

/// Scans `dir` as training would (same split options) and decodes the first few images of each class.
/// `progress` gets the files seen so far; `cancel` stops the scan (the error then says so).
pub fn gather(
    dir: &Path,
    options: &SplitOptions,
    cancel: &AtomicBool,
    progress: impl FnMut(usize),
) -> Result<FolderPreview, String> {
    let folder = ImageFolder::scan(dir, options, progress, cancel).map_err(|e| e.to_string())?;
    let mut classes: Vec<ClassPreview> = folder
        .classes
        .iter()
        .zip(folder.counts())
        .map(|(name, n)| ClassPreview { name: name.clone(), train: n.train, val: n.val, thumbs: Vec::new() })
        .collect();
    // Training samples are sorted by class: the first few of each of the first classes.
    let mut wanted: Vec<(usize, &Path)> = Vec::new();
    for s in &folder.train {
        let taken = wanted.iter().rev().take_while(|(c, _)| *c == s.class).count();
        if s.class < CLASSES_WITH_THUMBS && taken < THUMBS_PER_CLASS {
            wanted.push((s.class, &s.path));
        }
    }
    let thumbs: Vec<(usize, Option<Thumbnail>)> = wanted
        .par_iter()
        .map(|&(class, path)| {
            if cancel.load(Ordering::Relaxed) {
                return (class, None);
            }
            let img = data::preprocess::decode(path).ok();
            (class, img.map(|i| square_thumbnail(&i)))
        })
        .collect();
    if cancel.load(Ordering::Relaxed) {
        return Err(data::folder::FolderError::Cancelled.to_string());
    }
    for (class, t) in thumbs {
        if let Some(t) = t {
            classes[class].thumbs.push(t);
        }
    }
    let split = match &folder.layout {
        Layout::ClassFolders => {
            format!(
                "{:.0}% of each class held out for validation (seed {})",
                options.val_fraction * 100.0,
                options.seed
            )
        }
        Layout::Splits { val, .. } => format!("validation images from {}", val.display()),
    };
    Ok(FolderPreview {
        root: folder.root.clone(),
        classes,
        skipped: folder.skipped.iter().map(|s| format!("{}: {}", s.path.display(), s.reason)).collect(),
        warnings: folder.warnings,
        split,
    })
}

/// A centred square crop of `img`, THUMB_SIDE pixels a side.
fn square_thumbnail(img: &image::DynamicImage) -> Thumbnail {
    let t = img.resize_to_fill(THUMB_SIDE, THUMB_SIDE, image::imageops::FilterType::Triangle).to_rgba8();
    Thumbnail { size: [t.width() as usize, t.height() as usize], rgba: t.into_raw() }
}

/// A preview asked of the worker: what was asked, the number that tells its answers from older ones', and
/// the switch that cancels its scan.
struct Asked {
    dir: String,
    options: SplitOptions,
    id: u64,
    cancel: Arc<AtomicBool>,
}

/// What the tab knows of the preview of the folder the form names.
#[derive(Default)]
pub struct PreviewState {
    asked: Option<Asked>,
    /// The id the next request gets.
    next_id: u64,
    /// Files seen so far by the running scan.
    seen: usize,
    outcome: Option<Result<FolderPreview, String>>,
    /// Per class, its images as textures (made on the first frame that shows them).
    textures: Vec<Vec<TextureHandle>>,
    /// Set when a run starts on a folder: the panel closes once, leaving the room to the curves.
    pub collapse: bool,
}

impl PreviewState {
    /// Asks the worker for a preview of `dir` split as `val_split` and `seed` say (the defaults where they do
    /// not parse) when that is not what was last asked; a scan still running for the last request is cancelled.
    pub fn request(&mut self, worker: &Worker, dir: &str, val_split: &str, seed: &str) {
        let defaults = SplitOptions::default();
        let options = SplitOptions {
            val_fraction: val_split
                .trim()
                .parse()
                .ok()
                .filter(|f| *f > 0.0 && *f < 1.0)
                .unwrap_or(defaults.val_fraction),
            seed: seed.trim().parse().unwrap_or(defaults.seed),
        };
        if self.asked.as_ref().is_some_and(|a| a.dir == dir && a.options == options) {
            return;
        }
        self.send(worker, dir.to_string(), options);
    }

    fn send(&mut self, worker: &Worker, dir: String, options: SplitOptions) {
        if let Some(a) = &self.asked {
            a.cancel.store(true, Ordering::SeqCst);
        }
        let (id, cancel) = (self.next_id, Arc::new(AtomicBool::new(false)));
        self.next_id += 1;
        worker.send(Command::PreviewFolder { id, dir: PathBuf::from(&dir), options, cancel: cancel.clone() });
        self.asked = Some(Asked { dir, options, id, cancel });
        self.seen = 0;
        self.outcome = None;
        self.textures.clear();
    }

    /// Forgets the preview (the form no longer names a folder), cancelling a scan still running.
    pub fn clear(&mut self) {
        if let Some(a) = self.asked.take() {
            a.cancel.store(true, Ordering::SeqCst);
        }
        self.seen = 0;
        self.outcome = None;
        self.textures.clear();
    }

    /// Cancels a scan still running (a run is starting and will read the folder itself).
    pub fn cancel(&self) {
        if let Some(a) = &self.asked {
            a.cancel.store(true, Ordering::SeqCst);
        }
    }

    fn is_current(&self, id: u64) -> bool {
        self.asked.as_ref().is_some_and(|a| a.id == id)
    }

    pub(crate) fn on_progress(&mut self, id: u64, seen: usize) {
        if self.is_current(id) {
            self.seen = seen;
        }
    }

    /// The answer to request `id`; answers to older requests (cancelled or not) are dropped.
    pub(crate) fn on_done(&mut self, id: u64, outcome: Result<FolderPreview, String>) {
        if self.is_current(id) {
            self.outcome = Some(outcome);
            self.textures.clear();
        }
    }

    /// A one-line summary, for the panel's header.
    pub fn headline(&self) -> String {
        match &self.outcome {
            None if self.asked.is_some() => format!("Data set: scanning… {} files", self.seen),
            None => "Data set".into(),
            Some(Err(_)) => "Data set: cannot be used".into(),
            Some(Ok(p)) => {
                let (train, val) = p.classes.iter().fold((0, 0), |(t, v), c| (t + c.train, v + c.val));
                let mut s =
                    format!("Data set: {} classes, {train} training / {val} validation images", p.classes.len());
                if !p.warnings.is_empty() {
                    s.push_str(&format!(
                        ", {} warning{}",
                        p.warnings.len(),
                        if p.warnings.len() == 1 { "" } else { "s" }
                    ));
                }
                s
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, worker: &Worker) {
        let preview = match &self.outcome {
            None => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("scanning the folder: {} files seen", self.seen));
                    if ui.button("Cancel").clicked() {
                        self.cancel();
                    }
                });
                return;
            }
            Some(Err(e)) => {
                let again = ui
                    .horizontal(|ui| {
                        ui.colored_label(Color32::from_rgb(220, 80, 60), e);
                        ui.button("Scan again").clicked()
                    })
                    .inner;
                if let (true, Some(a)) = (again, &self.asked) {
                    let (dir, options) = (a.dir.clone(), a.options);
                    self.send(worker, dir, options);
                }
                return;
            }
            Some(Ok(p)) => p,
        };
        if self.textures.is_empty() {
            self.textures = preview
                .classes
                .iter()
                .enumerate()
                .map(|(c, class)| {
                    class
                        .thumbs
                        .iter()
                        .enumerate()
                        .map(|(k, t)| t.texture(ui.ctx(), format!("preview-{c}-{k}")))
                        .collect()
                })
                .collect();
        }
        ui.label(RichText::new(format!("{}: {}", preview.root.display(), preview.split)).weak());
        for w in &preview.warnings {
            ui.colored_label(Color32::from_rgb(230, 160, 40), format!("⚠ {w}"));
        }
        egui::Grid::new("preview-classes").num_columns(3).spacing([12.0, 4.0]).striped(true).show(ui, |ui| {
            for (class, textures) in preview.classes.iter().zip(&self.textures) {
                ui.strong(&class.name);
                ui.label(format!("{} train · {} val", class.train, class.val));
                ui.horizontal(|ui| {
                    for t in textures {
                        ui.add(egui::Image::new(t).fit_to_exact_size(egui::vec2(48.0, 48.0)));
                    }
                });
                ui.end_row();
            }
        });
        if preview.classes.len() > CLASSES_WITH_THUMBS {
            ui.label(RichText::new(format!("images shown for the first {CLASSES_WITH_THUMBS} classes")).weak());
        }
        if !preview.skipped.is_empty() {
            let n = preview.skipped.len();
            egui::CollapsingHeader::new(format!("{n} file{} left out", if n == 1 { "" } else { "s" }))
                .id_salt("preview-skipped")
                .show(ui, |ui| {
                    for s in preview.skipped.iter().take(SKIPPED_LISTED) {
                        ui.label(RichText::new(s).small());
                    }
                    if n > SKIPPED_LISTED {
                        ui.label(RichText::new(format!("and {} more", n - SKIPPED_LISTED)).small().weak());
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(path: &Path, rgb: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(80, 50, image::Rgb(rgb)).save(path).unwrap();
    }

    #[test]
    fn the_preview_counts_each_class_shows_its_first_images_and_lists_what_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..7 {
            save(&dir.path().join(format!("cats/{i}.png")), [200, 10, 10]);
        }
        for i in 0..3 {
            save(&dir.path().join(format!("dogs/{i}.jpg")), [10, 200, 10]);
        }
        std::fs::write(dir.path().join("dogs/notes.txt"), "not an image").unwrap();
        std::fs::write(dir.path().join("cats/broken.png"), "not a png").unwrap();
        let options = SplitOptions { val_fraction: 0.25, seed: 3 };
        let mut seen = 0;
        let p = gather(dir.path(), &options, &AtomicBool::new(false), |n| seen = n).unwrap();
        assert!(seen >= 12, "{seen}");
        let names: Vec<&str> = p.classes.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cats", "dogs"]);
        // The counts training will use: cats has 8 files (one broken: the scan does not decode).
        let train_cats = crate::data::ImageFolder::scan(dir.path(), &options, |_| {}, &AtomicBool::new(false))
            .unwrap()
            .train
            .iter()
            .filter(|s| s.class == 0)
            .count();
        assert_eq!(p.classes[0].train, train_cats);
        assert_eq!(p.classes[0].train + p.classes[0].val, 8);
        assert_eq!(p.classes[1].train + p.classes[1].val, 3);
        // At most four images a class, squares of the photo's own colour; the broken file shows none.
        assert!(p.classes.iter().all(|c| !c.thumbs.is_empty() && c.thumbs.len() <= THUMBS_PER_CLASS));
        let t = &p.classes[1].thumbs[0];
        assert_eq!(t.size, [64, 64]);
        assert!(t.rgba[1] > 150 && t.rgba[0] < 60, "{:?}", &t.rgba[..4]);
        assert!(p.skipped.iter().any(|s| s.contains("notes.txt") && s.contains("not an image")), "{:?}", p.skipped);
        assert!(p.split.contains("25% of each class"), "{}", p.split);
        assert!(p.warnings.iter().any(|w| w.contains("dogs")), "few images: {:?}", p.warnings);

        let one = tempfile::tempdir().unwrap();
        save(&one.path().join("only/a.png"), [1, 2, 3]);
        let err = gather(one.path(), &options, &AtomicBool::new(false), |_| {}).unwrap_err();
        assert!(err.contains("class"), "{err}");
        assert!(gather(dir.path(), &options, &AtomicBool::new(true), |_| {})
            .unwrap_err()
            .to_lowercase()
            .contains("cancel"));
    }
}
