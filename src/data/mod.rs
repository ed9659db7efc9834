//! Everything that turns outside bytes into tensors' inputs. This file: CIFAR-100 in the official binary
//! layout (checked record by record), and augmented, normalised batches prepared on a background thread so that
//! training never waits for data. Beside it: the python layout and its pickles ([`cifar_python`], [`pickle`]),
//! fetching the data set ([`download`]), a folder of the user's own class folders as a split data set
//! ([`folder`]), decoding and resizing user images ([`preprocess`]) and the class names with the normalisation
//! constants ([`labels`]).

pub mod cifar_python;
pub mod download;
pub mod folder;
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
pub(crate) const IMAGE_BYTES: usize = 3 * 32 * 32;
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

/// One split: pixels in CHW byte order per image, and fine labels.
#[derive(Clone)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub coarse: Vec<u8>,
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
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }
    /// The first `n` images (for short runs and tests).
    pub fn truncate(&mut self, n: usize) {
        let n = n.min(self.len());
        self.images.truncate(n * IMAGE_BYTES);
        self.labels.truncate(n);
        self.coarse.truncate(n);
    }
}

pub struct Cifar100 {
    pub train: Split,
    pub test: Split,
    pub class_names: Vec<String>,
    pub root: PathBuf,
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
pub fn load(dir: &Path) -> Result<Cifar100, DataError> {
    let root = locate(dir)?;
    let train = read_split(&root.join("train.bin"), Some(TRAIN_IMAGES))?;
    let test = read_split(&root.join("test.bin"), Some(TEST_IMAGES))?;
    let class_names = std::fs::read_to_string(root.join("fine_label_names.txt"))
        .ok()
        .map(|s| s.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect::<Vec<_>>())
        .filter(|v| v.len() == 100)
        .unwrap_or_else(|| CIFAR100_FINE.iter().map(|s| s.to_string()).collect());
    Ok(Cifar100 { train, test, class_names, root })
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
        labels.push(rec[1]);
        images.extend_from_slice(&rec[2..]);
    }
    Ok(Split { images, labels, coarse })
}

/// Per-channel mean and standard deviation of a split's pixels, scaled to [0, 1].
pub fn channel_stats(split: &Split) -> ([f64; 3], [f64; 3]) {
    let mut sum = [0f64; 3];
    let mut sq = [0f64; 3];
    for i in 0..split.len() {
        let img = split.image(i);
        for c in 0..3 {
            let (mut s, mut q) = (0u64, 0u64);
            for &p in &img[c * 1024..(c + 1) * 1024] {
                s += p as u64;
                q += (p as u64) * (p as u64);
            }
            sum[c] += s as f64;
            sq[c] += q as f64;
        }
    }
    let n = (split.len() * 1024) as f64;
    let mut mean = [0f64; 3];
    let mut std = [0f64; 3];
    for c in 0..3 {
        mean[c] = sum[c] / n / 255.0;
        std[c] = (sq[c] / n / 65025.0 - mean[c] * mean[c]).sqrt();
    }
    (mean, std)
}

/// Training-time augmentation, as in the reference: random 32x32 crop of the image zero-padded by 4 pixels,
/// random horizontal flip; then normalisation.
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

impl Augment {
    pub(crate) const NONE: Augment = Augment { crop: false, flip: false };
}

/// Writes one normalised CHW image into `out` (3 * 32 * 32 floats), cropped at (dy, dx) in -4..=4 from a
/// zero-padded copy and optionally mirrored. Zero padding is applied before normalisation, as torchvision does.
pub fn prepare_image(src: &[u8], dy: i32, dx: i32, flip: bool, out: &mut [f32]) {
    for c in 0..3 {
        let (m, s) = (CIFAR100_MEAN[c], CIFAR100_STD[c]);
        let zero = (0.0 - m) / s;
        for y in 0..32i32 {
            let sy = y + dy;
            for x in 0..32i32 {
                let sx0 = if flip { 31 - x } else { x };
                let sx = sx0 + dx;
                let v = if (0..32).contains(&sy) && (0..32).contains(&sx) {
                    (src[c * 1024 + (sy * 32 + sx) as usize] as f32 / 255.0 - m) / s
                } else {
                    zero
                };
                out[c * 1024 + (y * 32 + x) as usize] = v;
            }
        }
    }
}

/// A prepared batch: normalised images (n * 3 * 32 * 32) and labels.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub index: usize,
}

/// Produces the batches of one epoch on a background thread, `ahead` batches in advance.
///
/// The order and the augmentation come from `seed` alone, so an epoch is reproducible. With `drop_last`, the
/// final partial batch is skipped (the reference's training loader does this).
pub(crate) fn epoch_batches(
    split: std::sync::Arc<Split>,
    batch: usize,
    augment: Augment,
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
            for (bi, idx) in chunks.into_iter().enumerate() {
                let mut images = vec![0f32; idx.len() * IMAGE_BYTES];
                let mut labels = Vec::with_capacity(idx.len());
                for (j, &i) in idx.iter().enumerate() {
                    let (dy, dx) =
                        if augment.crop { (rng.random_range(-4..=4), rng.random_range(-4..=4)) } else { (0, 0) };
                    let flip = augment.flip && rng.random::<bool>();
                    prepare_image(split.image(i), dy, dx, flip, &mut images[j * IMAGE_BYTES..(j + 1) * IMAGE_BYTES]);
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
        prepare_image(&src, 0, 0, false, &mut out);
        assert!((out[0] - hi).abs() < 1e-6);
        prepare_image(&src, 0, 0, true, &mut out);
        assert!((out[31] - hi).abs() < 1e-6);
        // Shifting the window by -2 rows and -3 columns moves the pixel to (2, 3).
        prepare_image(&src, -2, -3, false, &mut out);
        assert!((out[2 * 32 + 3] - hi).abs() < 1e-6);
    }

    #[test]
    fn batches_are_reproducible_and_drop_the_partial_one() {
        let mut bytes = Vec::new();
        for i in 0..10u8 {
            bytes.extend(record(0, i, i * 20));
        }
        let split = std::sync::Arc::new(parse_split(Path::new("t"), &bytes, None).unwrap());
        let a: Vec<Batch> = epoch_batches(split.clone(), 4, Augment::default(), true, true, 5, 2).iter().collect();
        let b: Vec<Batch> = epoch_batches(split, 4, Augment::default(), true, true, 5, 2).iter().collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].labels, b[0].labels);
        assert_eq!(a[1].images, b[1].images);
        assert_eq!(batches_per_epoch(10, 4, true), 2);
        assert_eq!(batches_per_epoch(10, 4, false), 3);
    }
}
