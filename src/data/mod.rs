//! Everything that turns outside bytes into tensors' inputs. This file: the data-set type both sources give
//! ([`DataSet`]), CIFAR-100 in the official binary layout (checked record by record), and augmented, normalised
//! batches prepared on a background thread so that training never waits for data. Beside it: the python layout
//! and its pickles ([`cifar_python`], [`pickle`]), fetching the data set ([`download`]), a folder of the user's
//! own class folders as a split data set ([`folder`]) decoded once per run ([`folder_load`]), decoding and
//! resizing user images ([`preprocess`]) and the class names with the normalisation constants ([`labels`]).

pub mod cifar_python;
pub mod download;
pub mod folder;
pub mod folder_load;
pub mod labels;
pub(crate) mod pickle;
pub mod preprocess;

pub use folder::{ClassCounts, FolderError, ImageFolder, Layout, Sample, SkipReason, Skipped, SplitOptions};

use crate::data::labels::{CIFAR100_FINE, CIFAR100_MEAN, CIFAR100_STD};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};

/// Pixels per image: 3 planes of 32 x 32.
pub(crate) const IMAGE_BYTES: usize = 3 * CIFAR_SIDE * CIFAR_SIDE;
/// CIFAR-100's images are 32 x 32.
pub(crate) const CIFAR_SIDE: usize = 32;
/// Binary record: coarse label byte, fine label byte, pixels.
pub(crate) const RECORD_BYTES: usize = 2 + IMAGE_BYTES;
pub(crate) const TRAIN_IMAGES: usize = 50_000;
pub(crate) const TEST_IMAGES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(
        "no CIFAR-100 data in {0}: expected train.bin and test.bin (binary version), or cifar-100-binary/ inside it"
    )]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is truncated or not CIFAR-100: {len} bytes is not a whole number of {RECORD_BYTES}-byte records (last record starts at byte {offset})")]
    Truncated { path: PathBuf, len: usize, offset: usize },
    #[error("{path}: {found} records, expected {expected}")]
    WrongCount { path: PathBuf, found: usize, expected: usize },
    #[error("{path}: {len} bytes, more than the {max} of a CIFAR-100 split file")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("{path}: record {index} at byte {offset} has {what} label {value}, out of range")]
    BadLabel { path: PathBuf, index: usize, offset: usize, what: &'static str, value: u8 },
}

/// One split: pixels in CHW byte order per image (`side` x `side`), and class labels.
#[derive(Clone)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u16>,
    /// CIFAR-100's coarse labels (empty for other data sets).
    pub coarse: Vec<u8>,
    /// Height and width of every image.
    pub side: usize,
    /// The file each image was decoded from, in split order (a folder of images; empty for CIFAR-100, whose
    /// images come from one file): what names an image the model got wrong.
    pub paths: Vec<std::path::PathBuf>,
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Split({} images)", self.len())
    }
}

impl Split {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Bytes of one image: 3 planes of `side` x `side`.
    pub fn image_bytes(&self) -> usize {
        3 * self.side * self.side
    }
    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.images[i * b..(i + 1) * b]
    }
    /// The first `n` images (for short runs and tests).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.images.truncate(n * self.image_bytes());
        self.labels.truncate(n);
        self.coarse.truncate(n);
        self.paths.truncate(n);
    }
    /// The file image `i` was decoded from, where the split knows it.
    pub fn path(&self, i: usize) -> Option<&std::path::Path> {
        self.paths.get(i).map(|p| p.as_path())
    }
}

/// A labelled image data set as training and evaluation see it: CIFAR-100, or a folder of the user's own class
/// folders ([`folder`]). The loop, the evaluation and the front ends take this type and never ask which it is;
/// what differs between the two is data here: the class names, the image size and how a training image is
/// cropped.
#[derive(Debug)]
pub struct DataSet {
    pub train: Split,
    /// The validation split (CIFAR-100's test set).
    pub test: Split,
    pub class_names: Vec<String>,
    pub root: PathBuf,
    /// How training images are cropped: CIFAR-100's padded shift, or a random resized crop for photos.
    pub crop: Crop,
    /// Files left out, with the reason (a folder's unreadable images; none for CIFAR-100).
    pub skipped: Vec<folder::Skipped>,
    /// What the user should know before training (few images in a class, imbalance).
    pub warnings: Vec<String>,
}

impl DataSet {
    /// CIFAR-100's splits and class names, as every CIFAR layout loads them.
    pub(crate) fn cifar(train: Split, test: Split, class_names: Vec<String>, root: PathBuf) -> DataSet {
        DataSet {
            train,
            test,
            class_names,
            root,
            crop: Crop::Shift { pad: 4 },
            skipped: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Height and width of its images.
    pub fn side(&self) -> usize {
        self.train.side
    }
}

/// The random crop of training-time augmentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Crop {
    /// The reference's CIFAR crop: the image zero-padded by `pad` pixels, a window of the original size at a
    /// random offset.
    Shift { pad: usize },
    /// Photos: a random region of `min_area`..1 of the image with an aspect ratio in 3/4..4/3, resized back to
    /// the full size (torchvision's RandomResizedCrop, with a larger smallest area because the images are small).
    Resized { min_area: f64 },
}

/// Finds the folder that holds `train.bin` / `test.bin`: `dir` itself or `dir/cifar-100-binary`.
pub fn locate(dir: &Path) -> Result<PathBuf, DataError> {
    for cand in [dir.to_path_buf(), dir.join("cifar-100-binary")] {
        if cand.join("train.bin").is_file() && cand.join("test.bin").is_file() {
            return Ok(cand);
        }
    }
    Err(DataError::NotFound(dir.to_path_buf()))
}

/// The data folders tried when the user names none: `$CIFAR100_DIR`, `data/`, and the shared development copy.
pub(crate) fn default_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(d) = std::env::var("CIFAR100_DIR") {
        v.push(PathBuf::from(d));
    }
    v.push(PathBuf::from("data"));
    // Where the app downloads it.
    if let Some(d) = crate::paths::user_data_dir() {
        v.push(d);
    }
    v.push(PathBuf::from("../shared/data/cifar-100-binary"));
    v
}

/// Loads both splits, checking every record before any training starts.
pub fn load(dir: &Path) -> Result<DataSet, DataError> {
    let root = locate(dir)?;
    let train = read_split(&root.join("train.bin"), Some(TRAIN_IMAGES))?;
    let test = read_split(&root.join("test.bin"), Some(TEST_IMAGES))?;
    let class_names = std::fs::read_to_string(root.join("fine_label_names.txt"))
        .ok()
        .map(|s| s.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect::<Vec<_>>())
        .filter(|v| v.len() == 100)
        .unwrap_or_else(|| CIFAR100_FINE.iter().map(|s| s.to_string()).collect());
    Ok(DataSet::cifar(train, test, class_names, root))
}

/// Reads one binary split file; `expected` records if given.
pub(crate) fn read_split(path: &Path, expected: Option<usize>) -> Result<Split, DataError> {
    // The size is checked before the file is read: a wrong file is refused without loading it.
    let len = std::fs::metadata(path).map_err(|source| DataError::Io { path: path.into(), source })?.len();
    let max = expected.unwrap_or(TRAIN_IMAGES) as u64 * RECORD_BYTES as u64;
    if len > max {
        // Whole records (another split's file, say) are counted; anything else is refused by its size.
        return Err(match len % RECORD_BYTES as u64 {
            0 => DataError::WrongCount {
                path: path.into(),
                found: (len / RECORD_BYTES as u64) as usize,
                expected: expected.unwrap_or(TRAIN_IMAGES),
            },
            _ => DataError::TooLarge { path: path.into(), len, max },
        });
    }
    let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.into(), source })?;
    parse_split(path, &bytes, expected)
}

pub fn parse_split(path: &Path, bytes: &[u8], expected: Option<usize>) -> Result<Split, DataError> {
    if bytes.is_empty() || !bytes.len().is_multiple_of(RECORD_BYTES) {
        return Err(DataError::Truncated {
            path: path.into(),
            len: bytes.len(),
            offset: bytes.len() / RECORD_BYTES * RECORD_BYTES,
        });
    }
    let n = bytes.len() / RECORD_BYTES;
    if let Some(e) = expected {
        if n != e {
            return Err(DataError::WrongCount { path: path.into(), found: n, expected: e });
        }
    }
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    let mut coarse = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let offset = i * RECORD_BYTES;
        let bad = |what, value| DataError::BadLabel { path: path.into(), index: i, offset, what, value };
        if rec[0] >= 20 {
            return Err(bad("coarse", rec[0]));
        }
        if rec[1] >= 100 {
            return Err(bad("fine", rec[1]));
        }
        coarse.push(rec[0]);
        labels.push(rec[1] as u16);
        images.extend_from_slice(&rec[2..]);
    }
    Ok(Split { images, labels, coarse, side: CIFAR_SIDE, paths: Vec::new() })
}

/// Per-channel mean and standard deviation of a split's pixels, scaled to [0, 1].
pub fn channel_stats(split: &Split) -> ([f64; 3], [f64; 3]) {
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    let plane = split.side * split.side;
    for i in 0..split.len() {
        let img = split.image(i);
        for c in 0..3 {
            let (mut s, mut q) = (0u64, 0u64);
            for &p in &img[c * plane..(c + 1) * plane] {
                s += p as u64;
                q += (p as u64) * (p as u64);
            }
            sum[c] += s as f64;
            sq[c] += q as f64;
        }
    }
    let n = (split.len() * plane) as f64;
    let mut mean = [0f64; 3];
    let mut std = [0f64; 3];
    for c in 0..3 {
        mean[c] = sum[c] / n / 255.0;
        std[c] = (sq[c] / n / 65025.0 - mean[c] * mean[c]).sqrt();
    }
    (mean, std)
}

/// Which training-time augmentations a run applies: the data set's random crop (its [`Crop`]: for CIFAR-100 the
/// reference's 32x32 window of the image zero-padded by 4 pixels) and a random horizontal flip; then
/// normalisation.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    pub crop: bool,
    pub flip: bool,
}

impl Default for Augment {
    fn default() -> Self {
        Augment { crop: true, flip: true }
    }
}

/// Writes one normalised CHW image (3 x `side` x `side` floats) into `out`: the window at (dy, dx) of a
/// zero-padded copy of `src`, optionally mirrored. Zero padding is applied before normalisation, as torchvision
/// does. With (0, 0) and no flip this is the plain image, as evaluation takes it.
pub fn prepare_image(src: &[u8], side: usize, dy: i32, dx: i32, flip: bool, out: &mut [f32]) {
    let (n, plane) = (side as i32, side * side);
    for c in 0..3 {
        let (m, s) = (CIFAR100_MEAN[c], CIFAR100_STD[c]);
        let zero = (0.0 - m) / s;
        for y in 0..n {
            let sy = y + dy;
            for x in 0..n {
                let sx0 = if flip { n - 1 - x } else { x };
                let sx = sx0 + dx;
                let v = if (0..n).contains(&sy) && (0..n).contains(&sx) {
                    (src[c * plane + (sy * n + sx) as usize] as f32 / 255.0 - m) / s
                } else {
                    zero
                };
                out[c * plane + (y * n + x) as usize] = v;
            }
        }
    }
}

/// A region of an image in pixels: top, left, height, width.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Region {
    pub y: f64,
    pub x: f64,
    pub h: f64,
    pub w: f64,
}

/// Draws the region of a random resized crop: an area of `min_area`..1 of the image, an aspect ratio (w / h)
/// log-uniform in 3/4..4/3, at a uniform place; the whole image when ten draws do not fit.
pub(crate) fn resized_crop_region(rng: &mut impl Rng, side: usize, min_area: f64) -> Region {
    let full = side as f64;
    for _ in 0..10 {
        let area = full * full * rng.random_range(min_area.clamp(0.01, 1.0)..=1.0);
        let ratio = rng.random_range((3f64 / 4.0).ln()..=(4f64 / 3.0).ln()).exp();
        let (w, h) = ((area * ratio).sqrt(), (area / ratio).sqrt());
        if w <= full && h <= full {
            return Region { y: rng.random_range(0.0..=full - h), x: rng.random_range(0.0..=full - w), h, w };
        }
    }
    Region { y: 0.0, x: 0.0, h: full, w: full }
}

/// Writes `region` of `src` resized to the full `side` x `side` (bilinear: the region is never larger than the
/// image, so nothing is shrunk and no antialiasing is needed), optionally mirrored, normalised, into `out`.
pub(crate) fn prepare_resized(src: &[u8], side: usize, r: Region, flip: bool, out: &mut [f32]) {
    let plane = side * side;
    let last = (side - 1) as f64;
    // Source coordinate of each output row and column, with its two neighbours and weight.
    let taps = |start: f64, len: f64| -> Vec<(usize, usize, f32)> {
        (0..side)
            .map(|i| {
                let s = (start + (i as f64 + 0.5) * len / side as f64 - 0.5).clamp(0.0, last);
                let i0 = s.floor() as usize;
                (i0, (i0 + 1).min(side - 1), (s - i0 as f64) as f32)
            })
            .collect()
    };
    let rows = taps(r.y, r.h);
    let mut cols = taps(r.x, r.w);
    if flip {
        cols.reverse();
    }
    for c in 0..3 {
        let (m, s) = (CIFAR100_MEAN[c], CIFAR100_STD[c]);
        let src = &src[c * plane..(c + 1) * plane];
        for (y, &(y0, y1, fy)) in rows.iter().enumerate() {
            for (x, &(x0, x1, fx)) in cols.iter().enumerate() {
                let p = |yy: usize, xx: usize| src[yy * side + xx] as f32;
                let top = p(y0, x0) + (p(y0, x1) - p(y0, x0)) * fx;
                let bottom = p(y1, x0) + (p(y1, x1) - p(y1, x0)) * fx;
                let v = top + (bottom - top) * fy;
                out[c * plane + y * side + x] = (v / 255.0 - m) / s;
            }
        }
    }
}

/// Where a training image is read from: shifted by (dy, dx) over zero padding, or a region resized to full size.
enum Window {
    Shift(i32, i32),
    Region(Region),
}

/// A prepared batch: normalised images (n * 3 * side * side) and labels.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub index: usize,
}

/// Produces the batches of one epoch on a background thread, `ahead` batches in advance: each image cropped by
/// `crop` (None: whole) and, with `flip`, mirrored at random.
///
/// The order and the augmentation come from `seed` alone, so an epoch is reproducible. With `drop_last`, the
/// final partial batch is skipped (the reference's training loader does this).
#[allow(clippy::too_many_arguments)]
pub(crate) fn epoch_batches(
    split: std::sync::Arc<Split>,
    batch: usize,
    crop: Option<Crop>,
    flip: bool,
    shuffle: bool,
    drop_last: bool,
    seed: u64,
    ahead: usize,
) -> Receiver<Batch> {
    let (tx, rx) = sync_channel(ahead.max(1));
    std::thread::Builder::new()
        .name("batches".into())
        .spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut order: Vec<usize> = (0..split.len()).collect();
            if shuffle {
                order.shuffle(&mut rng);
            }
            let chunks: Vec<&[usize]> = order.chunks(batch).filter(|c| !drop_last || c.len() == batch).collect();
            let (side, bytes) = (split.side, split.image_bytes());
            for (bi, idx) in chunks.into_iter().enumerate() {
                let mut images = vec![0f32; idx.len() * bytes];
                let mut labels = Vec::with_capacity(idx.len());
                for (j, &i) in idx.iter().enumerate() {
                    // The crop is drawn before the flip (the order the reference's CIFAR transforms draw in).
                    let window = match crop {
                        Some(Crop::Shift { pad }) => {
                            let p = pad as i32;
                            Window::Shift(rng.random_range(-p..=p), rng.random_range(-p..=p))
                        }
                        Some(Crop::Resized { min_area }) => {
                            Window::Region(resized_crop_region(&mut rng, side, min_area))
                        }
                        None => Window::Shift(0, 0),
                    };
                    let flip = flip && rng.random::<bool>();
                    let out = &mut images[j * bytes..(j + 1) * bytes];
                    match window {
                        Window::Shift(dy, dx) => prepare_image(split.image(i), side, dy, dx, flip, out),
                        Window::Region(r) => prepare_resized(split.image(i), side, r, flip, out),
                    }
                    labels.push(split.labels[i] as u32);
                }
                if tx.send(Batch { images, labels, index: bi }).is_err() {
                    return; // the trainer stopped listening
                }
            }
        })
        .expect("spawning the batch thread");
    rx
}

/// Number of batches an epoch yields.
pub(crate) fn batches_per_epoch(len: usize, batch: usize, drop_last: bool) -> usize {
    if drop_last {
        len / batch
    } else {
        len.div_ceil(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(coarse: u8, fine: u8, fill: u8) -> Vec<u8> {
        let mut r = vec![coarse, fine];
        r.extend(std::iter::repeat_n(fill, IMAGE_BYTES));
        r
    }

    #[test]
    fn a_split_file_larger_than_cifar_100_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.bin");
        // Sparse: one byte more than the test split, without writing (or reading) 30 MB.
        let max = TEST_IMAGES as u64 * RECORD_BYTES as u64;
        std::fs::File::create(&path).unwrap().set_len(max + 1).unwrap();
        let err = read_split(&path, Some(TEST_IMAGES)).unwrap_err().to_string();
        assert!(err.contains(&format!("{} bytes, more than the {max} of a CIFAR-100 split file", max + 1)), "{err}");
        // The training split where the test split belongs: counted, not merely too large.
        std::fs::File::create(&path).unwrap().set_len(TRAIN_IMAGES as u64 * RECORD_BYTES as u64).unwrap();
        let err = read_split(&path, Some(TEST_IMAGES)).unwrap_err().to_string();
        assert!(err.contains("50000 records, expected 10000"), "{err}");
    }

    #[test]
    fn parses_records_and_rejects_bad_ones() {
        let p = Path::new("x.bin");
        let mut bytes = record(3, 42, 7);
        bytes.extend(record(19, 99, 9));
        let s = parse_split(p, &bytes, Some(2)).unwrap();
        assert_eq!(s.labels, vec![42, 99]);
        assert_eq!(s.image(1)[0], 9);

        let err = parse_split(p, &bytes[..bytes.len() - 1], None).unwrap_err().to_string();
        assert!(err.contains("x.bin") && err.contains("3074"), "{err}");
        let mut bad = bytes.clone();
        bad[RECORD_BYTES + 1] = 100;
        let err = parse_split(p, &bad, None).unwrap_err().to_string();
        assert!(err.contains("record 1") && err.contains("byte 3074") && err.contains("fine label 100"), "{err}");
        let err = parse_split(p, &bytes, Some(3)).unwrap_err().to_string();
        assert!(err.contains("2 records, expected 3"), "{err}");
    }

    #[test]
    fn crop_and_flip_move_pixels_as_expected() {
        let mut src = vec![0u8; IMAGE_BYTES];
        src[0] = 255; // channel 0, (0, 0)
        let mut out = vec![0f32; IMAGE_BYTES];
        let hi = (1.0 - CIFAR100_MEAN[0]) / CIFAR100_STD[0];
        prepare_image(&src, 32, 0, 0, false, &mut out);
        assert!((out[0] - hi).abs() < 1e-6);
        prepare_image(&src, 32, 0, 0, true, &mut out);
        assert!((out[31] - hi).abs() < 1e-6);
        // Shifting the window by -2 rows and -3 columns moves the pixel to (2, 3).
        prepare_image(&src, 32, -2, -3, false, &mut out);
        assert!((out[2 * 32 + 3] - hi).abs() < 1e-6);
    }

    #[test]
    fn batches_are_reproducible_and_drop_the_partial_one() {
        let mut bytes = Vec::new();
        for i in 0..10u8 {
            bytes.extend(record(0, i, i * 20));
        }
        let split = std::sync::Arc::new(parse_split(Path::new("t"), &bytes, None).unwrap());
        let a: Vec<Batch> =
            epoch_batches(split.clone(), 4, Some(Crop::Shift { pad: 4 }), true, true, true, 5, 2).iter().collect();
        let b: Vec<Batch> =
            epoch_batches(split, 4, Some(Crop::Shift { pad: 4 }), true, true, true, 5, 2).iter().collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].labels, b[0].labels);
        assert_eq!(a[1].images, b[1].images);
        assert_eq!(batches_per_epoch(10, 4, true), 2);
        assert_eq!(batches_per_epoch(10, 4, false), 3);
    }

    #[test]
    fn a_resized_crop_of_the_whole_image_is_the_image_and_a_region_is_magnified() {
        // A 4 x 4 image whose pixel values grow left to right.
        let side = 4;
        let mut src = vec![0u8; 3 * side * side];
        for c in 0..3 {
            for y in 0..side {
                for x in 0..side {
                    src[c * 16 + y * side + x] = (x * 60) as u8;
                }
            }
        }
        let (mut a, mut b) = (vec![0f32; 48], vec![0f32; 48]);
        let whole = Region { y: 0.0, x: 0.0, h: 4.0, w: 4.0 };
        prepare_resized(&src, side, whole, false, &mut a);
        prepare_image(&src, side, 0, 0, false, &mut b);
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5), "{a:?} vs {b:?}");
        // Mirrored: the row reversed.
        prepare_resized(&src, side, whole, true, &mut a);
        assert!((a[0] - b[3]).abs() < 1e-5 && (a[3] - b[0]).abs() < 1e-5);
        // The left half magnified to the full width: the output's pixel centres fall at source x = -0.25 (read as
        // the edge), 0.25, 0.75 and 1.25 (PyTorch's `align_corners=False` convention), between values 0, 60, 120.
        prepare_resized(&src, side, Region { y: 0.0, x: 0.0, h: 4.0, w: 2.0 }, false, &mut a);
        let row: Vec<f32> = a[..4].iter().map(|v| (v * CIFAR100_STD[0] + CIFAR100_MEAN[0]) * 255.0).collect();
        for (got, want) in row.iter().zip([0.0, 15.0, 45.0, 75.0]) {
            assert!((got - want).abs() < 1e-3, "{row:?}");
        }
        // Drawn regions fit in the image and keep at least the smallest area.
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let r = resized_crop_region(&mut rng, 32, 0.35);
            assert!(r.y >= 0.0 && r.x >= 0.0 && r.y + r.h <= 32.0 + 1e-9 && r.x + r.w <= 32.0 + 1e-9, "{r:?}");
            assert!(r.h * r.w >= 0.35 * 1024.0 - 1e-6, "{r:?}");
        }
    }
}
