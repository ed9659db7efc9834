//! The PNG rasteriser: rectangles and lines filled on an RGB canvas, text drawn with the UI's own font (Ubuntu
//! Light, through `ab_glyph`), then encoded.

use super::{Anchor, Chart, ChartError, Rgb, Shape};
use ab_glyph::{Font, FontRef, PxScale, ScaleFont};

/// An RGB canvas the PNG writer paints into.
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<[f32; 3]>,
}

impl Canvas {
    fn blend(&mut self, x: i64, y: i64, c: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h || alpha <= 0.0 {
            return;
        }
        let p = &mut self.px[y as usize * self.w + x as usize];
        let a = alpha.min(1.0);
        for k in 0..3 {
            p[k] = p[k] * (1.0 - a) + c[k] as f32 * a;
        }
    }

    fn fill(&mut self, x: f32, y: f32, w: f32, h: f32, c: Rgb) {
        let (x0, y0) = (x.round() as i64, y.round() as i64);
        let (x1, y1) = ((x + w).round() as i64, (y + h).round() as i64);
        for yy in y0..y1 {
            for xx in x0..x1 {
                self.blend(xx, yy, c, 1.0);
            }
        }
    }
}

/// Width in pixels of `text` at `size`.
fn text_width(font: &FontRef<'_>, size: f32, text: &str) -> f32 {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut w = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = font.glyph_id(ch);
        if let Some(p) = prev {
            w += scaled.kern(p, id);
        }
        w += scaled.h_advance(id);
        prev = Some(id);
    }
    w
}

/// Draws `text` with its baseline starting at (`x`, `y`); `vertical` turns it to read bottom to top around
/// that point.
fn draw_text(
    canvas: &mut Canvas,
    font: &FontRef<'_>,
    (x, y): (f32, f32),
    size: f32,
    text: &str,
    c: Rgb,
    vertical: bool,
) {
    let scaled = font.as_scaled(PxScale::from(size));
    let mut pen = 0.0;
    let mut prev = None;
    for ch in text.chars() {
        let id = font.glyph_id(ch);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(PxScale::from(size), ab_glyph::point(pen, 0.0));
        pen += scaled.h_advance(id);
        prev = Some(id);
        let Some(outline) = font.outline_glyph(glyph) else { continue };
        let b = outline.px_bounds();
        outline.draw(|gx, gy, cov| {
            // (u, v): the pixel's offset from the pen origin, in the text's own frame.
            let (u, v) = (b.min.x + gx as f32, b.min.y + gy as f32);
            let (px, py) = if vertical { (x + v, y - u) } else { (x + u, y + v) };
            canvas.blend(px.round() as i64, py.round() as i64, c, cov);
        });
    }
}

/// The chart as a PNG file's bytes.
pub fn to_png(chart: &Chart) -> Result<Vec<u8>, ChartError> {
    let font = FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT).map_err(ChartError::Font)?;
    let (w, h) = (chart.width as usize, chart.height as usize);
    let mut canvas = Canvas { w, h, px: vec![[255.0; 3]; w * h] };
    for shape in &chart.shapes {
        match shape {
            Shape::Rect { x, y, w, h, fill } => canvas.fill(*x, *y, *w, *h, *fill),
            Shape::Line { x1, y1, x2, y2, stroke, width } => {
                let half = width / 2.0;
                let (x0, y0) = (x1.min(*x2) - half, y1.min(*y2) - half);
                canvas.fill(x0, y0, (x1 - x2).abs() + width, (y1 - y2).abs() + width, *stroke);
            }
            Shape::Polyline { points, stroke, width } => {
                // Each segment as a row of small squares, half a pixel apart.
                for seg in points.windows(2) {
                    let ([x0, y0], [x1, y1]) = (seg[0], seg[1]);
                    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) * 2.0).ceil().max(1.0) as usize;
                    for k in 0..=steps {
                        let t = k as f32 / steps as f32;
                        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
                        canvas.fill(x - width / 2.0, y - width / 2.0, *width, *width, *stroke);
                    }
                }
            }
            Shape::Text { x, y, size, anchor, text, fill, vertical } => {
                let tw = text_width(&font, *size, text);
                let shift = match anchor {
                    Anchor::Start => 0.0,
                    Anchor::Middle => tw / 2.0,
                    Anchor::End => tw,
                };
                let (tx, ty) = if *vertical { (*x, y + shift) } else { (x - shift, *y) };
                draw_text(&mut canvas, &font, (tx, ty), *size, text, *fill, *vertical);
            }
        }
    }
    let bytes: Vec<u8> = canvas.px.iter().flat_map(|p| p.map(|v| v.round().clamp(0.0, 255.0) as u8)).collect();
    let img = image::RgbImage::from_raw(w as u32, h as u32, bytes).ok_or(ChartError::Size)?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).map_err(ChartError::Png)?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::super::{latency_bars, test_row as row, DEVICE_COLOURS};
    use super::*;

    #[test]
    fn the_png_is_the_whole_chart_with_its_text_drawn() {
        let rows = vec![row("small_0.25", "cpu", 1, 0.44), row("small_0.25", "cuda", 1, 0.2)];
        let chart = latency_bars(&rows, "Latency", "caption");
        let png = to_png(&chart).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (chart.width, chart.height));
        // The title's row holds dark anti-aliased text pixels; the device colours are there.
        let dark_in_title = (0..img.width())
            .flat_map(|x| (12..36).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y)[0] < 120)
            .count();
        assert!(dark_in_title > 100, "{dark_in_title}");
        for c in &DEVICE_COLOURS[..2] {
            assert!(img.pixels().any(|p| p.0 == *c), "{c:?}");
        }
    }
}
