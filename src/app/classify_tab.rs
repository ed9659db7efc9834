//! Classify tab: pick a model, drop or open images, read each one's top-5 labels.

use super::worker::{Command, ModelEntry, Thumbnail, Worker};
use crate::classify::Prediction;
use crate::exec::inference::GradCam;
use egui::{Color32, RichText, TextureHandle};
use std::path::PathBuf;

pub struct ImageCard {
    pub id: u64,
    pub path: PathBuf,
    pub texture: Option<TextureHandle>,
    pub outcome: Option<Result<Vec<Prediction>, String>>,
    /// The Grad-CAM heat map shown over the thumbnail (when the tab shows them): its class and its texture.
    pub cam: Option<(usize, TextureHandle)>,
}

#[derive(Default)]
pub struct ClassifyTab {
    pub models: Vec<ModelEntry>,
    /// Model files that cannot be used, with the reason (shown under the picker).
    pub rejected: Vec<(PathBuf, String)>,
    pub selected: Option<PathBuf>,
    pub loaded: Option<String>,
    pub model_error: Option<String>,
    pub cards: Vec<ImageCard>,
    /// AddPaths requests not answered yet.
    pub pending_adds: usize,
    /// Batch-1 CPU latency (ms) by variant, from the Latency tab's last run: shown beside each model.
    pub latency_ms: Vec<(String, f64)>,
    /// The "Open images…" dialog while it is open.
    open_dialog: Option<super::dialog::Pending>,
    /// Why "Open images…" could not show a dialog, shown under the button.
    pub dialog_error: Option<String>,
    /// Where "Export ONNX…" writes when no save dialog can be shown (the app's exports folder).
    pub exports: PathBuf,
    /// The "Export ONNX…" save dialog while it is open, with the model it exports.
    export_dialog: Option<(PathBuf, super::dialog::Pending)>,
    /// An export the worker is writing.
    pub exporting: bool,
    /// What the last export wrote, or why it failed.
    pub export_result: Option<Result<String, String>>,
    /// Lay each card's Grad-CAM heat map over its thumbnail.
    pub show_cam: bool,
    /// The larger view of one photo with its heat map (a thumbnail clicked while the maps show): its title
    /// and picture.
    pub large_view: Option<(String, TextureHandle)>,
}

impl ClassifyTab {
    /// An empty tab whose ONNX exports go to `exports` when no save dialog can be shown.
    pub(crate) fn new(exports: PathBuf) -> Self {
        ClassifyTab { exports, ..Default::default() }
    }

    /// Asks the worker to expand and classify files or folders (no file system work on the UI thread).
    pub(crate) fn add_paths(&mut self, worker: &Worker, paths: &[PathBuf]) {
        self.pending_adds += 1;
        worker.send(Command::AddPaths(paths.to_vec()));
    }

    /// The worker found these files; their results follow.
    pub(crate) fn on_queued(&mut self, files: Vec<(u64, PathBuf)>) {
        self.pending_adds = self.pending_adds.saturating_sub(1);
        for (id, path) in files {
            self.cards.push(ImageCard { id, path, texture: None, outcome: None, cam: None });
        }
    }

    /// Classifies everything shown again (after a model change).
    fn reclassify(&mut self, worker: &Worker) {
        let jobs: Vec<(u64, PathBuf)> = self
            .cards
            .iter_mut()
            .map(|c| {
                c.outcome = None;
                (c.id, c.path.clone())
            })
            .collect();
        if !jobs.is_empty() {
            worker.send(Command::Classify(jobs));
        }
    }

    pub(crate) fn select_model(&mut self, worker: &Worker, path: PathBuf) {
        self.selected = Some(path.clone());
        self.loaded = None;
        self.model_error = None;
        worker.send(Command::LoadModel(path));
    }

    pub(crate) fn on_models(&mut self, worker: &Worker, models: Vec<ModelEntry>, rejected: Vec<(PathBuf, String)>) {
        self.models = models;
        self.rejected = rejected;
        let still_there = self.selected.as_ref().is_some_and(|s| self.models.iter().any(|m| &m.path == s));
        if !still_there {
            // Prefer the most accurate model.
            let best = self
                .models
                .iter()
                .max_by(|a, b| a.top1.unwrap_or(-1.0).total_cmp(&b.top1.unwrap_or(-1.0)))
                .map(|m| m.path.clone());
            if let Some(p) = best {
                self.select_model(worker, p);
            }
        }
    }

    pub(crate) fn on_model_loaded(&mut self, worker: &Worker, path: PathBuf, name: String) {
        if self.selected.as_ref() == Some(&path) {
            self.loaded = Some(name);
            self.reclassify(worker);
        }
    }

    /// A model that fails to load (e.g. weights that are not finite) leaves the picker for the list of
    /// unusable files, and the next most accurate model is chosen.
    pub(crate) fn on_model_failed(&mut self, worker: &Worker, path: PathBuf, error: String) {
        if self.selected.as_ref() == Some(&path) {
            self.loaded = None;
            self.model_error = Some(error.clone());
        }
        if self.models.iter().any(|m| m.path == path) {
            self.models.retain(|m| m.path != path);
            self.rejected.push((path.clone(), error));
            if self.selected.as_ref() == Some(&path) {
                self.selected = None;
                let models = std::mem::take(&mut self.models);
                let rejected = std::mem::take(&mut self.rejected);
                self.on_models(worker, models, rejected);
            }
        }
    }

    pub(crate) fn on_classified(
        &mut self,
        ctx: &egui::Context,
        id: u64,
        model: PathBuf,
        outcome: Result<Vec<Prediction>, String>,
        thumb: Option<Thumbnail>,
        cam: Option<GradCam>,
    ) {
        // A result from a model that is no longer the chosen one is stale (a reclassification follows).
        let stale = outcome.is_ok() && self.selected.as_ref() != Some(&model);
        if let Some(card) = self.cards.iter_mut().find(|c| c.id == id) {
            if !stale {
                card.outcome = Some(outcome);
                card.cam = cam.map(|c| (c.class, heat_texture(ctx, format!("cam-{id}"), &c)));
            }
            if let (None, Some(t)) = (&card.texture, thumb) {
                card.texture = Some(t.texture(ctx, format!("thumb-{id}")));
            }
        }
    }

    /// The worker drew a larger view of a photo with its heat map.
    pub(crate) fn on_large_view(&mut self, ctx: &egui::Context, title: String, size: [usize; 2], rgb: &[u8]) {
        let img = egui::ColorImage::from_rgb(size, rgb);
        self.large_view = Some((title, ctx.load_texture("large-view", img, egui::TextureOptions::LINEAR)));
    }

    /// The Grad-CAM of a card's image for the class the user clicked.
    pub(crate) fn on_explained(&mut self, ctx: &egui::Context, id: u64, model: PathBuf, cam: GradCam) {
        if self.selected.as_ref() != Some(&model) {
            return;
        }
        if let Some(card) = self.cards.iter_mut().find(|c| c.id == id) {
            card.cam = Some((cam.class, heat_texture(ctx, format!("cam-{id}"), &cam)));
        }
    }

    /// A model's entry in the picker: file, variant, top-1 and, once timed in the Latency tab, its batch-1 latency.
    pub fn describe(&self, m: &ModelEntry) -> String {
        let d = m.describe();
        match self.latency_ms.iter().find(|(v, _)| *v == m.name) {
            Some((_, ms)) => format!("{} · {ms:.2} ms at batch 1)", d.trim_end_matches(')')),
            None => d,
        }
    }

    /// Starts exporting the chosen model: through a save dialog where one can be shown, else straight into
    /// the exports folder (the result line says where).
    fn export_onnx(&mut self, ctx: &egui::Context, worker: &Worker) {
        let Some(model) = self.selected.clone() else { return };
        self.export_result = None;
        let name = model.with_extension("onnx").file_name().map(PathBuf::from).unwrap_or_else(|| "model.onnx".into());
        if super::dialog::dialogs_available() {
            self.export_dialog = Some((model, super::dialog::Pending::save_onnx(ctx, &name, &self.exports)));
        } else {
            self.send_export(worker, model, self.exports.join(name));
        }
    }

    fn send_export(&mut self, worker: &Worker, model: PathBuf, out: PathBuf) {
        self.exporting = true;
        worker.send(Command::ExportOnnx { model, out });
    }

    /// The worker finished an export.
    pub(crate) fn on_exported(&mut self, result: Result<String, String>) {
        self.exporting = false;
        self.export_result = Some(result);
    }

    pub(crate) fn ui(&mut self, ui: &mut egui::Ui, worker: &Worker) {
        if let Some(answer) = self.export_dialog.as_ref().and_then(|(_, d)| d.poll()) {
            let (model, _) = self.export_dialog.take().expect("polled above");
            match answer {
                Ok(paths) => {
                    if let Some(out) = paths.into_iter().next() {
                        let out = if out.extension().is_none() { out.with_extension("onnx") } else { out };
                        self.send_export(worker, model, out);
                    }
                }
                Err(e) => self.export_result = Some(Err(e)),
            }
        }
        if let Some(answer) = self.open_dialog.as_ref().and_then(super::dialog::Pending::poll) {
            self.open_dialog = None;
            match answer {
                Ok(files) if !files.is_empty() => self.add_paths(worker, &files),
                Ok(_) => {}
                Err(e) => self.dialog_error = Some(e),
            }
        }
        ui.horizontal(|ui| {
            ui.label("Model:");
            let current = self
                .selected
                .as_ref()
                .and_then(|s| self.models.iter().find(|m| &m.path == s))
                .map(|m| self.describe(m))
                .unwrap_or_else(|| {
                    if self.models.is_empty() {
                        "no model files found".into()
                    } else {
                        "choose a model".into()
                    }
                });
            let mut choice = None;
            egui::ComboBox::from_id_salt("model-picker")
                .selected_text(current)
                .width(360.0)
                .show_ui(ui, |ui| {
                    for m in &self.models {
                        if ui.selectable_label(self.selected.as_ref() == Some(&m.path), self.describe(m)).clicked() {
                            choice = Some(m.path.clone());
                        }
                    }
                })
                .response
                .on_hover_text("Every model file found (yours, then the bundled ones), with its test accuracy");
            if let Some(p) = choice {
                self.select_model(worker, p);
            }
            if ui.button("Refresh").on_hover_text("Look for new model files").clicked() {
                worker.send(Command::RefreshModels);
            }
            let can_export = self.selected.is_some() && !self.exporting && self.export_dialog.is_none();
            if ui
                .add_enabled(can_export, egui::Button::new("Export ONNX…"))
                .on_hover_text(
                    "Write the chosen model as an ONNX file (opset 17, any batch size, its class names inside), \
                     to run it with ONNX Runtime or another runtime",
                )
                .clicked()
            {
                self.export_onnx(ui.ctx(), worker);
            }
            ui.separator();
            if ui.add_enabled(self.open_dialog.is_none(), egui::Button::new("Open images…")).clicked() {
                self.dialog_error = None;
                self.open_dialog = Some(super::dialog::Pending::images(ui.ctx()));
            }
            if ui.add_enabled(!self.cards.is_empty(), egui::Button::new("Clear")).clicked() {
                self.cards.clear();
            }
            ui.separator();
            ui.checkbox(&mut self.show_cam, "Where it looked (Grad-CAM)").on_hover_text(
                "Lay a heat map over each photo: where the model found the class marked » (Grad-CAM of its last \
                 convolutional stage). Click another label to see where it found that one.",
            );
        });
        if !self.rejected.is_empty() {
            let title = format!("{} model file(s) cannot be used", self.rejected.len());
            egui::CollapsingHeader::new(egui::RichText::new(title).color(Color32::from_rgb(200, 120, 60)))
                .id_salt("rejected-models")
                .show(ui, |ui| {
                    for (path, reason) in &self.rejected {
                        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                        ui.label(egui::RichText::new(name).strong());
                        ui.label(egui::RichText::new(reason).small());
                    }
                });
        }
        if let Some(e) = &self.model_error {
            ui.colored_label(Color32::from_rgb(220, 80, 60), e);
        }
        if let Some(e) = &self.dialog_error {
            ui.colored_label(Color32::from_rgb(220, 80, 60), e);
        }
        if self.exporting {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("Exporting to ONNX…");
            });
        }
        match &self.export_result {
            Some(Ok(done)) => {
                ui.colored_label(Color32::from_rgb(60, 160, 90), done);
            }
            Some(Err(e)) => {
                ui.colored_label(Color32::from_rgb(220, 80, 60), e);
            }
            None => {}
        }
        ui.label(RichText::new("Drop image files or folders anywhere on the window.").weak());
        ui.separator();
        // Only the rows in view are laid out, so a thousand dropped images cost a frame what a screenful does.
        let card_w = 330.0;
        let cols = ((ui.available_width() / (card_w + 12.0)).floor() as usize).max(1);
        let rows = self.cards.len().div_ceil(cols);
        // Each row is exactly this tall (show_rows adds the item spacing), 12 px apart.
        let row_h = CARD_H + 12.0 - ui.spacing().item_spacing.y;
        let waiting = self.loaded.is_none();
        let mut explain = Vec::new();
        let mut enlarge = None;
        egui::ScrollArea::vertical().auto_shrink([false, false]).show_rows(ui, row_h, rows, |ui, range| {
            for row in range {
                let cards = &self.cards[row * cols..((row + 1) * cols).min(self.cards.len())];
                let size = egui::vec2(ui.available_width(), row_h);
                ui.allocate_ui_with_layout(size, egui::Layout::left_to_right(egui::Align::Min), |ui| {
                    ui.set_min_height(row_h);
                    ui.spacing_mut().item_spacing.x = 12.0;
                    for card in cards {
                        match card_ui(ui, card, card_w, waiting, self.show_cam) {
                            Some(CardClick::Label(class)) => explain.push((card.id, card.path.clone(), class)),
                            Some(CardClick::Thumbnail(class)) => enlarge = Some((card.path.clone(), class)),
                            None => {}
                        }
                    }
                });
            }
        });
        for (id, path, class) in explain {
            worker.send(Command::Explain { id, path, class });
        }
        if let Some((path, class)) = enlarge {
            worker.send(Command::LargeView { path, class });
        }
        if let Some((title, tex)) = &self.large_view {
            let mut open = true;
            egui::Window::new(title.as_str()).id(egui::Id::unique("large-view")).open(&mut open).resizable(false).show(
                ui.ctx(),
                |ui| {
                    ui.add(egui::Image::new(tex).max_size(egui::vec2(480.0, 480.0)));
                },
            );
            if !open {
                self.large_view = None;
            }
        }
    }
}

/// A heat map as a texture (64 x 64, smoothed when drawn over a picture of any size), named `name`.
pub(super) fn heat_texture(ctx: &egui::Context, name: String, cam: &GradCam) -> TextureHandle {
    let layer = crate::explain::heat_layer(cam, 64, 64);
    let img = egui::ColorImage::from_rgba_unmultiplied([64, 64], layer.as_raw());
    ctx.load_texture(name, img, egui::TextureOptions::LINEAR)
}

/// Height of a card on screen: the thumbnail (112) and the top-5 bars, the frame's margins and stroke.
const CARD_H: f32 = 142.0;

/// What was clicked on a card while the heat maps show.
enum CardClick {
    /// A label: show where the model found that class.
    Label(usize),
    /// The thumbnail: a larger view with the shown class's map.
    Thumbnail(usize),
}

/// `waiting`: no model is loaded yet, so the card waits rather than classifies. `show_cam`: the heat map over
/// the thumbnail, the labels clickable to choose its class and the thumbnail to enlarge it.
fn card_ui(ui: &mut egui::Ui, card: &ImageCard, width: f32, waiting: bool, show_cam: bool) -> Option<CardClick> {
    let mut clicked = None;
    let name = card.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let failed = matches!(card.outcome, Some(Err(_)));
    let stroke =
        if failed { Color32::from_rgb(200, 70, 60) } else { ui.visuals().widgets.noninteractive.bg_stroke.color };
    egui::Frame::group(ui.style()).stroke(egui::Stroke::new(1.0, stroke)).inner_margin(8.0).show(ui, |ui| {
        ui.set_width(width);
        ui.set_height(CARD_H - 18.0);
        ui.horizontal_top(|ui| {
            match &card.texture {
                Some(t) => {
                    let r = ui.add(egui::Image::new(t).max_size(egui::vec2(112.0, 112.0)).corner_radius(4.0));
                    if let (true, Some((class, heat))) = (show_cam, &card.cam) {
                        let uv = egui::Rect::from_min_max(egui::pos2(0.0, 0.0), egui::pos2(1.0, 1.0));
                        ui.painter().image(heat.id(), r.rect, uv, Color32::WHITE);
                        let r = r.interact(egui::Sense::click()).on_hover_text("click for a larger view");
                        if r.clicked() {
                            clicked = Some(CardClick::Thumbnail(*class));
                        }
                    }
                }
                None => {
                    let (r, _) = ui.allocate_exact_size(egui::vec2(112.0, 112.0), egui::Sense::hover());
                    ui.painter().rect_filled(r, 4.0, ui.visuals().faint_bg_color);
                }
            }
            ui.vertical(|ui| {
                ui.label(RichText::new(&name).strong()).on_hover_text(card.path.display().to_string());
                match &card.outcome {
                    None if waiting => {
                        ui.label(RichText::new("waiting for a model…").weak());
                    }
                    None => {
                        ui.horizontal(|ui| {
                            ui.spinner();
                            ui.label("classifying…");
                        });
                    }
                    Some(Err(e)) => {
                        ui.colored_label(Color32::from_rgb(220, 80, 60), "Cannot classify");
                        ui.add(egui::Label::new(RichText::new(e).small()).truncate()).on_hover_text(e);
                    }
                    Some(Ok(top)) => {
                        let explained = card.cam.as_ref().map(|(c, _)| *c).filter(|_| show_cam);
                        for (rank, p) in top.iter().enumerate() {
                            let mark = if explained == Some(p.index) { "» " } else { "" };
                            let text = format!("{mark}{} {:.1}%", p.label.replace('_', " "), p.prob * 100.0);
                            let bar = egui::ProgressBar::new(p.prob).desired_width(190.0).text(if rank == 0 {
                                RichText::new(text).strong()
                            } else {
                                RichText::new(text)
                            });
                            let r = ui.add(bar);
                            if show_cam {
                                let r = r.interact(egui::Sense::click()).on_hover_text(format!(
                                    "class {} ({}): click to see where the model found it",
                                    p.index, p.label
                                ));
                                if r.clicked() {
                                    clicked = Some(CardClick::Label(p.index));
                                }
                            } else {
                                r.on_hover_text(format!("class {} ({})", p.index, p.label));
                            }
                        }
                    }
                }
            });
        });
    });
    clicked
}
