//! The Train tab's plots: loss per step, loss per epoch, test accuracy and the learning rate, for the live run
//! with the checked past runs overlaid.

use super::RunView;
use crate::train::{EpochRecord, History};
use egui::Color32;
use egui_plot::{Legend, Line, Plot, PlotPoints};

/// The four plots: the live run's curves, and each overlaid past run's beside them. Each shows y = 0, so a
/// constant curve (a learning rate that never changes, 100% from the first epoch) sits in a sensible range
/// instead of one egui_plot centres on it.
pub(super) fn curves(ui: &mut egui::Ui, run: &RunView, overlays: &[&History]) {
    let h = ((ui.available_height() - 40.0) / 2.0).max(120.0);
    let w = ((ui.available_width() - 16.0) / 2.0).max(200.0);
    let epoch_line = |name: String, recs: &[EpochRecord], f: &dyn Fn(&EpochRecord) -> f64| {
        Line::new(name, PlotPoints::from(recs.iter().map(|r| [r.epoch as f64, f(r)]).collect::<Vec<_>>()))
    };
    egui::Grid::new("curves").num_columns(2).spacing([16.0, 8.0]).show(ui, |ui| {
        ui.vertical(|ui| {
            ui.strong("Training loss per step");
            epoch_plot("step-loss", h, w).legend(Legend::default()).show(ui, |p| {
                p.line(Line::new("loss", PlotPoints::from(run.step_loss.clone())).color(Color32::from_gray(150)));
                p.line(Line::new("smoothed", PlotPoints::from(run.smoothed.clone())).width(2.0));
                for o in overlays {
                    p.line(Line::new(format!("{} (smoothed)", o.name), PlotPoints::from(smoothed_steps(o))));
                }
            });
        });
        ui.vertical(|ui| {
            ui.strong("Loss per epoch");
            epoch_plot("epoch-loss", h, w).legend(Legend::default()).show(ui, |p| {
                p.line(epoch_line("train".into(), &run.epochs, &|r| r.train_loss));
                p.line(epoch_line("validation".into(), &run.epochs, &|r| r.val_loss));
                for o in overlays {
                    p.line(epoch_line(format!("{} validation", o.name), &o.epochs, &|r| r.val_loss));
                }
            });
        });
        ui.end_row();
        ui.vertical(|ui| {
            ui.strong("Test accuracy per epoch (%)");
            // The highest point shown, so that the top of the curves is never cut off.
            let top = run
                .epochs
                .iter()
                .map(|r| r.top5)
                .chain(overlays.iter().flat_map(|o| o.epochs.iter().map(|r| r.top1)))
                .fold(0.0f64, f64::max)
                * 100.0;
            epoch_plot("accuracy", h, w).legend(Legend::default()).include_y((top + 3.0).min(101.0)).show(ui, |p| {
                p.line(epoch_line("top-1".into(), &run.epochs, &|r| r.top1 * 100.0));
                p.line(epoch_line("top-5".into(), &run.epochs, &|r| r.top5 * 100.0));
                for o in overlays {
                    p.line(epoch_line(format!("{} top-1", o.name), &o.epochs, &|r| r.top1 * 100.0));
                }
            });
        });
        ui.vertical(|ui| {
            ui.strong("Learning rate");
            epoch_plot("lr", h, w).show(ui, |p| {
                p.line(Line::new("lr", PlotPoints::from(run.lr.clone())));
                for o in overlays {
                    let pts: Vec<[f64; 2]> = o.epochs.iter().map(|r| [r.epoch as f64 - 1.0, r.lr]).collect();
                    p.line(Line::new(o.name.clone(), PlotPoints::from(pts)));
                }
            });
        });
        ui.end_row();
    });
}

/// A plot of `h` x `w` against epochs that always shows y = 0.
fn epoch_plot(id: &str, h: f32, w: f32) -> Plot<'static> {
    Plot::new(id).height(h).width(w).x_axis_label("epoch").include_y(0.0)
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
