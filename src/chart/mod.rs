//! Charts drawn the same way to SVG and PNG, independent of the window. The latency bar chart: a title, one
//! panel per batch size (milliseconds differ by orders of magnitude between batch 1 and 128), a group of bars
//! per variant with one bar per device (mean, with a +-std whisker), y-axis ticks and title with units,
//! variant names, a device legend, and a caption naming the machine and the date. Also top-1 against latency,
//! and a training run's curves.
//!
//! A chart is laid out once as a list of shapes in pixels ([`Shape`]); the SVG writer prints them and the PNG
//! rasteriser fills them (text with the UI's own font, Ubuntu Light, through `ab_glyph`). One job a file:
//! `layout.rs` (the charts and their axes and ticks), `svg.rs`, `png.rs` (the rasteriser and the font),
//! `csv.rs` (a run's history as CSV), `caption.rs` (the machine and the date); here the shapes, the error
//! and [`save`].

mod caption;
mod csv;
mod layout;
mod png;
mod svg;

pub use caption::{machine_caption, today};
pub use csv::history_csv;
pub use layout::{accuracy_vs_latency, latency_bars, line_panels, tick_step, training_curves, Curve};
pub use png::to_png;
pub use svg::to_svg;

use std::path::{Path, PathBuf};

/// An RGB colour.
pub type Rgb = [u8; 3];

/// Colours of the devices' bars, in order of first appearance.
pub(crate) const DEVICE_COLOURS: [Rgb; 4] = [[66, 133, 244], [234, 67, 53], [52, 168, 83], [251, 188, 5]];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

/// What the chart is made of, in pixels (y down).
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Rect {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
        fill: Rgb,
    },
    /// Horizontal or vertical line.
    Line {
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
        stroke: Rgb,
        width: f32,
    },
    /// A line through points (a curve).
    Polyline {
        points: Vec<[f32; 2]>,
        stroke: Rgb,
        width: f32,
    },
    /// Text with its baseline at `y`; `vertical` reads bottom to top.
    Text {
        x: f32,
        y: f32,
        size: f32,
        anchor: Anchor,
        text: String,
        fill: Rgb,
        vertical: bool,
    },
}

/// A laid-out chart.
pub struct Chart {
    pub width: u32,
    pub height: u32,
    pub shapes: Vec<Shape>,
}

/// Why a chart could not be drawn or written. Each message reads as the text the chart code gave before it had
/// a type (a path first where there is one); the underlying errors are part of the message and not a
/// `source`, so that `{e}` (the app) and anyhow's `{e:#}` (the command line) both print them once.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The embedded font did not parse.
    #[error("{0}")]
    Font(ab_glyph::InvalidFont),
    /// The rasterised pixels did not match the chart's width and height.
    #[error("the chart's pixels do not fit its size")]
    Size,
    /// The PNG encoder failed.
    #[error("{0}")]
    Png(image::ImageError),
    /// The file's extension is neither .png nor .svg.
    #[error("{}: the chart is written as .png or .svg", .0.display())]
    Extension(PathBuf),
    /// The file could not be written.
    #[error("{}: {error}", path.display())]
    Write { path: PathBuf, error: std::io::Error },
}

/// Writes the chart to `path` as SVG or PNG, by the file's extension.
pub fn save(chart: &Chart, path: &Path) -> Result<(), ChartError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let bytes = match ext.as_str() {
        "svg" => to_svg(chart).into_bytes(),
        "png" => to_png(chart)?,
        _ => return Err(ChartError::Extension(path.to_path_buf())),
    };
    crate::fsutil::write_atomic(path, &bytes).map_err(|error| ChartError::Write { path: path.to_path_buf(), error })
}

/// A row of latency results for the tests of the layouts and renderers.
#[cfg(test)]
fn test_row(variant: &str, device: &str, batch: usize, mean: f64) -> crate::bench::LatencyRow {
    crate::bench::LatencyRow {
        size: 32,
        variant: variant.into(),
        device: device.into(),
        batch,
        runs: 10,
        mean_ms: mean,
        std_ms: mean / 10.0,
        median_ms: mean,
        p10_ms: mean,
        p90_ms: mean,
        min_ms: mean,
        img_per_s: 1000.0 / mean,
        profile: None,
        samples_ms: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_names_the_file_in_its_errors() {
        let chart = latency_bars(&[test_row("small_0.25", "cpu", 1, 0.44)], "Latency", "caption");
        let dir = tempfile::tempdir().unwrap();
        let pdf = dir.path().join("chart.pdf");
        let e = save(&chart, &pdf).unwrap_err();
        assert_eq!(e.to_string(), format!("{}: the chart is written as .png or .svg", pdf.display()));
        // A file where the folder should be: the write fails.
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let svg = dir.path().join("file").join("chart.svg");
        let e = save(&chart, &svg).unwrap_err();
        assert!(matches!(e, ChartError::Write { .. }), "{e:?}");
        assert!(e.to_string().starts_with(&format!("{}: ", svg.display())), "{e}");
        save(&chart, &dir.path().join("chart.svg")).unwrap();
    }
}
