//! A scanned folder of class folders decoded into the in-memory splits training takes: every image decoded
//! once per run (not once per epoch), resized to the run's input size as Classify resizes a dropped photo, and
//! kept as bytes. A file that does not decode is skipped and listed, never a crash.

use crate::data::folder::{FolderError, ImageFolder, Sample, SkipReason, Skipped};
use crate::data::{preprocess, Crop, DataSet, Split};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The most memory the decoded images of one run may take (both splits, 3 bytes a pixel; 6 GiB): 10,000 images at
/// 224 x 224 take 1.5 GB, so this admits about 40,000 of them, or 1.3 million at 32 x 32.
pub const MAX_DECODED_BYTES: u64 = 6 << 30;

/// The smallest area a random resized crop keeps of a photo: larger than torchvision's 8% because the images
/// are small (a 32-pixel image has few pixels to lose).
pub const MIN_CROP_AREA: f64 = 0.35;

/// The input size the last layer is trained at on a folder of photos unless told otherwise. Measured on two
/// sets of real photos (README, *Your own images*: flowers and ants/bees) with the CIFAR-trained backbones: 96
/// pixels beat 32 by 5-7 points of validation top-1, and 224 (at the shipped models' stride 1, 49 times the work
/// of 32) did no better than 96.
pub const DEFAULT_PHOTO_SIDE: usize = 96;

/// Input sizes a folder's images can be decoded at.
pub const MIN_SIDE: usize = 16;
pub const MAX_SIDE: usize = 512;

impl ImageFolder {
    /// Decodes both splits at `side` x `side` (in parallel), telling `progress` the images done and the total
    /// every few images; setting `cancel` stops with [`FolderError::Cancelled`]. Files that do not decode are
    /// added to the skipped list; a class left with no training image is an error.
    pub fn load(
        self,
        side: usize,
        progress: impl Fn(usize, usize) + Sync,
        cancel: &AtomicBool,
    ) -> Result<DataSet, FolderError> {
        if !(MIN_SIDE..=MAX_SIDE).contains(&side) {
            return Err(FolderError::BadImageSize(side));
        }
        let total = self.train.len() + self.val.len();
        within_budget(total, side)?;
        let done = AtomicUsize::new(0);
        let mut skipped = self.skipped;
        let train = decode_split(&self.train, side, total, &done, &progress, cancel, &mut skipped)?;
        let test = decode_split(&self.val, side, total, &done, &progress, cancel, &mut skipped)?;
        let mut counts = vec![0usize; self.classes.len()];
        for &l in &train.labels {
            counts[l as usize] += 1;
        }
        if let Some(class) = counts.iter().position(|&n| n == 0) {
            let name = self.classes[class].clone();
            let unreadable = skipped.iter().filter(|s| matches!(s.reason, SkipReason::Unreadable(_))).count();
            return Err(FolderError::EmptyClass { class: name, path: self.root.clone(), skipped: unreadable });
        }
        Ok(DataSet {
            train,
            test,
            class_names: self.classes,
            root: self.root,
            crop: Crop::Resized { min_area: MIN_CROP_AREA },
            skipped,
            warnings: self.warnings,
        })
    }
}

/// Refuses, before anything is decoded, a folder whose decoded pixels would exceed [`MAX_DECODED_BYTES`].
fn within_budget(images: usize, side: usize) -> Result<(), FolderError> {
    let bytes = images as u64 * 3 * (side * side) as u64;
    if bytes > MAX_DECODED_BYTES {
        return Err(FolderError::TooLargeToDecode { images, side, bytes, budget: MAX_DECODED_BYTES });
    }
    Ok(())
}

/// Decodes one split's samples; those that fail are appended to `skipped` with the decoder's words.
fn decode_split(
    samples: &[Sample],
    side: usize,
    total: usize,
    done: &AtomicUsize,
    progress: &(impl Fn(usize, usize) + Sync),
    cancel: &AtomicBool,
    skipped: &mut Vec<Skipped>,
) -> Result<Split, FolderError> {
    let decoded: Vec<Option<Result<Vec<u8>, String>>> = samples
        .par_iter()
        .map(|s| {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            let pixels = preprocess::decode(&s.path).map(|img| chw_bytes(&preprocess::resize_rgb(&img, side as u32)));
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(64) || n == total {
                progress(n, total);
            }
            Some(pixels)
        })
        .collect();
    if cancel.load(Ordering::Relaxed) {
        return Err(FolderError::Cancelled);
    }
    let mut split = Split { images: Vec::new(), labels: Vec::new(), coarse: Vec::new(), side, paths: Vec::new() };
    split.images.reserve(samples.len() * 3 * side * side);
    for (sample, result) in samples.iter().zip(decoded) {
        match result {
            Some(Ok(pixels)) => {
                split.images.extend_from_slice(&pixels);
                split.labels.push(sample.class as u16);
                split.paths.push(sample.path.clone());
            }
            Some(Err(why)) => skipped.push(Skipped { path: sample.path.clone(), reason: SkipReason::Unreadable(why) }),
            None => return Err(FolderError::Cancelled),
        }
    }
    Ok(split)
}

/// An RGB image as three planes of bytes (the layout of CIFAR-100's records).
fn chw_bytes(img: &image::RgbImage) -> Vec<u8> {
    let plane = (img.width() * img.height()) as usize;
    let mut out = vec![0u8; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = p[c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::SplitOptions;
    use std::path::Path;

    fn save(path: &Path, rgb: [u8; 3]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(40, 30, image::Rgb(rgb)).save(path).unwrap();
    }

    fn scan(root: &Path) -> ImageFolder {
        ImageFolder::scan(root, &SplitOptions::default(), |_| {}, &AtomicBool::new(false)).unwrap()
    }

    #[test]
    fn images_are_decoded_once_at_the_input_size_and_broken_ones_are_skipped_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            save(&dir.path().join(format!("red/{i}.png")), [250, 0, 0]);
            save(&dir.path().join(format!("blue/{i}.png")), [0, 0, 250]);
        }
        std::fs::write(dir.path().join("red/broken.jpg"), b"not a jpeg at all").unwrap();
        let calls = AtomicUsize::new(0);
        let ds = scan(dir.path())
            .load(
                24,
                |done, total| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    assert!(done <= total && total == 11);
                },
                &AtomicBool::new(false),
            )
            .unwrap();
        assert!(calls.load(Ordering::Relaxed) >= 1);
        assert_eq!(ds.class_names, vec!["blue", "red"]);
        assert_eq!((ds.side(), ds.train.len() + ds.test.len()), (24, 10));
        assert_eq!(ds.train.images.len(), ds.train.len() * 3 * 24 * 24);
        // CHW bytes: a blue image has its third plane full and its first empty.
        let i = ds.train.labels.iter().position(|&l| l == 0).unwrap();
        let img = ds.train.image(i);
        assert_eq!((img[0], img[2 * 576 + 100]), (0, 250));
        let broken: Vec<&Skipped> = ds.skipped.iter().filter(|s| s.path.ends_with("red/broken.jpg")).collect();
        assert_eq!(broken.len(), 1, "{:?}", ds.skipped);
        assert!(
            matches!(&broken[0].reason, SkipReason::Unreadable(why) if why.contains("not a readable image") || why.contains("not an image")),
            "{:?}",
            broken[0]
        );
        assert!(matches!(ds.crop, Crop::Resized { .. }));
    }

    #[test]
    fn a_class_whose_every_image_is_broken_is_an_error_and_sizes_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bad")).unwrap();
        for i in 0..3 {
            save(&dir.path().join(format!("ok/{i}.png")), [9, 9, 9]);
            std::fs::write(dir.path().join(format!("bad/{i}.png")), b"\x89PNG truncated").unwrap();
        }
        let err = scan(dir.path()).load(32, |_, _| {}, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(&err, FolderError::EmptyClass { class, .. } if class == "bad"), "{err}");
        let err = scan(dir.path()).load(8, |_, _| {}, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, FolderError::BadImageSize(8)), "{err}");
        let err = scan(dir.path()).load(32, |_, _| {}, &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(err, FolderError::Cancelled), "{err}");
    }

    #[test]
    fn the_memory_budget_admits_about_40_000_images_at_224_and_refuses_more_with_the_figure() {
        assert!(within_budget(40_000, 224).is_ok());
        assert!(within_budget(1_300_000, 32).is_ok());
        let err = within_budget(43_000, 224).unwrap_err().to_string();
        assert!(err.contains("43000 images at 224 x 224 take 6.5 GB decoded, more than the 6.4 GB budget"), "{err}");
    }
}
