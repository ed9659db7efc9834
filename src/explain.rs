//! Where a model looked: Grad-CAM maps ([`crate::exec::inference::InferencePlan::grad_cam`]) drawn over the
//! image they explain, for `classify --cam` and the Classify tab.

use crate::exec::inference::GradCam;
use image::{DynamicImage, RgbImage, RgbaImage};

/// The map upsampled (bilinear, cell centres at the cell's middle, as a resized image has them) to `w` x `h`
/// and scaled so that the map's largest value is 1 (an all-zero map stays zero).
pub fn upsample(cam: &GradCam, w: u32, h: u32) -> Vec<f32> {
    let s = cam.side;
    let max = cam.map.iter().fold(0f32, |m, v| m.max(*v));
    let scale = if max > 0.0 { 1.0 / max } else { 0.0 };
    let at = |x: usize, y: usize| cam.map[y.min(s - 1) * s + x.min(s - 1)] * scale;
    let mut out = Vec::with_capacity((w * h) as usize);
    for py in 0..h {
        let fy = ((py as f32 + 0.5) * s as f32 / h as f32 - 0.5).max(0.0);
        let (y0, ty) = (fy.floor() as usize, fy.fract());
        for px in 0..w {
            let fx = ((px as f32 + 0.5) * s as f32 / w as f32 - 0.5).max(0.0);
            let (x0, tx) = (fx.floor() as usize, fx.fract());
            let top = at(x0, y0) * (1.0 - tx) + at(x0 + 1, y0) * tx;
            let bottom = at(x0, y0 + 1) * (1.0 - tx) + at(x0 + 1, y0 + 1) * tx;
            out.push(top * (1.0 - ty) + bottom * ty);
        }
    }
    out
}

/// The colour of a heat value in [0, 1]: blue (none) through cyan, green and yellow to red (most): the middle
/// three quarters of the "jet" scale, whose ends (dark blue, dark red) read as shadows on a photo.
pub fn heat_colour(t: f32) -> [u8; 3] {
    let t = 0.125 + 0.75 * t.clamp(0.0, 1.0);
    let c = |v: f32| (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    [c(1.5 - (4.0 * t - 3.0).abs()), c(1.5 - (4.0 * t - 2.0).abs()), c(1.5 - (4.0 * t - 1.0).abs())]
}

/// The heat map alone as RGBA, transparent where the map is cold, for laying over a picture of any size.
pub fn heat_layer(cam: &GradCam, w: u32, h: u32) -> RgbaImage {
    let values = upsample(cam, w, h);
    RgbaImage::from_fn(w, h, |x, y| {
        let t = values[(y * w + x) as usize];
        let [r, g, b] = heat_colour(t);
        image::Rgba([r, g, b, (255.0 * (0.2 + 0.45 * t)).round() as u8])
    })
}

/// `img` (at most `max_side` pixels on its longer side) with the map laid over it. The model saw the image
/// squeezed to a square, so the square map is stretched back over the whole picture.
pub fn overlay(img: &DynamicImage, cam: &GradCam, max_side: u32) -> RgbImage {
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let rgb = if w.max(h) > max_side {
        let f = max_side as f32 / w.max(h) as f32;
        let (nw, nh) = (((w as f32 * f).round() as u32).max(1), ((h as f32 * f).round() as u32).max(1));
        image::imageops::resize(&rgb, nw, nh, image::imageops::FilterType::Triangle)
    } else {
        rgb
    };
    let (w, h) = rgb.dimensions();
    let layer = heat_layer(cam, w, h);
    RgbImage::from_fn(w, h, |x, y| {
        let (p, q) = (rgb.get_pixel(x, y), layer.get_pixel(x, y));
        let a = q[3] as f32 / 255.0;
        image::Rgb([0, 1, 2].map(|i| (p[i] as f32 * (1.0 - a) + q[i] as f32 * a).round() as u8))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(map: Vec<f32>) -> GradCam {
        let side = (map.len() as f64).sqrt() as usize;
        GradCam { class: 0, logits: vec![0.0], side, map }
    }

    #[test]
    fn upsampling_keeps_the_peak_where_it_was_and_scales_it_to_one() {
        let mut map = vec![0.0; 16];
        map[4 + 3] = 2.0; // row 1, column 3
        let up = upsample(&cam(map), 40, 40);
        let i = up.iter().enumerate().fold(0, |b, (i, v)| if *v > up[b] { i } else { b });
        let (x, y) = (i % 40, i / 40);
        assert!((30..40).contains(&x) && (10..20).contains(&y), "peak at ({x}, {y})");
        assert!(up[i] > 0.9, "the peak is scaled towards 1: {}", up[i]);
        assert!(up.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(upsample(&cam(vec![0.0; 4]), 3, 3).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn hot_is_red_and_cold_is_blue_in_the_overlay() {
        assert_eq!(heat_colour(1.0), [255, 0, 0]);
        assert_eq!(heat_colour(0.0), [0, 0, 255]);
        let grey = DynamicImage::ImageRgb8(RgbImage::from_pixel(600, 300, image::Rgb([128, 128, 128])));
        let out = overlay(&grey, &cam(vec![0.0, 1.0, 0.0, 0.0]), 400);
        assert_eq!(out.dimensions(), (400, 200));
        let (hot, cold) = (out.get_pixel(399, 0), out.get_pixel(0, 199));
        assert!(hot[0] > hot[2] + 60, "top right should be red: {hot:?}");
        assert!(cold[2] > cold[0] + 20, "bottom left should be blue: {cold:?}");
    }
}
