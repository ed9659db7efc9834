//! Latency tab: time the chosen variants on each device, see the spread as box plots beside a table, and
//! export the chart (PNG of what is on screen, SVG) and the numbers (CSV, JSON).

use super::worker::{Command, LatencyRequest, Worker};
use crate::bench::{self, LatencyRow};
use crate::model::arch::{ModelConfig, Variant};
use egui::{Color32, RichText};
use egui_plot::{Bar, BarChart, BoxElem, BoxPlot, BoxSpread, Legend, Line, Plot, PlotPoints};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub(crate) const WIDTHS: [&str; 4] = ["0.25", "0.5", "0.75", "1.0"];

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
            cuda: false,
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

/// The latency tab's chart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChartView {
    /// Mean with a +-std whisker, a panel per batch size.
    #[default]
    Bars,
    /// Median, p10-p90 box, min-max whiskers.
    Boxes,
    /// Top-1 of the trained models and the reference against the measured batch-1 latency.
    Accuracy,
}

#[derive(Default)]
pub struct LatencyTab {
    pub form: LatencyForm,
    pub rows: Vec<LatencyRow>,
    pub running: bool,
    pub progress: (usize, usize, String),
    pub message: String,
    pub export_dir: PathBuf,
    /// What the chart area shows.
    pub view: ChartView,
    /// Keep the results of earlier runs: each later run's devices are shown as "cpu #2", "cpu #3", ...
    pub keep: bool,
    /// Runs started since the results were last cleared.
    runs_kept: usize,
    /// The latest batch-1 CPU median of each variant: from the settings (an earlier session) until this
    /// session times the variant again.
    batch1_cpu_ms: Vec<(String, f64)>,
    /// The export folder dialog while it is open.
    folder_dialog: Option<super::dialog::Pending>,
}

impl LatencyTab {
    pub fn new(form: LatencyForm, export_dir: PathBuf, remembered_ms: Vec<(String, f64)>) -> Self {
        let mut tab = LatencyTab { form, export_dir, ..Default::default() };
        for (variant, median) in remembered_ms {
            tab.remember(variant, median);
        }
        tab
    }

    /// Records `variant`'s latest batch-1 CPU median (a value that is not a time is dropped).
    fn remember(&mut self, variant: String, median_ms: f64) {
        if !(median_ms.is_finite() && median_ms > 0.0) {
            return;
        }
        match self.batch1_cpu_ms.iter_mut().find(|(v, _)| *v == variant) {
            Some(entry) => entry.1 = median_ms,
            None => self.batch1_cpu_ms.push((variant, median_ms)),
        }
    }

    pub(crate) fn on_progress(&mut self, done: usize, total: usize, current: String) {
        self.progress = (done, total, current);
    }

    pub(crate) fn on_row(&mut self, mut row: LatencyRow) {
        if row.batch == 1 && row.device == "cpu" {
            self.remember(row.variant.clone(), row.median_ms);
        }
        if self.runs_kept > 1 {
            row.device = format!("{} #{}", row.device, self.runs_kept);
        }
        self.rows.push(row);
    }

    pub(crate) fn on_done(&mut self, cancelled: bool, error: Option<String>) {
        self.running = false;
        self.message = match (cancelled, error) {
            (_, Some(e)) => format!("failed: {e}"),
            (true, _) => "cancelled".into(),
            _ => format!("done: {} measurements", self.rows.len()),
        };
    }

    /// The latest batch-1 CPU median of each variant, this session's or an earlier one's: what the model
    /// pickers show beside each model.
    pub(crate) fn cpu_batch1_ms(&self) -> Vec<(String, f64)> {
        self.batch1_cpu_ms.clone()
    }

    /// Top-1 against the measured batch-1 latency: the best model of each timed variant in `models`, and the
    /// reference's figure for it.
    fn accuracy_panel(&self, ui: &mut egui::Ui, models: &[super::worker::ModelEntry], height: f32) {
        let trained: Vec<(String, f64)> = models.iter().filter_map(|m| Some((m.name.clone(), m.top1?))).collect();
        let (ours, reference) = crate::zoo::accuracy_points(&trained, &self.cpu_batch1_ms());
        if reference.is_empty() {
            ui.label(RichText::new("Time batch 1 on the CPU to place the models by their latency.").weak());
            return;
        }
        ui.strong("Top-1 against batch-1 CPU latency (the picture to choose a model from)");
        let point = |p: &crate::zoo::ZooPoint| [p.latency_ms, p.top1];
        let x_max = reference.iter().chain(&ours).map(|p| p.latency_ms).fold(0.0f64, f64::max);
        Plot::new("accuracy-latency")
            .height(height)
            .legend(Legend::default().position(egui_plot::Corner::RightBottom))
            .include_x(0.0)
            .include_x(x_max * 1.15)
            .x_axis_label("batch-1 latency, ms (median, CPU)")
            .y_axis_label("top-1, %")
            .show(ui, |p| {
                let [a, b] = [crate::chart::DEVICE_COLOURS[0], crate::chart::DEVICE_COLOURS[1]];
                p.points(
                    egui_plot::Points::new("the reference's top-1", reference.iter().map(point).collect::<Vec<_>>())
                        .radius(5.0)
                        .filled(false)
                        .color(Color32::from_rgb(b[0], b[1], b[2])),
                );
                p.points(
                    egui_plot::Points::new("ours (trained here)", ours.iter().map(point).collect::<Vec<_>>())
                        .radius(5.0)
                        .color(Color32::from_rgb(a[0], a[1], a[2])),
                );
                // One name a variant, above the higher of its two points, on the side crate::zoo::label_places
                // gives it (neighbours in latency on opposite sides).
                for place in crate::zoo::label_places(&ours, &reference) {
                    let higher =
                        [place.ours, place.reference].into_iter().flatten().max_by(|a, b| a.top1.total_cmp(&b.top1));
                    let Some(z) = higher else { continue };
                    let (name, anchor) = if place.right {
                        (format!("  {}", z.variant), egui::Align2::LEFT_BOTTOM)
                    } else {
                        (format!("{}  ", z.variant), egui::Align2::RIGHT_BOTTOM)
                    };
                    p.text(egui_plot::Text::new("", [z.latency_ms, z.top1].into(), name).anchor(anchor));
                }
            });
    }

    pub(crate) fn ui(&mut self, ui: &mut egui::Ui, worker: &Worker, models: &[super::worker::ModelEntry]) {
        egui::Panel::left("latency-form").resizable(false).exact_size(250.0).show(ui, |ui| {
            ui.add_enabled_ui(!self.running, |ui| form_ui(ui, &mut self.form));
            ui.separator();
            let req = self.form.request();
            ui.horizontal(|ui| {
                if ui.add_enabled(!self.running && req.is_some(), egui::Button::new("Run")).clicked() {
                    if let Some(r) = req.clone() {
                        if !self.keep {
                            self.rows.clear();
                            self.runs_kept = 0;
                        }
                        self.runs_kept += 1;
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
            ui.checkbox(&mut self.keep, "Keep earlier results")
                .on_hover_text("A new run adds its bars beside the earlier ones (as \"cpu #2\", ...) to compare them");
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
                    if ui.button("PNG").on_hover_text("The bar chart, with title, axes, legend and caption").clicked() {
                        self.export_chart("png");
                    }
                    if ui.button("SVG").on_hover_text("The bar chart, with title, axes, legend and caption").clicked() {
                        self.export_chart("svg");
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
            if let Some(answer) = self.folder_dialog.as_ref().and_then(super::dialog::Pending::poll) {
                self.folder_dialog = None;
                match answer.map(|d| d.into_iter().next()) {
                    Ok(Some(d)) => self.export_dir = d,
                    Ok(None) => {}
                    Err(e) => self.message = e,
                }
            }
            // Below the buttons, so that a message never moves them under the pointer.
            if !self.message.is_empty() {
                ui.label(&self.message);
            }
        });
        egui::CentralPanel::no_frame().show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.selectable_value(&mut self.view, ChartView::Bars, "Bars: mean ± std");
                ui.selectable_value(&mut self.view, ChartView::Boxes, "Boxes: median, p10–p90, min–max");
                ui.selectable_value(&mut self.view, ChartView::Accuracy, "Accuracy against latency");
            });
            if self.view == ChartView::Accuracy {
                let h = (ui.available_height() * 0.62).max(200.0);
                self.accuracy_panel(ui, models, h);
            } else {
                // One panel per batch size: batch 1 and batch 128 differ by two orders of magnitude.
                let mut batches: Vec<usize> = self.rows.iter().map(|r| r.batch).collect();
                batches.sort_unstable();
                batches.dedup();
                let chart_h = ((ui.available_height() * 0.62) / batches.len().max(1) as f32).max(140.0);
                for &batch in &batches {
                    ui.strong(format!("batch {batch}"));
                    self.panel(ui, batch, chart_h);
                }
            }
            ui.separator();
            table(ui, &self.rows);
        });
    }

    /// Variants in the order they were measured.
    fn variants(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.rows {
            if !v.contains(&r.variant) {
                v.push(r.variant.clone());
            }
        }
        v
    }

    fn devices(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.rows {
            if !v.contains(&r.device) {
                v.push(r.device.clone());
            }
        }
        v
    }

    /// The chart of one batch size: a group per variant, a bar (or box) per device in the device's colour.
    fn panel(&self, ui: &mut egui::Ui, batch: usize, height: f32) {
        let variants = self.variants();
        let devices = self.devices();
        let boxes = self.view == ChartView::Boxes;
        let y_label = if boxes { "ms per batch (median, p10-p90, min-max)" } else { "ms per batch (mean ± std)" };
        Plot::new(("latency-chart", batch))
            .height(height)
            .legend(Legend::default())
            .y_axis_label(y_label)
            .include_y(0.0)
            .x_axis_formatter({
                let names = variants.clone();
                move |mark, _| {
                    let i = mark.value.round();
                    if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                        names.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                }
            })
            .show(ui, |p| {
                for (di, dev) in devices.iter().enumerate() {
                    let [r, g, b] = crate::chart::DEVICE_COLOURS[di % crate::chart::DEVICE_COLOURS.len()];
                    let color = Color32::from_rgb(r, g, b);
                    let offset = (di as f64 - (devices.len() as f64 - 1.0) / 2.0) * 0.3;
                    let rows: Vec<(f64, &LatencyRow)> = self
                        .rows
                        .iter()
                        .filter(|r| &r.device == dev && r.batch == batch)
                        .map(|r| (variants.iter().position(|v| *v == r.variant).unwrap_or(0) as f64 + offset, r))
                        .collect();
                    if boxes {
                        let boxes = rows
                            .iter()
                            .map(|(x, r)| {
                                let max = r.samples_ms.iter().cloned().fold(r.p90_ms, f64::max);
                                BoxElem::new(*x, BoxSpread::new(r.min_ms, r.p10_ms, r.median_ms, r.p90_ms, max))
                                    .box_width(0.25)
                                    .name(format!("{} {} b{}", r.variant, r.device, r.batch))
                            })
                            .collect();
                        p.box_plot(BoxPlot::new(dev.clone(), boxes).color(color));
                    } else {
                        let bars = rows
                            .iter()
                            .map(|(x, r)| {
                                Bar::new(*x, r.mean_ms).width(0.27).name(format!(
                                    "{} {} b{}: {:.3} ± {:.3} ms",
                                    r.variant, r.device, r.batch, r.mean_ms, r.std_ms
                                ))
                            })
                            .collect();
                        p.bar_chart(BarChart::new(dev.clone(), bars).color(color));
                        for (x, r) in &rows {
                            let (lo, hi) = ((r.mean_ms - r.std_ms).max(0.0), r.mean_ms + r.std_ms);
                            let whisker = vec![
                                [*x, lo],
                                [*x, hi],
                                [*x - 0.05, hi],
                                [*x + 0.05, hi],
                                [*x, hi],
                                [*x, lo],
                                [*x - 0.05, lo],
                                [*x + 0.05, lo],
                            ];
                            p.line(Line::new("", PlotPoints::from(whisker)).color(Color32::from_gray(200)).width(1.0));
                        }
                    }
                }
            });
    }

    /// Writes the bar chart as PNG or SVG into the export folder (the same renderer as `latency --plot`).
    fn export_chart(&mut self, ext: &str) {
        let caption = crate::chart::machine_caption(&self.devices(), &crate::chart::today());
        let chart = crate::chart::latency_bars(&self.rows, "MobileNetV3 inference latency", &caption);
        let path = self.export_dir.join(format!("{}.{ext}", Self::stamp()));
        self.message = match crate::chart::save(&chart, &path) {
            Ok(()) => format!("saved {}", path.display()),
            Err(e) => format!("could not save {e}"),
        };
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
        let cuda = crate::device::cuda_if_probed();
        if !matches!(cuda, Some(Ok(()))) {
            f.cuda = false;
        }
        ui.add_enabled(matches!(cuda, Some(Ok(()))), egui::Checkbox::new(&mut f.cuda, "cuda"))
            .on_disabled_hover_text(cuda_unavailable_text(&cuda));
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

/// Why the CUDA choice is greyed out, for its tooltip.
pub(crate) fn cuda_unavailable_text(probe: &Option<Result<(), String>>) -> String {
    match probe {
        None => "checking whether CUDA opens…".into(),
        Some(Err(e)) => e.clone(),
        Some(Ok(())) => String::new(),
    }
}
