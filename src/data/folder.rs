//! A folder of the user's own images as a data set: the classes, the files of each, and the split into training
//! and validation images, described before anything is decoded.
//!
//! Two layouts are read (the first that fits):
//! - `train/` beside `val/` (or `test/`), each holding the same class folders: the split is the user's;
//! - otherwise one folder per class directly in the root: a seeded, stratified share of each class is held out
//!   for validation.
//!
//! A class folder's name is its label; images in deeper subfolders count for that class. Images are recognised
//! by their extension (the formats the app decodes); hidden files and folders (a leading `.`) are ignored, and
//! every other file that is not used is listed with the reason. The scan reads folder listings and one
//! `stat` and `open` per image file, never the images' contents, so that 100,000 files are listed in seconds;
//! a file that turns out not to decode is found when it is first read.

use crate::data::preprocess::{has_image_extension, MAX_FILE_BYTES};
use std::fs::{DirEntry, Metadata};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The share of each class held out for validation when the folder is not split already.
pub const DEFAULT_VAL_FRACTION: f64 = 0.2;
/// A class with fewer images than this gets a warning: too few to learn it or to measure it.
pub const FEW_IMAGES: usize = 5;
/// The largest class having more than this many times the images of the smallest gets a warning.
pub const IMBALANCE_RATIO: usize = 10;
/// The fewest classes a classifier's head can have.
pub const MIN_CLASSES: usize = 2;
/// The most classes a classifier's head can have.
pub const MAX_CLASSES: usize = 1000;
/// The scan's progress callback is called after every this many files (and once at the end).
pub const PROGRESS_EVERY: usize = 256;

/// The folder names read as the training and the validation split (compared without regard to ASCII case).
const TRAIN_DIR: &str = "train";
const VAL_DIRS: [&str; 2] = ["val", "test"];

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("cannot read the folder {path}: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{0} is not a folder")]
    NotAFolder(PathBuf),
    #[error("{path} has {found}/ but no {wanted} beside it: put the class folders in both, or put the class folders directly in {path} to have a validation share held out")]
    IncompleteSplits { path: PathBuf, found: String, wanted: String },
    #[error("{path}: {} class folder(s){}; a classifier needs at least {MIN_CLASSES}", classes.len(), list_names(classes))]
    TooFewClasses { path: PathBuf, classes: Vec<String> },
    #[error("{path}: {found} class folders, more than the {MAX_CLASSES} a classifier's head supports")]
    TooManyClasses { path: PathBuf, found: usize },
    #[error("class folder {path} ('{class}') has no images{}", skipped_note(*skipped))]
    EmptyClass { class: String, path: PathBuf, skipped: usize },
    #[error("class '{class}' is in {present} but not in {missing}")]
    ClassMissingFromSplit { class: String, present: PathBuf, missing: PathBuf },
    #[error("validation fraction {0} is not between 0 and 1 (both excluded)")]
    BadValFraction(f64),
    #[error("the scan of the image folder was cancelled")]
    Cancelled,
    #[error("image size {0} is not between {min} and {max} pixels", min = crate::data::folder_load::MIN_SIDE, max = crate::data::folder_load::MAX_SIDE)]
    BadImageSize(usize),
    #[error("{images} images at {side} x {side} take {:.1} GB decoded, more than the {:.1} GB budget: choose a smaller image size or fewer images", *bytes as f64 / 1e9, *budget as f64 / 1e9)]
    TooLargeToDecode { images: usize, side: usize, bytes: u64, budget: u64 },
}

fn list_names(classes: &[String]) -> String {
    if classes.is_empty() {
        String::new()
    } else {
        format!(" ({})", classes.join(", "))
    }
}

fn skipped_note(skipped: usize) -> String {
    match skipped {
        0 => String::new(),
        1 => " (1 file in it was skipped)".into(),
        n => format!(" ({n} files in it were skipped)"),
    }
}

/// Where the split between training and validation images came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One folder per class in the root; the validation images were held out of each class by the scan.
    ClassFolders,
    /// The user's split: the training and validation folders, each with the same class folders.
    Splits { train: PathBuf, val: PathBuf },
}

/// One image file and its class (an index into [`ImageFolder::classes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub path: PathBuf,
    pub class: usize,
}

/// Why a file or folder is not in the data set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its extension is not one of an image format the app reads.
    NotAnImage,
    /// Larger than the image files the app reads.
    TooLarge { bytes: u64 },
    /// An empty file.
    Empty,
    /// Its metadata or contents could not be read (permission denied, a broken link, ...): the system's words.
    Unreadable(String),
    /// Not a regular file (a socket, a device, ...).
    NotAFile,
    /// A link to a folder below a class folder: not followed, so that a link cannot make the scan loop.
    FolderLink,
    /// An image directly in the root (or a split folder), in no class folder.
    OutsideClassFolder,
    /// A class folder whose name is not valid UTF-8: class names end up in model metadata and CSV files.
    NotUtf8Name,
    /// A class folder whose name has control characters (a line break, a tab, ...).
    ControlCharacters,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NotAnImage => write!(f, "not an image (by its extension)"),
            SkipReason::TooLarge { bytes } => write!(
                f,
                "{:.0} MB: larger than the {} MB image files this app reads",
                *bytes as f64 / 1e6,
                MAX_FILE_BYTES >> 20
            ),
            SkipReason::Empty => write!(f, "an empty file"),
            SkipReason::Unreadable(e) => write!(f, "cannot be read: {e}"),
            SkipReason::NotAFile => write!(f, "not a regular file"),
            SkipReason::FolderLink => write!(f, "a link to a folder (not followed)"),
            SkipReason::OutsideClassFolder => write!(f, "not inside a class folder"),
            SkipReason::NotUtf8Name => write!(f, "a folder name that is not valid UTF-8 (cannot be a class name)"),
            SkipReason::ControlCharacters => {
                write!(f, "a folder name with control characters (cannot be a class name)")
            }
        }
    }
}

/// A file or folder left out, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// How a folder that is not split already is split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitOptions {
    /// The share of each class held out for validation, in (0, 1).
    pub val_fraction: f64,
    /// The same seed holds out the same images.
    pub seed: u64,
}

impl Default for SplitOptions {
    fn default() -> Self {
        SplitOptions { val_fraction: DEFAULT_VAL_FRACTION, seed: 0 }
    }
}

/// Images of one class in each split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ClassCounts {
    pub train: usize,
    pub val: usize,
}

/// A folder of class folders, described and split.
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// The class names, sorted; a [`Sample`]'s class indexes this.
    pub classes: Vec<String>,
    /// Sorted by class, then path.
    pub train: Vec<Sample>,
    /// Sorted by class, then path.
    pub val: Vec<Sample>,
    /// Files and folders left out, with the reason, in the order the scan met them.
    pub skipped: Vec<Skipped>,
    /// What the user should know but that does not stop training (few images, imbalance, folders ignored).
    pub warnings: Vec<String>,
    pub layout: Layout,
}

impl ImageFolder {
    /// Scans `root`. `progress` is given the number of files seen so far every [`PROGRESS_EVERY`] files and
    /// once at the end; setting `cancel` stops the scan with [`FolderError::Cancelled`].
    pub fn scan(
        root: &Path,
        options: &SplitOptions,
        progress: impl FnMut(usize),
        cancel: &AtomicBool,
    ) -> Result<ImageFolder, FolderError> {
        if !(options.val_fraction > 0.0 && options.val_fraction < 1.0) {
            return Err(FolderError::BadValFraction(options.val_fraction));
        }
        let meta = std::fs::metadata(root).map_err(|source| FolderError::Unreadable { path: root.into(), source })?;
        if !meta.is_dir() {
            return Err(FolderError::NotAFolder(root.into()));
        }
        let mut walk = Walk { progress, cancel, seen: 0, skipped: Vec::new(), warnings: Vec::new() };
        let top = walk.class_folders(root)?;
        let named = |wanted: &str| top.iter().find(|(name, _)| name.eq_ignore_ascii_case(wanted));
        let train_dir = named(TRAIN_DIR);
        let val_dirs: Vec<&(String, PathBuf)> = VAL_DIRS.iter().filter_map(|v| named(v)).collect();

        let (classes, train, val, layout) = if train_dir.is_none() && val_dirs.is_empty() {
            let classes = checked_classes(root, top)?;
            let mut files = Vec::with_capacity(classes.len());
            for (name, dir) in &classes {
                files.push(walk.class_images(name, dir)?);
            }
            let (train, val) = hold_out(&classes, files, options, &mut walk.warnings);
            (classes, train, val, Layout::ClassFolders)
        } else {
            let (Some(train_dir), Some(val_dir)) = (train_dir, val_dirs.first()) else {
                let (found, wanted) = match train_dir {
                    Some((name, _)) => (name.clone(), "val/ or test/".to_string()),
                    None => (val_dirs[0].0.clone(), format!("{TRAIN_DIR}/")),
                };
                return Err(FolderError::IncompleteSplits { path: root.into(), found, wanted });
            };
            let ignored: Vec<&str> = top
                .iter()
                .filter(|(name, _)| name != &train_dir.0 && name != &val_dir.0)
                .map(|(name, _)| name.as_str())
                .collect();
            if !ignored.is_empty() {
                walk.warnings.push(format!(
                    "ignored beside {}/ and {}/: {}",
                    train_dir.0,
                    val_dir.0,
                    ignored.iter().map(|n| format!("{n}/")).collect::<Vec<_>>().join(", ")
                ));
            }
            let (train_path, val_path) = (train_dir.1.clone(), val_dir.1.clone());
            let train_classes = checked_classes(&train_path, walk.class_folders(&train_path)?)?;
            let mut val_classes = walk.class_folders(&val_path)?;
            val_classes.sort();
            for (a, a_dir, b, b_dir) in [
                (&train_classes, &train_path, &val_classes, &val_path),
                (&val_classes, &val_path, &train_classes, &train_path),
            ] {
                if let Some((class, _)) = a.iter().find(|(name, _)| !b.iter().any(|(other, _)| other == name)) {
                    return Err(FolderError::ClassMissingFromSplit {
                        class: class.clone(),
                        present: a_dir.clone(),
                        missing: b_dir.clone(),
                    });
                }
            }
            let mut train = Vec::new();
            let mut val = Vec::new();
            // Both lists are sorted by name and hold the same names, so that they pair up class by class.
            for (class, ((name, train_class), (_, val_class))) in train_classes.iter().zip(&val_classes).enumerate() {
                let t = walk.class_images(name, train_class)?;
                let v = walk.class_images(name, val_class)?;
                train.extend(t.into_iter().map(|path| Sample { path, class }));
                val.extend(v.into_iter().map(|path| Sample { path, class }));
            }
            (train_classes, train, val, Layout::Splits { train: train_path, val: val_path })
        };
        if walk.seen == 0 || !walk.seen.is_multiple_of(PROGRESS_EVERY) {
            (walk.progress)(walk.seen);
        }

        let classes: Vec<String> = classes.into_iter().map(|(name, _)| name).collect();
        let mut folder = ImageFolder {
            root: root.into(),
            classes,
            train,
            val,
            skipped: walk.skipped,
            warnings: walk.warnings,
            layout,
        };
        folder.warn_about_counts();
        Ok(folder)
    }

    /// Images per class, in the order of [`ImageFolder::classes`].
    pub fn counts(&self) -> Vec<ClassCounts> {
        let mut counts = vec![ClassCounts::default(); self.classes.len()];
        for s in &self.train {
            counts[s.class].train += 1;
        }
        for s in &self.val {
            counts[s.class].val += 1;
        }
        counts
    }

    fn warn_about_counts(&mut self) {
        let totals: Vec<usize> = self.counts().iter().map(|c| c.train + c.val).collect();
        for (name, &n) in self.classes.iter().zip(&totals) {
            // A class of one image in a folder split by the scan has its own warning (from `hold_out`).
            if n < FEW_IMAGES && !(n == 1 && self.layout == Layout::ClassFolders) {
                self.warnings.push(format!(
                    "class '{name}' has only {n} image{}: too few to learn it well (at least {FEW_IMAGES} advised)",
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
        let smallest = totals.iter().enumerate().min_by_key(|&(_, n)| n);
        let largest = totals.iter().enumerate().max_by_key(|&(_, n)| n);
        if let (Some((s, &small)), Some((l, &large))) = (smallest, largest) {
            if large > IMBALANCE_RATIO * small {
                self.warnings.push(format!(
                    "the classes are imbalanced: '{}' has {large} images, '{}' only {small} (more than {IMBALANCE_RATIO} times fewer); the model will favour the larger classes",
                    self.classes[l], self.classes[s]
                ));
            }
        }
    }
}

/// The number of classes checked, and the classes sorted by name.
fn checked_classes(dir: &Path, mut classes: Vec<(String, PathBuf)>) -> Result<Vec<(String, PathBuf)>, FolderError> {
    classes.sort();
    if classes.len() < MIN_CLASSES {
        let classes = classes.into_iter().map(|(name, _)| name).collect();
        return Err(FolderError::TooFewClasses { path: dir.into(), classes });
    }
    if classes.len() > MAX_CLASSES {
        return Err(FolderError::TooManyClasses { path: dir.into(), found: classes.len() });
    }
    Ok(classes)
}

/// Holds out `round(n * fraction)` images of each class of `n` (at least one, and never all), choosing those
/// whose hash of (seed, path inside the class folder) is smallest. The choice depends on neither the listing
/// order nor where the root is, and adding images to a class moves few of the others between the splits.
fn hold_out(
    classes: &[(String, PathBuf)],
    files: Vec<Vec<PathBuf>>,
    options: &SplitOptions,
    warnings: &mut Vec<String>,
) -> (Vec<Sample>, Vec<Sample>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for (class, ((name, dir), paths)) in classes.iter().zip(files).enumerate() {
        let n = paths.len();
        if n == 1 {
            warnings.push(format!(
                "class '{name}' has only 1 image: it is kept for training, so the class has no validation image"
            ));
        }
        let k = if n < 2 { 0 } else { ((n as f64 * options.val_fraction).round() as usize).clamp(1, n - 1) };
        let mut ranked: Vec<(u64, PathBuf)> =
            paths.into_iter().map(|p| (rank(options.seed, p.strip_prefix(dir).unwrap_or(&p)), p)).collect();
        ranked.sort();
        let mut held: Vec<PathBuf> = Vec::with_capacity(k);
        let mut kept: Vec<PathBuf> = Vec::with_capacity(n - k);
        for (i, (_, p)) in ranked.into_iter().enumerate() {
            if i < k {
                held.push(p)
            } else {
                kept.push(p)
            }
        }
        held.sort();
        kept.sort();
        val.extend(held.into_iter().map(|path| Sample { path, class }));
        train.extend(kept.into_iter().map(|path| Sample { path, class }));
    }
    (train, val)
}

/// A stable 64-bit hash of a seed and a relative path (FNV-1a, then SplitMix64's finaliser to spread the bits):
/// written here rather than taken from a library so that the same seed holds out the same images in every
/// version of the app.
fn rank(seed: u64, relative: &Path) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(relative.as_os_str().as_encoded_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

fn is_hidden(entry: &DirEntry) -> bool {
    entry.file_name().as_encoded_bytes().first() == Some(&b'.')
}

/// The scan's state: files seen, what was left out, the caller's progress callback and cancel flag.
struct Walk<'a, P: FnMut(usize)> {
    progress: P,
    cancel: &'a AtomicBool,
    seen: usize,
    skipped: Vec<Skipped>,
    warnings: Vec<String>,
}

impl<P: FnMut(usize)> Walk<'_, P> {
    fn check_cancel(&self) -> Result<(), FolderError> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(FolderError::Cancelled)
        } else {
            Ok(())
        }
    }

    /// Counts one file, reporting progress every [`PROGRESS_EVERY`].
    fn file_seen(&mut self) -> Result<(), FolderError> {
        self.seen += 1;
        if self.seen.is_multiple_of(PROGRESS_EVERY) {
            (self.progress)(self.seen);
        }
        self.check_cancel()
    }

    fn skip(&mut self, path: PathBuf, reason: SkipReason) {
        self.skipped.push(Skipped { path, reason });
    }

    /// The entries of `dir` that are not hidden, sorted by name.
    fn list(dir: &Path) -> std::io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if !is_hidden(&entry) {
                entries.push(entry);
            }
        }
        entries.sort_by_key(|e| e.file_name());
        Ok(entries)
    }

    /// The folders directly in `dir` whose names can be class names (links to folders followed: there is no
    /// loop one level deep), unsorted. Files there are in no class and are skipped.
    fn class_folders(&mut self, dir: &Path) -> Result<Vec<(String, PathBuf)>, FolderError> {
        self.check_cancel()?;
        let entries = Self::list(dir).map_err(|source| FolderError::Unreadable { path: dir.into(), source })?;
        let mut folders = Vec::new();
        for entry in entries {
            let path = entry.path();
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => match entry.file_name().into_string() {
                    Ok(name) if name.chars().any(char::is_control) => self.skip(path, SkipReason::ControlCharacters),
                    Ok(name) => folders.push((name, path)),
                    Err(_) => self.skip(path, SkipReason::NotUtf8Name),
                },
                Ok(_) => {
                    self.file_seen()?;
                    let reason = if has_image_extension(&path) {
                        SkipReason::OutsideClassFolder
                    } else {
                        SkipReason::NotAnImage
                    };
                    self.skip(path, reason);
                }
                Err(e) => {
                    self.file_seen()?;
                    self.skip(path, SkipReason::Unreadable(e.to_string()));
                }
            }
        }
        Ok(folders)
    }

    /// The images of one class folder, sorted; none is an error naming the folder.
    fn class_images(&mut self, class: &str, dir: &Path) -> Result<Vec<PathBuf>, FolderError> {
        let entries = Self::list(dir).map_err(|source| FolderError::Unreadable { path: dir.into(), source })?;
        let skipped_before = self.skipped.len();
        let mut images = Vec::new();
        self.images_in(entries, &mut images)?;
        if images.is_empty() {
            return Err(FolderError::EmptyClass {
                class: class.into(),
                path: dir.into(),
                skipped: self.skipped.len() - skipped_before,
            });
        }
        images.sort();
        Ok(images)
    }

    fn images_in(&mut self, entries: Vec<DirEntry>, images: &mut Vec<PathBuf>) -> Result<(), FolderError> {
        self.check_cancel()?;
        for entry in entries {
            let path = entry.path();
            let kind = match entry.file_type() {
                Ok(kind) => kind,
                Err(e) => {
                    self.file_seen()?;
                    self.skip(path, SkipReason::Unreadable(e.to_string()));
                    continue;
                }
            };
            if kind.is_dir() {
                match Self::list(&path) {
                    Ok(inner) => self.images_in(inner, images)?,
                    Err(e) => self.skip(path, SkipReason::Unreadable(e.to_string())),
                }
                continue;
            }
            self.file_seen()?;
            let meta = if kind.is_symlink() {
                match std::fs::metadata(&path) {
                    Ok(m) if m.is_dir() => {
                        self.skip(path, SkipReason::FolderLink);
                        continue;
                    }
                    meta => meta,
                }
            } else if has_image_extension(&path) {
                entry.metadata()
            } else {
                self.skip(path, SkipReason::NotAnImage);
                continue;
            };
            match image_file(&path, meta) {
                Ok(()) => images.push(path),
                Err(reason) => self.skip(path, reason),
            }
        }
        Ok(())
    }
}

/// Whether a file (links followed) is one the scan keeps: an image by extension, a regular file, not empty nor
/// too large, and one that opens.
fn image_file(path: &Path, meta: std::io::Result<Metadata>) -> Result<(), SkipReason> {
    if !has_image_extension(path) {
        return Err(SkipReason::NotAnImage);
    }
    let meta = meta.map_err(|e| SkipReason::Unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(SkipReason::NotAFile);
    }
    match meta.len() {
        0 => return Err(SkipReason::Empty),
        bytes if bytes > MAX_FILE_BYTES => return Err(SkipReason::TooLarge { bytes }),
        _ => {}
    }
    // Permission to read is only known by trying; opening reads nothing of the image.
    std::fs::File::open(path).map(drop).map_err(|e| SkipReason::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// A tiny real image; `.jpg`/`.jpeg` names are written as JPEG, the rest as PNG.
    fn image(path: &Path, shade: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(4, 3, image::Rgb([shade, 128, 255 - shade])).save(path).unwrap();
    }

    /// `n` images in `dir/class/`, named `img000.png`, ...
    fn class(dir: &Path, class: &str, n: usize) {
        for i in 0..n {
            image(&dir.join(class).join(format!("img{i:03}.png")), i as u8);
        }
    }

    fn scan(root: &Path) -> Result<ImageFolder, FolderError> {
        scan_with(root, &SplitOptions::default())
    }

    fn scan_with(root: &Path, options: &SplitOptions) -> Result<ImageFolder, FolderError> {
        ImageFolder::scan(root, options, |_| {}, &AtomicBool::new(false))
    }

    fn names(samples: &[Sample], root: &Path) -> Vec<String> {
        samples.iter().map(|s| s.path.strip_prefix(root).unwrap().to_string_lossy().into_owned()).collect()
    }

    fn reason_of(folder: &ImageFolder, path: &Path) -> Option<SkipReason> {
        folder.skipped.iter().find(|s| s.path == path).map(|s| s.reason.clone())
    }

    #[test]
    fn class_folders_give_sorted_classes_and_count_deeper_subfolders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(root, "zebra", 5);
        class(root, "ant", 5);
        image(&root.join("ant/more/deeper/a.jpg"), 1);
        image(&root.join("ant/more/b.JPEG"), 2);
        let f = scan(root).unwrap();
        assert_eq!(f.layout, Layout::ClassFolders);
        assert_eq!(f.classes, ["ant", "zebra"]);
        let counts = f.counts();
        assert_eq!(counts[0].train + counts[0].val, 7);
        assert_eq!(counts[1].train + counts[1].val, 5);
        let all: Vec<&Sample> = f.train.iter().chain(&f.val).collect();
        assert!(all.iter().any(|s| s.path == root.join("ant/more/deeper/a.jpg") && s.class == 0));
        assert!(all.iter().any(|s| s.path == root.join("ant/more/b.JPEG") && s.class == 0));
        for s in &all {
            assert!(s.path.starts_with(root.join(&f.classes[s.class])), "{s:?}");
        }
        assert!(f.skipped.is_empty(), "{:?}", f.skipped);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        // Sorted by class, then path.
        let mut sorted = f.train.clone();
        sorted.sort_by(|a, b| (a.class, &a.path).cmp(&(b.class, &b.path)));
        assert_eq!(f.train, sorted);
    }

    #[test]
    fn train_and_val_or_test_folders_are_the_users_split() {
        for val_name in ["val", "test"] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path();
            class(&root.join("train"), "cat", 6);
            class(&root.join("train"), "dog", 7);
            class(&root.join(val_name), "cat", 2);
            class(&root.join(val_name), "dog", 3);
            let f = scan(root).unwrap();
            assert_eq!(f.layout, Layout::Splits { train: root.join("train"), val: root.join(val_name) });
            assert_eq!(f.classes, ["cat", "dog"]);
            assert_eq!(f.counts(), [ClassCounts { train: 6, val: 2 }, ClassCounts { train: 7, val: 3 }]);
            assert!(f.train.iter().all(|s| s.path.starts_with(root.join("train").join(&f.classes[s.class]))));
            assert!(f.val.iter().all(|s| s.path.starts_with(root.join(val_name).join(&f.classes[s.class]))));
            assert!(f.warnings.is_empty(), "{:?}", f.warnings);
        }
    }

    #[test]
    fn beside_val_a_test_folder_and_others_are_ignored_with_a_warning_and_empty_classes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for split in ["train", "val", "test"] {
            class(&root.join(split), "cat", 5);
            class(&root.join(split), "dog", 5);
        }
        class(root, "notes", 1);
        image(&root.join("train/stray.png"), 0);
        let f = scan(root).unwrap();
        assert_eq!(f.layout, Layout::Splits { train: root.join("train"), val: root.join("val") });
        assert_eq!(f.counts(), [ClassCounts { train: 5, val: 5 }; 2]);
        assert!(
            f.warnings.iter().any(|w| w.contains("ignored beside train/ and val/: notes/, test/")),
            "{:?}",
            f.warnings
        );
        assert_eq!(reason_of(&f, &root.join("train/stray.png")), Some(SkipReason::OutsideClassFolder));

        std::fs::remove_dir_all(root.join("val/dog")).unwrap();
        std::fs::create_dir(root.join("val/dog")).unwrap();
        let err = scan(root).unwrap_err();
        assert!(matches!(&err, FolderError::EmptyClass { path, .. } if path == &root.join("val/dog")), "{err:?}");
    }

    #[test]
    fn a_class_in_one_split_only_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(&root.join("train"), "cat", 6);
        class(&root.join("train"), "dog", 6);
        class(&root.join("val"), "cat", 2);
        class(&root.join("val"), "dog", 2);
        class(&root.join("val"), "bird", 2);
        let err = scan(root).unwrap_err();
        assert!(matches!(&err, FolderError::ClassMissingFromSplit { class, .. } if class == "bird"), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("'bird'") && text.contains(&root.join("train").display().to_string()), "{text}");

        std::fs::remove_dir_all(root.join("val/bird")).unwrap();
        class(&root.join("train"), "eel", 6);
        let err = scan(root).unwrap_err().to_string();
        assert!(err.contains("'eel'") && err.contains(&format!("not in {}", root.join("val").display())), "{err}");
    }

    #[test]
    fn a_train_folder_without_a_validation_folder_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        class(&dir.path().join("train"), "cat", 3);
        class(&dir.path().join("train"), "dog", 3);
        let err = scan(dir.path()).unwrap_err();
        assert!(matches!(&err, FolderError::IncompleteSplits { found, .. } if found == "train"), "{err:?}");
        assert!(err.to_string().contains("no val/ or test/"), "{err}");
    }

    #[test]
    fn hidden_files_and_folders_are_ignored_and_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(root, "a", 5);
        class(root, "b", 5);
        image(&root.join(".thumbnails/x.png"), 0); // would be a third class
        image(&root.join("a/.hidden.png"), 0);
        image(&root.join("a/.cache/y.png"), 0);
        std::fs::write(root.join("b/.DS_Store"), b"junk").unwrap();
        let f = scan(root).unwrap();
        assert_eq!(f.classes, ["a", "b"]);
        assert_eq!(f.train.len() + f.val.len(), 10);
        assert!(f.skipped.is_empty(), "{:?}", f.skipped);
    }

    #[test]
    fn files_left_out_are_listed_with_the_reason() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(root, "a", 5);
        class(root, "b", 5);
        let p = |s: &str| root.join(s);
        std::fs::write(p("a/notes.txt"), b"not an image").unwrap();
        std::fs::write(p("a/empty.png"), b"").unwrap();
        // Sparse: one byte over the limit without writing it.
        std::fs::File::create(p("b/huge.jpg")).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
        std::os::unix::fs::symlink(p("nowhere.png"), p("b/broken.png")).unwrap();
        std::os::unix::fs::symlink(root, p("b/loop")).unwrap();
        image(&p("stray.png"), 0);
        std::fs::write(p("README"), b"about").unwrap();
        let bad_name = root.join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        class(&bad_name, "", 1);
        class(root, "line\nbreak", 1);
        let f = scan(root).unwrap();
        assert_eq!(f.classes, ["a", "b"]);
        assert_eq!(f.train.len() + f.val.len(), 10);
        assert_eq!(reason_of(&f, &p("a/notes.txt")), Some(SkipReason::NotAnImage));
        assert_eq!(reason_of(&f, &p("a/empty.png")), Some(SkipReason::Empty));
        assert_eq!(reason_of(&f, &p("b/huge.jpg")), Some(SkipReason::TooLarge { bytes: MAX_FILE_BYTES + 1 }));
        assert!(matches!(reason_of(&f, &p("b/broken.png")), Some(SkipReason::Unreadable(_))), "{:?}", f.skipped);
        assert_eq!(reason_of(&f, &p("b/loop")), Some(SkipReason::FolderLink));
        assert_eq!(reason_of(&f, &p("stray.png")), Some(SkipReason::OutsideClassFolder));
        assert_eq!(reason_of(&f, &p("README")), Some(SkipReason::NotAnImage));
        assert_eq!(reason_of(&f, &bad_name), Some(SkipReason::NotUtf8Name));
        assert_eq!(reason_of(&f, &p("line\nbreak")), Some(SkipReason::ControlCharacters));
        assert_eq!(f.skipped.len(), 9, "{:?}", f.skipped);
        assert!(SkipReason::TooLarge { bytes: MAX_FILE_BYTES + 1 }.to_string().contains("256 MB"));
    }

    #[test]
    fn the_hold_out_is_stratified_with_at_least_one_image_per_class() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for (name, n) in [("a", 10), ("b", 20), ("c", 5), ("d", 2), ("e", 1), ("f", 7)] {
            class(root, name, n);
        }
        let f = scan(root).unwrap();
        let c = f.counts();
        let val: Vec<usize> = c.iter().map(|c| c.val).collect();
        let train: Vec<usize> = c.iter().map(|c| c.train).collect();
        // round(n * 0.2), at least 1 when n >= 2, never all.
        assert_eq!(val, [2, 4, 1, 1, 0, 1]);
        assert_eq!(train, [8, 16, 4, 1, 1, 6]);
        assert!(f.warnings.iter().any(|w| w.contains("'e' has only 1 image") && w.contains("no validation")));
        // No image is in both splits.
        let train: BTreeSet<&PathBuf> = f.train.iter().map(|s| &s.path).collect();
        assert!(f.val.iter().all(|s| !train.contains(&s.path)));

        let half = scan_with(root, &SplitOptions { val_fraction: 0.5, seed: 0 }).unwrap();
        assert_eq!(half.counts().iter().map(|c| c.val).collect::<Vec<_>>(), [5, 10, 3, 1, 0, 4]);
        for bad in [0.0, 1.0, -0.1, f64::NAN] {
            let err = scan_with(root, &SplitOptions { val_fraction: bad, seed: 0 }).unwrap_err();
            assert!(matches!(err, FolderError::BadValFraction(_)), "{bad}: {err:?}");
        }
    }

    #[test]
    fn the_hold_out_depends_on_the_seed_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(root, "a", 20);
        class(root, "b", 20);
        let val = |seed| names(&scan_with(root, &SplitOptions { val_fraction: 0.2, seed }).unwrap().val, root);
        assert_eq!(val(1), val(1));
        assert_ne!(val(1), val(2));
        assert_ne!(val(2), val(3));

        // The same files created in the opposite order, in another folder: the same images held out.
        let other = tempfile::tempdir().unwrap();
        for c in ["b", "a"] {
            for i in (0..20).rev() {
                image(&other.path().join(c).join(format!("img{i:03}.png")), 0);
            }
        }
        let again = scan_with(other.path(), &SplitOptions { val_fraction: 0.2, seed: 1 }).unwrap();
        assert_eq!(names(&again.val, other.path()), val(1));
    }

    #[test]
    fn an_unreadable_or_missing_root_or_a_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = scan(&missing).unwrap_err();
        assert!(matches!(err, FolderError::Unreadable { .. }), "{err:?}");
        assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
        let file = dir.path().join("file.png");
        image(&file, 0);
        let err = scan(&file).unwrap_err();
        assert!(matches!(err, FolderError::NotAFolder(_)), "{err:?}");
        assert_eq!(err.to_string(), format!("{} is not a folder", file.display()));
    }

    #[test]
    fn fewer_than_two_or_more_than_a_thousand_classes_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let err = scan(root).unwrap_err();
        assert!(matches!(&err, FolderError::TooFewClasses { classes, .. } if classes.is_empty()), "{err:?}");
        class(root, "only", 3);
        let err = scan(root).unwrap_err().to_string();
        assert!(err.contains("1 class folder(s) (only)") && err.contains("at least 2"), "{err}");
        // Empty folders are enough: the count is refused before any class is read.
        for i in 0..MAX_CLASSES {
            std::fs::create_dir(root.join(format!("c{i:04}"))).unwrap();
        }
        let err = scan(root).unwrap_err();
        assert!(matches!(err, FolderError::TooManyClasses { found: 1001, .. }), "{err:?}");
        assert!(err.to_string().contains("more than the 1000"), "{err}");
    }

    #[test]
    fn a_class_folder_without_images_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(root, "a", 3);
        std::fs::create_dir_all(root.join("b/sub")).unwrap();
        std::fs::write(root.join("b/sub/notes.txt"), b"x").unwrap();
        let err = scan(root).unwrap_err();
        assert!(matches!(&err, FolderError::EmptyClass { class, skipped: 1, .. } if class == "b"), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&root.join("b").display().to_string()) && text.contains("1 file in it was skipped"));
    }

    #[test]
    fn few_images_and_imbalance_are_warnings() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(root, "big", 20);
        class(root, "small", 2);
        let f = scan(root).unwrap();
        assert!(f.warnings.iter().any(|w| w.contains("'small' has only 2 images")), "{:?}", f.warnings);
        assert!(!f.warnings.iter().any(|w| w.contains("'big'") && w.contains("only")), "{:?}", f.warnings);
        // 20 against 2 is ten times: not yet imbalanced.
        assert!(!f.warnings.iter().any(|w| w.contains("imbalanced")), "{:?}", f.warnings);
        image(&root.join("big/extra.png"), 0);
        let f = scan(root).unwrap();
        let w = f.warnings.iter().find(|w| w.contains("imbalanced")).expect("an imbalance warning");
        assert!(w.contains("'big' has 21 images") && w.contains("'small' only 2"), "{w}");
        let boundary = FEW_IMAGES;
        class(root, "enough", boundary);
        let f = scan(root).unwrap();
        assert!(!f.warnings.iter().any(|w| w.contains("'enough'")), "{:?}", f.warnings);
    }

    #[test]
    fn progress_is_reported_and_cancel_stops_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        class(root, "a", 3);
        class(root, "b", 3);
        let junk = 2 * PROGRESS_EVERY + 10;
        for i in 0..junk {
            std::fs::write(root.join("a").join(format!("junk{i}.txt")), b"").unwrap();
        }
        let total = junk + 6;
        let mut seen = Vec::new();
        let f = ImageFolder::scan(root, &SplitOptions::default(), |n| seen.push(n), &AtomicBool::new(false)).unwrap();
        assert_eq!(seen, [PROGRESS_EVERY, 2 * PROGRESS_EVERY, total]);
        assert_eq!(f.skipped.len(), junk);

        let cancel = AtomicBool::new(true);
        let err = ImageFolder::scan(root, &SplitOptions::default(), |_| {}, &cancel).unwrap_err();
        assert!(matches!(err, FolderError::Cancelled), "{err:?}");
        // Cancelled from the progress callback (as another thread would): the scan stops there.
        let cancel = AtomicBool::new(false);
        let mut calls = Vec::new();
        let err = ImageFolder::scan(
            root,
            &SplitOptions::default(),
            |n| {
                calls.push(n);
                cancel.store(true, Ordering::Relaxed);
            },
            &cancel,
        )
        .unwrap_err();
        assert!(matches!(err, FolderError::Cancelled), "{err:?}");
        assert_eq!(calls, [PROGRESS_EVERY]);
    }
}
