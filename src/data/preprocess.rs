//! From an image file to the network's input: decode (EXIF orientation honoured), RGB, resize to 32x32 with an
//! antialiased bilinear filter (as PIL's `resize(BILINEAR)` does), scale to [0, 1], normalise per channel.

use candle_core::{Device, Tensor};
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};
use std::path::Path;

/// File extensions picked up when a folder is classified.
pub(crate) const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "gif", "webp"];

pub(crate) fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// The largest image decoded, in pixels: an 8000 x 8000 photo. Checked from the file's header before decoding,
/// so a small file that claims a huge image (a PNG of a few dozen bytes whose header says 23,000 x 23,000 pixels)
/// costs nothing.
pub(crate) const MAX_PIXELS: u64 = 64_000_000;
/// The largest image file read.
pub(crate) const MAX_FILE_BYTES: u64 = 256 << 20;

/// Decodes an image file (format from its content), applying its EXIF orientation. Files over
/// [`MAX_FILE_BYTES`] and images over [`MAX_PIXELS`] are refused before decoding.
pub fn decode(path: &Path) -> Result<DynamicImage, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
    if meta.is_dir() {
        // A folder reaches here only when it could not be listed, or when it was named directly.
        return Err(match std::fs::read_dir(path) {
            Err(e) => format!("a folder that cannot be listed: {e}"),
            Ok(_) => "a folder, not an image".into(),
        });
    }
    let len = meta.len();
    if len > MAX_FILE_BYTES {
        return Err(format!(
            "{:.0} MB: larger than the {} MB image files this app reads",
            len as f64 / 1e6,
            MAX_FILE_BYTES >> 20
        ));
    }
    let reader = ImageReader::open(path)
        .map_err(|e| format!("cannot open: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    if reader.format().is_none() {
        return Err("not an image (unknown format)".into());
    }
    let mut decoder = reader.into_decoder().map_err(|e| format!("not a readable image: {e}"))?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!(
            "{w} x {h} pixels ({:.0} megapixels): larger than the {} megapixels this app decodes",
            f64::from(w) * f64::from(h) / 1e6,
            MAX_PIXELS / 1_000_000
        ));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| format!("not a readable image: {e}"))?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// RGB at `size`x`size`, antialiased bilinear (a triangle filter whose support grows with the scale factor).
/// An 8-bit RGB image is resized in place of a copy; other pixel types are converted once first.
pub(crate) fn resize_rgb(img: &DynamicImage, size: u32) -> RgbImage {
    let converted;
    let rgb = match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => {
            converted = other.to_rgb8();
            &converted
        }
    };
    if rgb.width() == size && rgb.height() == size {
        return rgb.clone();
    }
    image::imageops::resize(rgb, size, size, FilterType::Triangle)
}

/// CHW floats, normalised: (pixel / 255 - mean) / std.
pub(crate) fn normalise(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = (p[c] as f32 / 255.0 - mean[c]) / std[c];
        }
    }
    out
}

/// Stacks prepared images (each 3 x size x size) into one (n, 3, size, size) tensor.
pub fn batch(images: &[Vec<f32>], size: usize, device: &Device) -> candle_core::Result<Tensor> {
    let data: Vec<f32> = images.iter().flatten().copied().collect();
    Tensor::from_vec(data, (images.len(), 3, size, size), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_given_as_an_image_says_it_is_a_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(decode(dir.path()).unwrap_err(), "a folder, not an image");
    }

    #[test]
    fn normalise_is_channel_planar() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 0, image::Rgb([0, 255, 0]));
        let v = normalise(&img, [0.5; 3], [0.5; 3]);
        assert_eq!(v, vec![1.0, -1.0, -1.0, 1.0, -1.0, -1.0]);
    }

    #[test]
    fn downscaling_averages_like_an_antialiased_filter() {
        // A 64x64 checkerboard of 1-pixel squares becomes uniform grey at 32x32 only if the filter antialiases.
        let img =
            RgbImage::from_fn(64, 64, |x, y| if (x + y) % 2 == 0 { image::Rgb([255; 3]) } else { image::Rgb([0; 3]) });
        let small = resize_rgb(&DynamicImage::ImageRgb8(img), 32);
        for p in small.pixels() {
            assert!((p[0] as i32 - 128).abs() <= 20, "pixel {}", p[0]);
        }
    }
}
