//! Laying out the charts as shapes: the latency bars, top-1 against latency, line panels (a training run's
//! curves), and the axes, grid and ticks they share.

use super::{today, Anchor, Chart, Rgb, Shape, DEVICE_COLOURS};
use crate::bench::LatencyRow;

const WIDTH: f32 = 1000.0;
const PANEL_H: f32 = 280.0;
const TOP: f32 = 70.0;
const LEFT: f32 = 80.0;
const RIGHT: f32 = 30.0;
const BOTTOM: f32 = 40.0;
const INK: Rgb = [30, 30, 30];
const GRID: Rgb = [225, 225, 225];

/// Horizontal text in the ink colour.
fn text(x: f32, y: f32, size: f32, anchor: Anchor, text: impl Into<String>) -> Shape {
    Shape::Text { x, y, size, anchor, text: text.into(), fill: INK, vertical: false }
}

/// A chart's white background and its title.
fn start(title: &str, height: f32) -> Vec<Shape> {
    vec![
        Shape::Rect { x: 0.0, y: 0.0, w: WIDTH, h: height, fill: [255, 255, 255] },
        text(WIDTH / 2.0, 32.0, 22.0, Anchor::Middle, title),
    ]
}

/// The x and y axis lines of a plot area.
fn axes(s: &mut Vec<Shape>, left: f32, right: f32, top: f32, bottom: f32) {
    s.push(Shape::Line { x1: left, y1: bottom, x2: right, y2: bottom, stroke: INK, width: 1.5 });
    s.push(Shape::Line { x1: left, y1: top, x2: left, y2: bottom, stroke: INK, width: 1.5 });
}

/// Adds the caption at the bottom left and wraps the shapes up.
fn finish(mut s: Vec<Shape>, height: f32, caption: &str) -> Chart {
    s.push(Shape::Text {
        x: 12.0,
        y: height - 10.0,
        size: 12.0,
        anchor: Anchor::Start,
        text: caption.to_string(),
        fill: [90, 90, 90],
        vertical: false,
    });
    Chart { width: WIDTH as u32, height: height as u32, shapes: s }
}

/// "Nice" tick step (1, 2 or 5 times a power of ten) for about `n` ticks up to `max`.
pub fn tick_step(max: f64, n: usize) -> f64 {
    let raw = (max / n.max(1) as f64).max(1e-12);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The tick values from `lo` to `hi` (inclusive, within rounding) every `step`.
fn ticks(lo: f64, hi: f64, step: f64) -> impl Iterator<Item = f64> {
    let n = ((hi - lo) / step + 0.01).floor().max(0.0) as usize;
    (0..=n).map(move |i| lo + i as f64 * step)
}

/// Horizontal grid lines with their labels left of the plot area, at each tick of the y axis.
fn y_grid(
    s: &mut Vec<Shape>,
    (lo, hi, step): (f64, f64, f64),
    left: f32,
    right: f32,
    size: f32,
    yp: impl Fn(f64) -> f32,
) {
    for v in ticks(lo, hi, step) {
        let y = yp(v);
        s.push(Shape::Line { x1: left, y1: y, x2: right, y2: y, stroke: GRID, width: 1.0 });
        s.push(text(left - size * 0.6, y + size * 0.35, size, Anchor::End, tick_label(v, step)));
    }
}

fn tick_label(v: f64, step: f64) -> String {
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    format!("{v:.decimals$}")
}

/// Lays out the bar chart of `rows`: one panel per batch size, one group per variant (in first-seen order),
/// one bar per device.
pub fn latency_bars(rows: &[LatencyRow], title: &str, caption: &str) -> Chart {
    let mut variants: Vec<&str> = Vec::new();
    let mut devices: Vec<&str> = Vec::new();
    let mut batches: Vec<usize> = Vec::new();
    for r in rows {
        if !variants.contains(&r.variant.as_str()) {
            variants.push(&r.variant);
        }
        if !devices.contains(&r.device.as_str()) {
            devices.push(&r.device);
        }
        if !batches.contains(&r.batch) {
            batches.push(r.batch);
        }
    }
    batches.sort_unstable();
    let height = TOP + PANEL_H * batches.len().max(1) as f32 + 30.0;
    let mut s = start(title, height);
    // Legend: a swatch and a name per device, top right.
    let mut lx = WIDTH - RIGHT;
    for (di, dev) in devices.iter().enumerate().rev() {
        let label_w = 9.0 * dev.len() as f32 + 8.0;
        lx -= label_w;
        s.push(text(lx, 58.0, 15.0, Anchor::Start, *dev));
        lx -= 18.0;
        s.push(Shape::Rect { x: lx, y: 46.0, w: 13.0, h: 13.0, fill: DEVICE_COLOURS[di % DEVICE_COLOURS.len()] });
        lx -= 14.0;
    }
    for (pi, &batch) in batches.iter().enumerate() {
        let top = TOP + pi as f32 * PANEL_H + 24.0;
        let bottom = TOP + (pi + 1) as f32 * PANEL_H - BOTTOM;
        let (left, right) = (LEFT, WIDTH - RIGHT);
        let of_batch: Vec<&LatencyRow> = rows.iter().filter(|r| r.batch == batch).collect();
        let max = of_batch.iter().map(|r| r.mean_ms + r.std_ms).fold(0.0f64, f64::max).max(1e-6);
        let step = tick_step(max * 1.05, 5);
        let y_max = (max * 1.05 / step).ceil() * step;
        let y_of = |v: f64| bottom - (v / y_max) as f32 * (bottom - top);
        s.push(text(
            left,
            top - 8.0,
            16.0,
            Anchor::Start,
            format!("batch {batch}: mean time per batch, whiskers +-1 std"),
        ));
        y_grid(&mut s, (0.0, y_max, step), left, right, 13.0, y_of);
        s.push(Shape::Text {
            x: 24.0,
            y: (top + bottom) / 2.0,
            size: 14.0,
            anchor: Anchor::Middle,
            text: "milliseconds".into(),
            fill: INK,
            vertical: true,
        });
        let group_w = (right - left) / variants.len().max(1) as f32;
        let bar_w = group_w * 0.7 / devices.len().max(1) as f32;
        for (vi, variant) in variants.iter().enumerate() {
            let gx = left + vi as f32 * group_w + group_w * 0.15;
            for (di, dev) in devices.iter().enumerate() {
                let Some(r) = of_batch.iter().find(|r| r.variant == *variant && r.device == *dev) else { continue };
                let x = gx + di as f32 * bar_w;
                let y = y_of(r.mean_ms);
                let fill = DEVICE_COLOURS[di % DEVICE_COLOURS.len()];
                s.push(Shape::Rect { x, y, w: bar_w * 0.9, h: bottom - y, fill });
                let cx = x + bar_w * 0.45;
                let (lo, hi) = (y_of((r.mean_ms - r.std_ms).max(0.0)), y_of(r.mean_ms + r.std_ms));
                s.push(Shape::Line { x1: cx, y1: hi, x2: cx, y2: lo, stroke: INK, width: 1.5 });
                s.push(Shape::Line { x1: cx - 5.0, y1: hi, x2: cx + 5.0, y2: hi, stroke: INK, width: 1.5 });
                s.push(Shape::Line { x1: cx - 5.0, y1: lo, x2: cx + 5.0, y2: lo, stroke: INK, width: 1.5 });
            }
            s.push(text(left + (vi as f32 + 0.5) * group_w, bottom + 20.0, 14.0, Anchor::Middle, *variant));
        }
        axes(&mut s, left, right, top, bottom);
    }
    finish(s, height, caption)
}

/// Top-1 against batch-1 latency: our models (filled squares) and the reference's figures for the same
/// variants (hollow squares), each labelled with its variant.
pub fn accuracy_vs_latency(ours: &[crate::zoo::ZooPoint], reference: &[crate::zoo::ZooPoint], caption: &str) -> Chart {
    let height = 620.0;
    let mut s = start("Top-1 on CIFAR-100 against batch-1 CPU latency", height);
    let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT - 180.0, TOP + 20.0, height - 90.0);
    let all = ours.iter().chain(reference);
    let x_max = all.clone().map(|p| p.latency_ms).fold(0.0f64, f64::max).max(1e-3);
    let (y_min, y_max) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.top1), hi.max(p.top1)));
    let (y_min, y_max) = if y_min.is_finite() { (y_min, y_max) } else { (0.0, 100.0) };
    let x_step = tick_step(x_max * 1.1, 6);
    let x_hi = (x_max * 1.1 / x_step).ceil() * x_step;
    let y_step = tick_step((y_max - y_min).max(1.0) * 1.3, 5);
    let (y_lo, y_hi) =
        (((y_min - y_step * 0.5) / y_step).floor() * y_step, ((y_max + y_step * 0.5) / y_step).ceil() * y_step);
    let xp = |x: f64| left + (x / x_hi) as f32 * (right - left);
    let yp = |y: f64| bottom - ((y - y_lo) / (y_hi - y_lo)) as f32 * (bottom - top);
    y_grid(&mut s, (y_lo, y_hi, y_step), left, right, 13.0, yp);
    for v in ticks(0.0, x_hi, x_step) {
        s.push(Shape::Line { x1: xp(v), y1: top, x2: xp(v), y2: bottom, stroke: GRID, width: 1.0 });
        s.push(text(xp(v), bottom + 20.0, 13.0, Anchor::Middle, tick_label(v, x_step)));
    }
    s.push(text((left + right) / 2.0, bottom + 44.0, 14.0, Anchor::Middle, "batch-1 latency, ms (median, CPU)"));
    s.push(Shape::Text {
        x: 24.0,
        y: (top + bottom) / 2.0,
        size: 14.0,
        anchor: Anchor::Middle,
        text: "top-1 accuracy, %".into(),
        fill: INK,
        vertical: true,
    });
    axes(&mut s, left, right, top, bottom);
    let [ours_c, ref_c] = [DEVICE_COLOURS[0], DEVICE_COLOURS[1]];
    for p in reference {
        let (x, y) = (xp(p.latency_ms), yp(p.top1));
        s.push(Shape::Rect { x: x - 6.0, y: y - 6.0, w: 12.0, h: 12.0, fill: ref_c });
        s.push(Shape::Rect { x: x - 4.0, y: y - 4.0, w: 8.0, h: 8.0, fill: [255, 255, 255] });
    }
    for p in ours {
        let (x, y) = (xp(p.latency_ms), yp(p.top1));
        s.push(Shape::Rect { x: x - 6.0, y: y - 6.0, w: 12.0, h: 12.0, fill: ours_c });
    }
    for place in crate::zoo::label_places(ours, reference) {
        let above = [(place.ours, place.ours_above, 13.0), (place.reference, !place.ours_above, 12.0)];
        for (p, above, size) in above.into_iter().filter_map(|(p, above, size)| Some((p?, above, size))) {
            let (x, y) = (xp(p.latency_ms), yp(p.top1));
            let y = if above { y - 9.0 } else { y + 19.0 };
            let label = format!("{} {:.2}%", p.variant, p.top1);
            s.push(if place.right {
                text(x + 9.0, y, size, Anchor::Start, label)
            } else {
                text(x - 9.0, y, size, Anchor::End, label)
            });
        }
    }
    for (i, (name, c, hollow)) in
        [("ours (trained here)", ours_c, false), ("the reference's top-1", ref_c, true)].iter().enumerate()
    {
        let y = top + 10.0 + 22.0 * i as f32;
        s.push(Shape::Rect { x: right + 16.0, y, w: 12.0, h: 12.0, fill: *c });
        if *hollow {
            s.push(Shape::Rect { x: right + 18.0, y: y + 2.0, w: 8.0, h: 8.0, fill: [255, 255, 255] });
        }
        s.push(text(right + 34.0, y + 11.0, 13.0, Anchor::Start, *name));
    }
    finish(s, height, caption)
}

/// One curve of a line panel.
pub struct Curve {
    pub name: String,
    pub points: Vec<[f64; 2]>,
}

/// Lays out line panels in a grid of two columns: each panel a title, its curves (a colour each, named in
/// the panel's legend), ticks on both axes and the x axis title.
pub fn line_panels(title: &str, caption: &str, panels: &[(String, String, Vec<Curve>)]) -> Chart {
    const PW: f32 = 500.0;
    const PH: f32 = 300.0;
    let rows = panels.len().div_ceil(2).max(1);
    let height = TOP + PH * rows as f32 + 30.0;
    let mut s = start(title, height);
    for (i, (name, x_title, curves)) in panels.iter().enumerate() {
        let (ox, oy) = ((i % 2) as f32 * PW, TOP + (i / 2) as f32 * PH);
        let (left, right, top, bottom) = (ox + 70.0, ox + PW - 20.0, oy + 30.0, oy + PH - 50.0);
        let all = curves.iter().flat_map(|c| c.points.iter()).filter(|p| p[0].is_finite() && p[1].is_finite());
        let (mut x_max, mut y_min, mut y_max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for p in all {
            x_max = x_max.max(p[0]);
            y_min = y_min.min(p[1]);
            y_max = y_max.max(p[1]);
        }
        if !y_min.is_finite() {
            (y_min, y_max) = (0.0, 1.0);
        }
        let y_step = tick_step((y_max - y_min).max(1e-9) * 1.1, 4);
        let (y_lo, y_hi) = ((y_min / y_step).floor() * y_step, (y_max / y_step).ceil() * y_step + 1e-12);
        let x_step = tick_step(x_max.max(1e-9), 5);
        let x_hi = (x_max / x_step).ceil().max(1.0) * x_step;
        let xp = |x: f64| left + (x / x_hi) as f32 * (right - left);
        let yp = |y: f64| bottom - ((y - y_lo) / (y_hi - y_lo)) as f32 * (bottom - top);
        s.push(text(left, top - 10.0, 15.0, Anchor::Start, name));
        y_grid(&mut s, (y_lo, y_hi, y_step), left, right, 12.0, yp);
        for v in ticks(0.0, x_hi, x_step) {
            s.push(text(xp(v), bottom + 16.0, 12.0, Anchor::Middle, tick_label(v, x_step)));
        }
        s.push(text((left + right) / 2.0, bottom + 34.0, 13.0, Anchor::Middle, x_title));
        for (ci, c) in curves.iter().enumerate() {
            let colour = DEVICE_COLOURS[ci % DEVICE_COLOURS.len()];
            let pts: Vec<[f32; 2]> = c
                .points
                .iter()
                .filter(|p| p[0].is_finite() && p[1].is_finite())
                .map(|p| [xp(p[0]), yp(p[1])])
                .collect();
            s.push(Shape::Polyline { points: pts, stroke: colour, width: 1.5 });
            let ly = top + 14.0 + 16.0 * ci as f32;
            s.push(Shape::Rect { x: right - 110.0, y: ly - 9.0, w: 10.0, h: 10.0, fill: colour });
            s.push(text(right - 96.0, ly, 12.0, Anchor::Start, c.name.as_str()));
        }
        axes(&mut s, left, right, top, bottom);
    }
    finish(s, height, caption)
}

/// The four curves of a training run (loss per step, loss per epoch, accuracy, learning rate).
pub fn training_curves(h: &crate::train::History) -> Chart {
    let per_epoch = |f: &dyn Fn(&crate::train::EpochRecord) -> f64| -> Vec<[f64; 2]> {
        h.epochs.iter().map(|r| [r.epoch as f64, f(r)]).collect()
    };
    let steps = h.step_losses.len().max(1) as f64;
    let epochs = h.epochs.len().max(1) as f64;
    // Smoothed step loss (exponential, 0.95), against epochs.
    let mut smooth = Vec::new();
    let mut m = None;
    for (i, &l) in h.step_losses.iter().enumerate() {
        if !l.is_finite() {
            continue;
        }
        let v = match m {
            None => f64::from(l),
            Some(p) => 0.95 * p + 0.05 * f64::from(l),
        };
        m = Some(v);
        smooth.push([(i + 1) as f64 / steps * epochs, v]);
    }
    let panels = vec![
        (
            "Training loss per step (smoothed)".to_string(),
            "epoch".to_string(),
            vec![Curve { name: "train".into(), points: smooth }],
        ),
        (
            "Loss per epoch".to_string(),
            "epoch".to_string(),
            vec![
                Curve { name: "train".into(), points: per_epoch(&|r| r.train_loss) },
                Curve { name: "validation".into(), points: per_epoch(&|r| r.val_loss) },
            ],
        ),
        (
            "Test accuracy per epoch (%)".to_string(),
            "epoch".to_string(),
            vec![
                Curve { name: "top-1".into(), points: per_epoch(&|r| r.top1 * 100.0) },
                Curve { name: "top-5".into(), points: per_epoch(&|r| r.top5 * 100.0) },
            ],
        ),
        (
            "Learning rate".to_string(),
            "epoch".to_string(),
            vec![Curve { name: "lr".into(), points: per_epoch(&|r| r.lr) }],
        ),
    ];
    let best = h.best().map(|b| format!(", best top-1 {:.2}% (epoch {})", b.top1 * 100.0, b.epoch)).unwrap_or_default();
    line_panels(
        &format!("Training run {}", h.name),
        &format!(
            "{} epochs of {}, {}{best}; MobileNetV3 Studio, {}",
            h.epochs.len(),
            h.config.epochs,
            h.status,
            today()
        ),
        &panels,
    )
}

#[cfg(test)]
mod tests {
    use super::super::{test_row as row, to_png, to_svg};
    use super::*;

    #[test]
    fn ticks_are_nice_numbers() {
        assert_eq!(tick_step(11.6, 5), 5.0);
        assert_eq!(tick_step(0.9, 5), 0.2);
        assert_eq!(tick_step(380.0, 5), 100.0);
        assert_eq!(tick_label(0.4, 0.2), "0.4");
        assert_eq!(tick_label(100.0, 50.0), "100");
    }

    #[test]
    fn one_panel_per_batch_size_with_names_ticks_and_legend() {
        let rows = vec![
            row("small_0.25", "cpu", 1, 0.44),
            row("large_1.0", "cpu", 1, 4.9),
            row("small_0.25", "cpu", 128, 19.0),
            row("large_1.0", "cpu", 128, 380.0),
        ];
        let chart = latency_bars(&rows, "Latency", "Measured on a CPU, 2026-12-01");
        let texts: Vec<&str> = chart
            .shapes
            .iter()
            .filter_map(|s| if let Shape::Text { text, .. } = s { Some(text.as_str()) } else { None })
            .collect();
        for want in ["Latency", "milliseconds", "small_0.25", "large_1.0", "cpu", "Measured on a CPU, 2026-12-01"] {
            assert!(texts.contains(&want), "{want} missing from {texts:?}");
        }
        assert!(texts.iter().any(|t| t.starts_with("batch 1:")) && texts.iter().any(|t| t.starts_with("batch 128:")));
        // Round ticks past the highest whisker: 418 ms at batch 128, 5.4 ms at batch 1.
        assert!(texts.contains(&"500") && texts.contains(&"6"), "{texts:?}");
        let bars =
            chart.shapes.iter().filter(|s| matches!(s, Shape::Rect { fill, .. } if *fill == DEVICE_COLOURS[0])).count();
        assert_eq!(bars, 4 + 1, "four bars and the legend swatch");
        let svg = to_svg(&chart);
        assert!(svg.starts_with("<svg") && svg.contains(">large_1.0</text>") && svg.contains("rotate(-90"));
    }

    #[test]
    fn a_runs_curves_from_the_shipped_history() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("trained_models/mobilenetv3_small_0.25.history.json");
        let h = crate::train::History::load(&path).unwrap();
        let chart = training_curves(&h);
        let svg = to_svg(&chart);
        for want in [
            "Training run mobilenetv3_small_0.25",
            "Loss per epoch",
            "validation",
            "top-5",
            "Learning rate",
            "<polyline",
        ] {
            assert!(svg.contains(want), "{want}");
        }
        let img = image::load_from_memory(&to_png(&chart).unwrap()).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (chart.width, chart.height));
        assert!(img.pixels().any(|p| p.0 == DEVICE_COLOURS[1]), "the validation curve is drawn");
    }

    #[test]
    fn the_accuracy_chart_places_ours_and_the_reference_with_labels() {
        use crate::zoo::ZooPoint;
        let p = |v: &str, ms: f64, t: f64| ZooPoint { variant: v.into(), latency_ms: ms, top1: t };
        let chart = accuracy_vs_latency(
            &[p("small_0.25", 0.44, 60.18)],
            &[p("small_0.25", 0.44, 60.13), p("large_1.0", 4.9, 71.75)],
            "c",
        );
        let svg = to_svg(&chart);
        for want in [
            "small_0.25 60.18%",
            "small_0.25 60.13%",
            "large_1.0 71.75%",
            "batch-1 latency, ms",
            "top-1 accuracy, %",
            "ours (trained here)",
        ] {
            assert!(svg.contains(want), "{want}");
        }
    }

    /// With the figures of the zoo as it stands (ours a little above or below the reference's, two pairs of
    /// variants within 0.15 ms of each other), no label runs into another.
    #[test]
    fn the_accuracy_chart_labels_do_not_overlap() {
        use crate::zoo::{ZooPoint, REFERENCE_TOP1};
        // Each variant's batch-1 latency (ms) and our shipped top-1.
        let ours_at = [
            ("small_0.25", 0.40, 60.18),
            ("small_0.5", 0.85, 66.59),
            ("small_1.0", 1.44, 69.91),
            ("large_0.25", 0.80, 65.36),
            ("large_0.5", 1.57, 69.79),
            ("large_1.0", 3.80, 72.62),
        ];
        let p = |v: &str, ms: f64, t: f64| ZooPoint { variant: v.into(), latency_ms: ms, top1: t };
        let ours: Vec<ZooPoint> = ours_at.iter().map(|&(v, ms, t)| p(v, ms, t)).collect();
        let reference: Vec<ZooPoint> =
            ours_at.iter().map(|&(v, ms, _)| p(v, ms, REFERENCE_TOP1.iter().find(|r| r.0 == v).unwrap().1)).collect();
        let chart = accuracy_vs_latency(&ours, &reference, "c");
        // Each label's box, with a generous 0.6 em a character (the font's digits and letters are narrower).
        let boxes: Vec<(String, [f32; 4])> = chart
            .shapes
            .iter()
            .filter_map(|s| match s {
                Shape::Text { x, y, size, anchor, text, vertical: false, .. } if text.contains('_') => {
                    let w = 0.6 * size * text.chars().count() as f32;
                    let x0 = match anchor {
                        Anchor::Start => *x,
                        Anchor::Middle => x - w / 2.0,
                        Anchor::End => x - w,
                    };
                    Some((text.clone(), [x0, y - size, x0 + w, *y]))
                }
                _ => None,
            })
            .collect();
        assert_eq!(boxes.len(), 12);
        for (i, (a, ba)) in boxes.iter().enumerate() {
            for (b, bb) in &boxes[i + 1..] {
                let apart = ba[2] <= bb[0] || bb[2] <= ba[0] || ba[3] <= bb[1] || bb[3] <= ba[1];
                assert!(apart, "{a} {ba:?} overlaps {b} {bb:?}");
            }
        }
    }
}
