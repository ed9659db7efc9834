//! Latency tab: time the chosen variants on each device, see the spread as box plots beside a table, and
//! export the chart (PNG of what is on screen, SVG) and the numbers (CSV, JSON).

use super::worker::{Command, LatencyRequest, Worker};
use crate::arch::{ModelConfig, Variant};
use crate::bench::{self, LatencyRow};
use egui::{Color32, RichText};
use egui_plot::{BoxElem, BoxPlot, BoxSpread, Legend, Plot};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

pub const WIDTHS: [&str; 4] = ["0.25", "0.5", "0.75", "1.0"];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencyForm {
    pub small: [bool; 4],
    pub large: [bool; 4],
    pub batch1: bool,
    pub batch128: bool,
    pub runs: usize,
    pub warmup: usize,
    pub cpu: bool,
    pub cuda: bool,
}

impl Default for LatencyForm {
    fn default() -> Self {
        LatencyForm {
            small: [true, true, false, true],
            large: [true, true, false, true],
            batch1: true,
            batch128: false,
            runs: 100,
            warmup: 10,
            cpu: true,
            cuda: cfg!(feature = "cuda"),
        }
    }
}

impl LatencyForm {
    pub fn request(&self) -> Option<LatencyRequest> {
        let mut variants = Vec::new();
        for (variant, flags) in [(Variant::Small, self.small), (Variant::Large, self.large)] {
            for (w, on) in WIDTHS.iter().zip(flags) {
                if on {
                    variants.push(ModelConfig::new(variant, w.parse().ok()?));
                }
            }
        }
        let batches: Vec<usize> =
            [(1, self.batch1), (128, self.batch128)].iter().filter(|b| b.1).map(|b| b.0).collect();
        let devices: Vec<String> =
            [("cpu", self.cpu), ("cuda", self.cuda)].iter().filter(|d| d.1).map(|d| d.0.to_string()).collect();
        if variants.is_empty() || batches.is_empty() || devices.is_empty() || self.runs == 0 {
            return None;
        }
        Some(LatencyRequest { variants, devices, batches, runs: self.runs, warmup: self.warmup })
    }
}

#[derive(Default)]
pub struct LatencyTab {
    pub form: LatencyForm,
    pub rows: Vec<LatencyRow>,
    pub running: bool,
    pub progress: (usize, usize, String),
    pub message: String,
    pub export_dir: PathBuf,
    chart_rect: Option<egui::Rect>,
    screenshot: Option<Receiver<Arc<egui::ColorImage>>>,
    pending_png: Option<(PathBuf, egui::Rect, f32)>,
    /// The export folder dialog while it is open.
    folder_dialog: Option<super::dialog::Pending>,
}

impl LatencyTab {
    pub fn new(form: LatencyForm, export_dir: PathBuf) -> Self {
        LatencyTab { form, export_dir, ..Default::default() }
    }

    pub fn on_progress(&mut self, done: usize, total: usize, current: String) {
        self.progress = (done, total, current);
    }

    pub fn on_row(&mut self, row: LatencyRow) {
        self.rows.push(row);
    }

    pub fn on_done(&mut self, cancelled: bool, error: Option<String>) {
        self.running = false;
        self.message = match (cancelled, error) {
            (_, Some(e)) => format!("failed: {e}"),
            (true, _) => "cancelled".into(),
            _ => format!("done: {} measurements", self.rows.len()),
        };
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, worker: &Worker) {
        self.finish_png();
        egui::Panel::left("latency-form").resizable(false).exact_size(250.0).show(ui, |ui| {
            ui.add_enabled_ui(!self.running, |ui| form_ui(ui, &mut self.form));
            ui.separator();
            let req = self.form.request();
            ui.horizontal(|ui| {
                if ui.add_enabled(!self.running && req.is_some(), egui::Button::new("Run")).clicked() {
                    if let Some(r) = req.clone() {
                        self.rows.clear();
                        self.running = true;
                        self.message.clear();
                        worker.latency_cancel.store(false, std::sync::atomic::Ordering::SeqCst);
                        worker.send(Command::RunLatency(r));
                    }
                }
                if ui.add_enabled(self.running, egui::Button::new("Cancel")).clicked() {
                    worker.latency_cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            });
            if req.is_none() && !self.running {
                ui.colored_label(Color32::from_rgb(220, 80, 60), "choose at least one variant, batch size and device");
            }
            if self.running {
                let (done, total, cur) = &self.progress;
                ui.add(egui::ProgressBar::new(*done as f32 / (*total).max(1) as f32).text(format!("{done}/{total}")));
                ui.label(RichText::new(cur).small());
            }
            ui.separator();
            ui.strong("Export");
            ui.add_enabled_ui(!self.rows.is_empty(), |ui| {
                ui.horizontal_wrapped(|ui| {
                    if ui.button("PNG").on_hover_text("The chart as shown on screen").clicked() {
                        self.request_png(ui.ctx());
                    }
                    if ui.button("SVG").clicked() {
                        self.export("svg", svg_chart(&self.rows).into_bytes());
                    }
                    if ui.button("CSV").clicked() {
                        self.export("csv", bench::to_csv(&self.rows).into_bytes());
                    }
                    if ui.button("JSON").clicked() {
                        let json = serde_json::to_string_pretty(&self.rows).unwrap_or_default();
                        self.export("json", json.into_bytes());
                    }
                });
            });
            ui.label(RichText::new(format!("to {}", self.export_dir.display())).small().weak());
            if ui.add_enabled(self.folder_dialog.is_none(), egui::Button::new("Change folder…").small()).clicked() {
                self.folder_dialog = Some(super::dialog::Pending::folder(ui.ctx()));
            }
            if let Some(d) = self.folder_dialog.as_ref().and_then(super::dialog::Pending::poll) {
                self.folder_dialog = None;
                if let Some(d) = d.into_iter().next() {
                    self.export_dir = d;
                }
            }
            // Below the buttons, so that a message never moves them under the pointer.
            if !self.message.is_empty() {
                ui.label(&self.message);
            }
        });
        egui::CentralPanel::no_frame().show(ui, |ui| {
            let chart_h = (ui.available_height() * 0.6).max(200.0);
            let r = Plot::new("latency-chart")
                .height(chart_h)
                .legend(Legend::default())
                .y_axis_label("ms per batch (box: p10-p90, line: median, whiskers: min-max)")
                .x_axis_formatter({
                    let names: Vec<String> = self.variant_names();
                    move |mark, _| names.get(mark.value.round() as usize).cloned().unwrap_or_default()
                })
                .show(ui, |p| {
                    for (series, color) in self.series() {
                        p.box_plot(series.color(color));
                    }
                });
            self.chart_rect = Some(r.response.rect);
            ui.separator();
            table(ui, &self.rows);
        });
    }

    fn variant_names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.rows {
            let key = format!("{} b{}", r.variant, r.batch);
            if !v.contains(&key) {
                v.push(key);
            }
        }
        v
    }

    /// One box series per device, one box per variant and batch.
    fn series(&self) -> Vec<(BoxPlot, Color32)> {
        let names = self.variant_names();
        let mut devices: Vec<String> = self.rows.iter().map(|r| r.device.clone()).collect();
        devices.dedup();
        let colors = [Color32::from_rgb(66, 133, 244), Color32::from_rgb(52, 168, 83), Color32::from_rgb(234, 67, 53)];
        devices
            .iter()
            .enumerate()
            .map(|(di, dev)| {
                let offset = (di as f64 - (devices.len() as f64 - 1.0) / 2.0) * 0.3;
                let boxes = self
                    .rows
                    .iter()
                    .filter(|r| &r.device == dev)
                    .map(|r| {
                        let x =
                            names.iter().position(|n| *n == format!("{} b{}", r.variant, r.batch)).unwrap_or(0) as f64;
                        let max = r.samples_ms.iter().cloned().fold(r.p90_ms, f64::max);
                        BoxElem::new(x + offset, BoxSpread::new(r.min_ms, r.p10_ms, r.median_ms, r.p90_ms, max))
                            .box_width(0.25)
                            .name(format!("{} {} b{}", r.variant, r.device, r.batch))
                    })
                    .collect();
                (BoxPlot::new(dev.clone(), boxes), colors[di % colors.len()])
            })
            .collect()
    }

    fn stamp() -> String {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        format!("latency-{ms}")
    }

    fn export(&mut self, ext: &str, bytes: Vec<u8>) {
        let path = self.export_dir.join(format!("{}.{ext}", Self::stamp()));
        self.message = match crate::fsutil::write_atomic(&path, &bytes) {
            Ok(()) => format!("saved {}", path.display()),
            Err(e) => format!("could not save {}: {e}", path.display()),
        };
    }

    fn request_png(&mut self, ctx: &egui::Context) {
        let Some(rect) = self.chart_rect else { return };
        let (tx, rx) = channel();
        let repaint = ctx.clone();
        ctx.request_screenshot(move |img| {
            let _ = tx.send(img);
            repaint.request_repaint();
        });
        self.screenshot = Some(rx);
        self.pending_png = Some((self.export_dir.join(format!("{}.png", Self::stamp())), rect, ctx.pixels_per_point()));
    }

    /// Crops the screenshot to the chart and writes it, once the screenshot has arrived.
    fn finish_png(&mut self) {
        let Some(rx) = &self.screenshot else { return };
        let Ok(img) = rx.try_recv() else { return };
        self.screenshot = None;
        if let Some((path, rect, ppp)) = self.pending_png.take() {
            self.message = match save_cropped_png(&img, rect, ppp, &path) {
                Ok(()) => format!("saved {}", path.display()),
                Err(e) => format!("could not save {}: {e}", path.display()),
            };
        }
    }
}

fn save_cropped_png(img: &egui::ColorImage, rect: egui::Rect, ppp: f32, path: &Path) -> Result<(), String> {
    let [w, h] = img.size;
    let x0 = ((rect.min.x * ppp).max(0.0) as usize).min(w);
    let y0 = ((rect.min.y * ppp).max(0.0) as usize).min(h);
    let x1 = ((rect.max.x * ppp) as usize).clamp(x0, w);
    let y1 = ((rect.max.y * ppp) as usize).clamp(y0, h);
    let mut out = image::RgbaImage::new((x1 - x0).max(1) as u32, (y1 - y0).max(1) as u32);
    for y in y0..y1 {
        for x in x0..x1 {
            let c = img.pixels[y * w + x];
            out.put_pixel((x - x0) as u32, (y - y0) as u32, image::Rgba(c.to_array()));
        }
    }
    let mut bytes = Vec::new();
    out.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).map_err(|e| e.to_string())?;
    crate::fsutil::write_atomic(path, &bytes).map_err(|e| e.to_string())
}

fn form_ui(ui: &mut egui::Ui, f: &mut LatencyForm) {
    ui.strong("Variants");
    for (label, flags) in [("small", &mut f.small), ("large", &mut f.large)] {
        ui.horizontal(|ui| {
            ui.add_sized([40.0, 18.0], egui::Label::new(label));
            for (w, on) in WIDTHS.iter().zip(flags.iter_mut()) {
                ui.checkbox(on, *w).on_hover_text(format!("{label}_{w}"));
            }
        });
    }
    ui.strong("Batch sizes");
    ui.horizontal(|ui| {
        ui.checkbox(&mut f.batch1, "1");
        ui.checkbox(&mut f.batch128, "128");
    });
    ui.strong("Devices");
    ui.horizontal(|ui| {
        ui.checkbox(&mut f.cpu, "cpu");
        ui.add_enabled(cfg!(feature = "cuda"), egui::Checkbox::new(&mut f.cuda, "cuda"))
            .on_disabled_hover_text("this build has no CUDA support");
    });
    ui.horizontal(|ui| {
        let l = ui.label("Runs");
        ui.add(egui::DragValue::new(&mut f.runs).range(1..=10_000)).labelled_by(l.id);
        let l = ui.label("Warm-up");
        ui.add(egui::DragValue::new(&mut f.warmup).range(0..=1000)).labelled_by(l.id);
    });
}

fn table(ui: &mut egui::Ui, rows: &[LatencyRow]) {
    egui::ScrollArea::vertical().id_salt("latency-table").show(ui, |ui| {
        egui::Grid::new("latency-rows").striped(true).num_columns(9).show(ui, |ui| {
            for h in ["variant", "device", "batch", "median ms", "p10", "p90", "mean ± std", "min", "img/s"] {
                ui.strong(h);
            }
            ui.end_row();
            for r in rows {
                ui.label(&r.variant);
                ui.label(&r.device);
                ui.label(r.batch.to_string());
                ui.label(format!("{:.3}", r.median_ms));
                ui.label(format!("{:.3}", r.p10_ms));
                ui.label(format!("{:.3}", r.p90_ms));
                ui.label(format!("{:.3} ± {:.3}", r.mean_ms, r.std_ms));
                ui.label(format!("{:.3}", r.min_ms));
                ui.label(format!("{:.1}", r.img_per_s));
                ui.end_row();
            }
        });
    });
}

/// A self-contained SVG bar chart of the medians with p10-p90 error bars.
pub fn svg_chart(rows: &[LatencyRow]) -> String {
    let (w, h, left, bottom, top) = (900.0, 420.0, 70.0, 110.0, 30.0);
    let max = rows.iter().map(|r| r.p90_ms.max(r.median_ms)).fold(0.0f64, f64::max).max(1e-6) * 1.1;
    let plot_h = h - bottom - top;
    let slot = (w - left - 20.0) / rows.len().max(1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v / max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">MobileNetV3 latency (median, bars p10-p90), ms per batch</text>\n\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - bottom
    );
    for i in 0..=4 {
        let v = max * i as f64 / 4.0;
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v:.2}</text><line x1=\"{left}\" y1=\"{:.1}\" x2=\"{}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\n",
            left - 6.0,
            y(v) + 4.0,
            y(v),
            w - 20.0,
            y(v)
        ));
    }
    for (i, r) in rows.iter().enumerate() {
        let cx = left + slot * (i as f64 + 0.5);
        let bw = slot * 0.6;
        let color = if r.device == "cpu" { "#4285f4" } else { "#34a853" };
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bw:.1}\" height=\"{:.1}\" fill=\"{color}\"><title>{} {} b{}: {:.3} ms</title></rect>\n",
            cx - bw / 2.0,
            y(r.median_ms),
            (h - bottom) - y(r.median_ms),
            r.variant,
            r.device,
            r.batch,
            r.median_ms
        ));
        s.push_str(&format!(
            "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n",
            y(r.p10_ms),
            y(r.p90_ms)
        ));
        s.push_str(&format!(
            "<text transform=\"translate({cx:.1},{:.1}) rotate(-40)\" text-anchor=\"end\">{} {} b{}</text>\n",
            h - bottom + 14.0,
            r.variant,
            r.device,
            r.batch
        ));
    }
    s.push_str("</svg>\n");
    s
}
