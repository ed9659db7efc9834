//! Evaluate tab: a model's accuracy on the CIFAR-100 test split, or for a model trained on a folder of images on
//! that folder's validation images (the same figures as `mobilenetv3 evaluate`), with a sortable per-class
//! table, the confusion matrix as a heatmap, and the most confident mistakes.

use super::worker::{Command, EvalReport, ModelEntry, Worker};
use crate::fsutil::write_atomic;
use egui::{Color32, RichText, Sense, TextureHandle};
use std::path::{Path, PathBuf};

/// The per-class table's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Accuracy,
    Class,
    Images,
}

#[derive(Default)]
pub struct EvaluateTab {
    /// The model to evaluate (a file of the Classify tab's list).
    pub model: Option<PathBuf>,
    pub running: bool,
    pub progress: (usize, usize),
    pub report: Option<EvalReport>,
    pub message: Option<Result<String, String>>,
    pub sort: SortBy,
    pub descending: bool,
    mistake_textures: Vec<TextureHandle>,
    export_dir: PathBuf,
}

impl EvaluateTab {
    pub fn new(export_dir: PathBuf) -> Self {
        EvaluateTab { export_dir, descending: true, ..Default::default() }
    }

    pub(crate) fn on_progress(&mut self, done: usize, total: usize) {
        self.progress = (done, total);
    }

    pub(crate) fn on_done(&mut self, ctx: &egui::Context, result: Result<Option<Box<EvalReport>>, String>) {
        self.running = false;
        match result {
            Ok(Some(report)) => {
                self.mistake_textures = report
                    .mistake_images
                    .iter()
                    .enumerate()
                    .map(|(i, rgb)| {
                        let img = egui::ColorImage::from_rgb([report.side, report.side], rgb);
                        // CIFAR's 32 pixels shown as crisp blocks; a photo-sized input smoothly.
                        let filter = if report.side <= 32 {
                            egui::TextureOptions::NEAREST
                        } else {
                            egui::TextureOptions::LINEAR
                        };
                        ctx.load_texture(format!("mistake-{i}"), img, filter)
                    })
                    .collect();
                self.message = None;
                self.report = Some(*report);
            }
            Ok(None) => self.message = Some(Ok("evaluation cancelled".into())),
            Err(e) => self.message = Some(Err(e)),
        }
    }

    fn start(&mut self, worker: &Worker, model: PathBuf, data_dir: Option<PathBuf>) {
        worker.eval_cancel.store(false, std::sync::atomic::Ordering::SeqCst);
        worker.send(Command::Evaluate { model, data_dir });
        self.running = true;
        self.progress = (0, 0);
        self.message = None;
    }

    /// `models`: the usable model files; `data_dir`: the Train tab's data folder when it holds CIFAR-100.
    pub(crate) fn ui(&mut self, ui: &mut egui::Ui, worker: &Worker, models: &[ModelEntry], data_dir: Option<PathBuf>) {
        if self.model.as_ref().is_none_or(|m| !models.iter().any(|e| &e.path == m)) {
            self.model = models
                .iter()
                .max_by(|a, b| a.top1.unwrap_or(-1.0).total_cmp(&b.top1.unwrap_or(-1.0)))
                .map(|m| m.path.clone());
        }
        ui.horizontal(|ui| {
            let label = ui.label("Model:");
            let current = self
                .model
                .as_ref()
                .and_then(|p| models.iter().find(|m| &m.path == p))
                .map(ModelEntry::describe)
                .unwrap_or_else(|| "no model files found".into());
            egui::ComboBox::from_id_salt("eval-model")
                .selected_text(current)
                .width(360.0)
                .show_ui(ui, |ui| {
                    for m in models {
                        if ui.selectable_label(self.model.as_ref() == Some(&m.path), m.describe()).clicked() {
                            self.model = Some(m.path.clone());
                        }
                    }
                })
                .response
                .labelled_by(label.id)
                .on_hover_text("The model to evaluate: every model file found (yours, then the bundled ones)");
            // Without CIFAR-100 a model trained on a folder can still run; a CIFAR-100 model is told why not.
            let can_run = !self.running && self.model.is_some();
            if ui.add_enabled(can_run, egui::Button::new("Run evaluation")).clicked() {
                if let Some(m) = self.model.clone() {
                    self.start(worker, m, data_dir.clone());
                }
            }
            if ui.add_enabled(self.running, egui::Button::new("Cancel")).clicked() {
                worker.eval_cancel.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            if ui.add_enabled(self.report.is_some(), egui::Button::new("Export CSV")).clicked() {
                self.message = Some(self.export_csv());
            }
        });
        match &data_dir {
            Some(d) => ui.label(
                RichText::new(format!(
                    "on the CIFAR-100 test split in {}; a model trained on your images, on its folder's validation images",
                    d.display()
                ))
                .weak(),
            ),
            None => ui.colored_label(
                Color32::from_rgb(220, 80, 60),
                "No CIFAR-100 found (download it or choose its folder in the Train tab): only models trained on your images can be evaluated.",
            ),
        };
        if self.running {
            let (done, total) = self.progress;
            ui.add(
                egui::ProgressBar::new(done as f32 / total.max(1) as f32).text(format!("{done} / {total} test images")),
            );
        }
        match &self.message {
            Some(Ok(m)) => {
                ui.label(m);
            }
            Some(Err(e)) => {
                ui.colored_label(Color32::from_rgb(220, 80, 60), e);
            }
            None => {}
        }
        ui.separator();
        let Some(report) = &self.report else {
            ui.label(RichText::new("Pick a model and press Run evaluation.").weak());
            return;
        };
        let r = &report.result;
        ui.heading(format!(
            "{}: top-1 {:.2}%   top-5 {:.2}%   loss {:.4}   ({} test images)",
            report.name,
            r.top1 * 100.0,
            r.top5 * 100.0,
            r.loss,
            r.images
        ));
        ui.label(RichText::new(format!("on {}", report.data)).weak());
        let h = ui.available_height();
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                ui.set_width(300.0);
                self.class_table(ui, h - 30.0);
            });
            ui.separator();
            ui.vertical(|ui| {
                ui.strong("Confusion matrix (rows: true class, columns: predicted; hover for counts)");
                let side = (h - 40.0).min(ui.available_width() * 0.55).max(200.0);
                if let Some(report) = &self.report {
                    confusion_heatmap(ui, report, side);
                }
            });
            ui.separator();
            ui.vertical(|ui| {
                ui.strong("Most confident mistakes");
                egui::ScrollArea::vertical().id_salt("mistakes").max_height(h - 30.0).show(ui, |ui| {
                    self.mistakes_ui(ui);
                });
            });
        });
    }

    fn class_table(&mut self, ui: &mut egui::Ui, height: f32) {
        let Some(report) = &self.report else { return };
        let r = &report.result;
        let images: Vec<u32> = r.confusion.iter().map(|row| row.iter().sum()).collect();
        let mut order: Vec<usize> = (0..r.per_class.len()).collect();
        match self.sort {
            SortBy::Accuracy => order.sort_by(|&a, &b| r.per_class[a].total_cmp(&r.per_class[b])),
            SortBy::Class => order.sort_by(|&a, &b| report.class_names[a].cmp(&report.class_names[b])),
            SortBy::Images => order.sort_by_key(|&i| images[i]),
        }
        if self.descending {
            order.reverse();
        }
        let mut clicked = None;
        egui::Grid::new("class-header").num_columns(3).min_col_width(80.0).show(ui, |ui| {
            for (label, key) in [("class", SortBy::Class), ("top-1", SortBy::Accuracy), ("images", SortBy::Images)] {
                let arrow = if self.sort == key {
                    if self.descending {
                        " (down)"
                    } else {
                        " (up)"
                    }
                } else {
                    ""
                };
                if ui.button(format!("{label}{arrow}")).on_hover_text("sort by this column").clicked() {
                    clicked = Some(key);
                }
            }
            ui.end_row();
        });
        if let Some(key) = clicked {
            if self.sort == key {
                self.descending = !self.descending;
            } else {
                self.sort = key;
                self.descending = key != SortBy::Class;
            }
        }
        egui::ScrollArea::vertical().id_salt("class-table").max_height(height).show(ui, |ui| {
            egui::Grid::new("class-table").num_columns(3).min_col_width(80.0).striped(true).show(ui, |ui| {
                for i in order {
                    ui.label(&report.class_names[i]);
                    ui.label(format!("{:.1}%", r.per_class[i] * 100.0));
                    ui.label(images[i].to_string());
                    ui.end_row();
                }
            });
        });
    }

    fn mistakes_ui(&self, ui: &mut egui::Ui) {
        let Some(report) = &self.report else { return };
        egui::Grid::new("mistakes").num_columns(2).spacing([8.0, 8.0]).show(ui, |ui| {
            for (m, tex) in report.result.mistakes.iter().zip(&self.mistake_textures) {
                ui.add(egui::Image::new(tex).fit_to_exact_size(egui::vec2(64.0, 64.0)));
                ui.vertical(|ui| {
                    ui.label(RichText::new(format!("said {}", report.class_names[m.predicted])).strong());
                    ui.label(format!("{:.1}% sure", m.confidence * 100.0));
                    ui.label(RichText::new(format!("truth: {}", report.class_names[m.truth])).weak());
                    ui.label(RichText::new(format!("test image {}", m.index)).small().weak());
                });
                ui.end_row();
            }
        });
    }

    /// Writes the per-class accuracy and the confusion matrix as CSV files into the export folder.
    fn export_csv(&self) -> Result<String, String> {
        let Some(report) = &self.report else { return Err("nothing to export".into()) };
        let stem = report.model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let classes = self.export_dir.join(format!("{stem}.per_class.csv"));
        let confusion = self.export_dir.join(format!("{stem}.confusion.csv"));
        let r = &report.result;
        let mut per_class = String::from("class,top1,images\n");
        for (i, name) in report.class_names.iter().enumerate() {
            let n: u32 = r.confusion[i].iter().sum();
            per_class.push_str(&format!("{},{:.6},{n}\n", crate::train::csv_field(name), r.per_class[i]));
        }
        let write =
            |p: &Path, text: &str| write_atomic(p, text.as_bytes()).map_err(|e| format!("{}: {e}", p.display()));
        write(&classes, &per_class)?;
        write(&confusion, &crate::train::confusion_csv(&r.confusion, &report.class_names))?;
        Ok(format!("saved {} and {}", classes.display(), confusion.display()))
    }
}

/// The confusion matrix as a heatmap: each cell's colour from its share of its row (so that rare confusions
/// show), the diagonal in its own hue; hovering a cell names the classes and the count.
fn confusion_heatmap(ui: &mut egui::Ui, report: &EvalReport, side: f32) {
    let m = &report.result.confusion;
    let n = m.len().max(1);
    let (rect, response) = ui.allocate_exact_size(egui::vec2(side, side), Sense::hover());
    let painter = ui.painter_at(rect);
    painter.rect_filled(rect, 0.0, Color32::from_gray(16));
    let cell = side / n as f32;
    for (t, row) in m.iter().enumerate() {
        let total = row.iter().sum::<u32>().max(1) as f32;
        for (p, &count) in row.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let share = (count as f32 / total).sqrt();
            let v = (40.0 + 215.0 * share) as u8;
            let color = if t == p { Color32::from_rgb(v / 3, v, v / 2) } else { Color32::from_rgb(v, v / 3, v / 4) };
            let min = rect.min + egui::vec2(p as f32 * cell, t as f32 * cell);
            painter.rect_filled(egui::Rect::from_min_size(min, egui::vec2(cell.max(1.0), cell.max(1.0))), 0.0, color);
        }
    }
    if let Some(pos) = response.hover_pos() {
        let p = (((pos.x - rect.min.x) / cell) as usize).min(n - 1);
        let t = (((pos.y - rect.min.y) / cell) as usize).min(n - 1);
        let name = |i: usize| report.class_names.get(i).cloned().unwrap_or_default();
        response.on_hover_text(format!("true: {}\npredicted: {}\ncount: {}", name(t), name(p), m[t][p]));
    }
}
