//! The SVG writer: each shape as one element.

use super::{Anchor, Chart, Rgb, Shape};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn hex(c: Rgb) -> String {
    format!("#{:02x}{:02x}{:02x}", c[0], c[1], c[2])
}

/// The chart as an SVG document.
pub fn to_svg(chart: &Chart) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" \
         font-family=\"Ubuntu, 'DejaVu Sans', sans-serif\">\n",
        w = chart.width,
        h = chart.height
    );
    for shape in &chart.shapes {
        match shape {
            Shape::Rect { x, y, w, h, fill } => {
                out.push_str(&format!(
                    "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{}\"/>\n",
                    hex(*fill)
                ))
            }
            Shape::Line { x1, y1, x2, y2, stroke, width } => out.push_str(&format!(
                "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{}\" stroke-width=\"{width}\"/>\n",
                hex(*stroke)
            )),
            Shape::Polyline { points, stroke, width } => {
                let pts: Vec<String> = points.iter().map(|[x, y]| format!("{x:.1},{y:.1}")).collect();
                out.push_str(&format!(
                    "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"{width}\"/>\n",
                    pts.join(" "),
                    hex(*stroke)
                ));
            }
            Shape::Text { x, y, size, anchor, text, fill, vertical } => {
                let anchor = match anchor {
                    Anchor::Start => "start",
                    Anchor::Middle => "middle",
                    Anchor::End => "end",
                };
                let rotate = if *vertical { format!(" transform=\"rotate(-90 {x:.1} {y:.1})\"") } else { String::new() };
                out.push_str(&format!(
                    "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"{size}\" text-anchor=\"{anchor}\" fill=\"{}\"{rotate}>{}</text>\n",
                    hex(*fill),
                    escape(text)
                ));
            }
        }
    }
    out.push_str("</svg>\n");
    out
}
