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
    /// The confusion-matrix cell clicked (true class, predicted class) and its images, shown instead of the
    /// most confident mistakes.
    pub cell: Option<Cell>,
}

/// The images behind one cell of the confusion matrix.
pub struct Cell {
    pub truth: usize,
    /// None: every image of the true class (a row of the per-class table), whatever was predicted.
    pub predicted: Option<usize>,
    /// Every image of the cell (split indices, most confident first); the first [`CELL_SHOWN`] are shown.
    pub indices: Vec<usize>,
    textures: Vec<TextureHandle>,
    /// Grad-CAM heat maps asked for, by position in `indices`: None while computing.
    pub cams: Vec<Option<Option<TextureHandle>>>,
}

/// How many images of a cell are shown.
const CELL_SHOWN: usize = 32;

impl EvaluateTab {
    pub fn new(export_dir: PathBuf) -> Self {
        EvaluateTab { export_dir, descending: true, ..Default::default() }
    }

    pub(crate) fn on_progress(&mut self, done: usize, total: usize) {
        self.progress = (done, total);
    }

    /// Shows the images of a confusion-matrix cell.
    pub(crate) fn open_cell(&mut self, ctx: &egui::Context, truth: usize, predicted: Option<usize>) {
        let Some(report) = &self.report else { return };
        let indices = report.cell(truth, predicted);
        let textures = indices
            .iter()
            .take(CELL_SHOWN)
            .map(|&i| test_image_texture(ctx, format!("cell-{i}"), report.side, &report.rgb(i)))
            .collect::<Vec<_>>();
        let cams = vec![None; textures.len()];
        self.cell = Some(Cell { truth, predicted, indices, textures, cams });
    }

    /// A Grad-CAM the worker computed for an image of the open cell.
    pub(crate) fn on_explained(&mut self, ctx: &egui::Context, index: usize, cam: crate::exec::inference::GradCam) {
        let Some(cell) = &mut self.cell else { return };
        if let Some(pos) = cell.indices.iter().take(CELL_SHOWN).position(|&i| i == index) {
            cell.cams[pos] = Some(Some(super::classify_tab::heat_texture(ctx, format!("cell-cam-{index}"), &cam)));
        }
    }

    pub(crate) fn on_done(&mut self, ctx: &egui::Context, result: Result<Option<Box<EvalReport>>, String>) {
        self.running = false;
        match result {
            Ok(Some(report)) => {
                self.mistake_textures = report
                    .mistake_images
                    .iter()
                    .enumerate()
                    .map(|(i, rgb)| test_image_texture(ctx, format!("mistake-{i}"), report.side, rgb))
                    .collect();
                self.message = None;
                self.cell = None;
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
                ui.strong(
                    "Confusion matrix (rows: true class, columns: predicted; hover for counts, click for images)",
                );
                let side = (h - 40.0).min(ui.available_width() * 0.55).max(200.0);
                if let Some(report) = &self.report {
                    if let Some((t, p)) = confusion_heatmap(ui, report, side) {
                        self.open_cell(ui.ctx(), t, Some(p));
                    }
                }
            });
            ui.separator();
            ui.vertical(|ui| {
                if self.cell.is_some() {
                    self.cell_ui(ui, worker, h);
                } else {
                    ui.strong("Most confident mistakes");
                    egui::ScrollArea::vertical().id_salt("mistakes").max_height(h - 30.0).show(ui, |ui| {
                        self.mistakes_ui(ui);
                    });
                }
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
        let mut open = None;
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
                    let name = egui::Label::new(&report.class_names[i]).sense(Sense::click());
                    if ui.add(name).on_hover_text("click for this class's images").clicked() {
                        open = Some(i);
                    }
                    ui.label(format!("{:.1}%", r.per_class[i] * 100.0));
                    ui.label(images[i].to_string());
                    ui.end_row();
                }
            });
        });
        if let Some(i) = open {
            self.open_cell(ui.ctx(), i, None);
        }
    }

    /// The images of the open cell, each with a Grad-CAM button (the map of the predicted class).
    fn cell_ui(&mut self, ui: &mut egui::Ui, worker: &Worker, h: f32) {
        let (Some(report), Some(cell)) = (&self.report, &mut self.cell) else { return };
        let name = |i: usize| report.class_names.get(i).cloned().unwrap_or_default();
        let (t, n) = (cell.truth, cell.indices.len());
        let mut close = false;
        let plural = if n == 1 { "" } else { "s" };
        match cell.predicted {
            Some(p) => ui.strong(format!("True {}, predicted {}: {n} image{plural}", name(t), name(p))),
            None => ui.strong(format!("True {}: {n} image{plural}", name(t))),
        };
        ui.horizontal(|ui| {
            close = ui.button("Back to the mistakes").clicked();
            if n > CELL_SHOWN {
                ui.label(RichText::new(format!("the {CELL_SHOWN} most confident shown")).weak());
            }
        });
        egui::ScrollArea::vertical().id_salt("cell").max_height(h - 50.0).show(ui, |ui| {
            egui::Grid::new("cell-images").num_columns(2).spacing([8.0, 8.0]).show(ui, |ui| {
                for (k, tex) in cell.textures.iter().enumerate() {
                    let index = cell.indices[k];
                    let r = ui.add(egui::Image::new(tex).fit_to_exact_size(egui::vec2(64.0, 64.0)));
                    if let Some(Some(heat)) = &cell.cams[k] {
                        let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                        ui.painter().image(heat.id(), r.rect, uv, Color32::WHITE);
                    }
                    ui.vertical(|ui| {
                        let (p, confidence) =
                            report.result.predictions.get(index).map_or((0, 0.0), |p| (p.0 as usize, p.1));
                        if cell.predicted.is_none() {
                            let said = format!("said {}", name(p));
                            ui.label(if p == t { RichText::new(said) } else { RichText::new(said).strong() });
                        }
                        ui.label(format!("{:.1}% sure", confidence * 100.0));
                        image_label(ui, report, index);
                        let asked = cell.cams[k].is_some();
                        if ui.add_enabled(!asked, egui::Button::new("Grad-CAM").small()).clicked() {
                            cell.cams[k] = Some(None);
                            worker.send(Command::ExplainEvaluated {
                                plan: report.plan.clone(),
                                index,
                                input: report.input(index),
                                side: report.side,
                                class: p,
                            });
                        }
                    });
                    ui.end_row();
                }
            });
        });
        if close {
            self.cell = None;
        }
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
                    image_label(ui, report, m.index);
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

/// How the view names evaluated image `i`: its file name where the split knows the file (a folder of images;
/// hovering shows the whole path), else its place in the split (CIFAR-100).
fn image_label(ui: &mut egui::Ui, report: &EvalReport, i: usize) {
    let small = |t: String| RichText::new(t).small().weak();
    match report.test.path(i) {
        Some(p) => {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            ui.label(small(name)).on_hover_text(p.display().to_string());
        }
        None => {
            ui.label(small(format!("test image {i}")));
        }
    }
}

/// An evaluated image (side x side, interleaved RGB) as a texture: CIFAR's 32 pixels shown as crisp blocks, a
/// photo-sized input smoothly.
fn test_image_texture(ctx: &egui::Context, name: String, side: usize, rgb: &[u8]) -> TextureHandle {
    let img = egui::ColorImage::from_rgb([side, side], rgb);
    let filter = if side <= 32 { egui::TextureOptions::NEAREST } else { egui::TextureOptions::LINEAR };
    ctx.load_texture(name, img, filter)
}

/// The confusion matrix as a heatmap: each cell's colour from its share of its row (so that rare confusions
/// show), the diagonal in its own hue; hovering a cell names the classes and the count. Returns the cell
/// clicked (true class, predicted class), if it holds any image.
fn confusion_heatmap(ui: &mut egui::Ui, report: &EvalReport, side: f32) -> Option<(usize, usize)> {
    let m = &report.result.confusion;
    let n = m.len().max(1);
    let (rect, response) = ui.allocate_exact_size(egui::vec2(side, side), Sense::click());
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
    let at = |pos: egui::Pos2| {
        let p = (((pos.x - rect.min.x) / cell) as usize).min(n - 1);
        let t = (((pos.y - rect.min.y) / cell) as usize).min(n - 1);
        (t, p)
    };
    let clicked = response.clicked().then(|| response.interact_pointer_pos()).flatten().map(at);
    if let Some(pos) = response.hover_pos() {
        let (t, p) = at(pos);
        let name = |i: usize| report.class_names.get(i).cloned().unwrap_or_default();
        response.on_hover_text(format!("true: {}\npredicted: {}\ncount: {}", name(t), name(p), m[t][p]));
    }
    clicked.filter(|&(t, p)| m.get(t).and_then(|row| row.get(p)).is_some_and(|&c| c > 0))
}
