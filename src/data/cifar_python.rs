//! CIFAR-100 in its python layout, the one torchvision downloads: a `cifar-100-python/` folder whose `train`,
//! `test` and `meta` files are pickles. Also reads either official archive (`cifar-100-python.tar.gz`,
//! `cifar-100-binary.tar.gz`) directly, without unpacking it to disk.
//!
//! Each split file is a dict with `data` (a numpy uint8 array of shape (N, 3072), each row the 1024 red, then
//! green, then blue bytes of one image: the same order as the binary layout), `fine_labels` and
//! `coarse_labels` (lists of N ints), plus `filenames` and `batch_label`, which are not needed. `meta` holds
//! `fine_label_names` and `coarse_label_names`.

use crate::data::labels::CIFAR100_FINE;
use crate::data::pickle::{self, NdArray, Value};
use crate::data::{parse_split, DataError, DataSet, Split, CIFAR_SIDE, IMAGE_BYTES, TEST_IMAGES, TRAIN_IMAGES};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The folder the python archive unpacks to.
pub(crate) const PYTHON_DIR: &str = "cifar-100-python";
/// Largest file read for each member of the data set, a little above the real files' sizes (python `train`
/// 155.2 MB, `test` 31.0 MB, `meta` 1.5 KB; `train.bin` 153.7 MB, `test.bin` 30.7 MB): a corrupt or hostile
/// archive header or file is refused before anything is read into memory.
fn max_member_bytes(name: &str) -> u64 {
    match name {
        "train" | "train.bin" => 160_000_000,
        "test" | "test.bin" => 32_000_000,
        "meta" => 1 << 20,
        _ => 1 << 16,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PythonDataError {
    #[error(
        "no CIFAR-100 python data in {0}: expected the files train and test (and meta) of cifar-100-python, in it or in its cifar-100-python/ folder"
    )]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} cannot be read as a pickle, at byte {offset}: {message}")]
    Pickle { path: PathBuf, offset: usize, message: String },
    #[error("{path} is not a CIFAR-100 python file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: {found} images, expected {expected}")]
    WrongCount { path: PathBuf, found: usize, expected: usize },
    #[error("{path}: image {index} has {what} label {value}, out of range (0 to {max})")]
    BadLabel { path: PathBuf, index: usize, what: &'static str, value: i64, max: u8 },
    #[error("{path}: {message}")]
    Archive { path: PathBuf, message: String },
    /// A member of a `cifar-100-binary.tar.gz` failed the binary layout's checks.
    #[error(transparent)]
    Binary(#[from] DataError),
}

/// How many images each split must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expected {
    pub train: Option<usize>,
    pub test: Option<usize>,
}

impl Expected {
    /// The official 50,000 training and 10,000 test images.
    pub(crate) const OFFICIAL: Expected = Expected { train: Some(TRAIN_IMAGES), test: Some(TEST_IMAGES) };
    /// Any number: miniature copies for tests and demos.
    pub const ANY: Expected = Expected { train: None, test: None };
}

/// Finds the folder that holds the pickles `train` and `test`: `dir` itself or `dir/cifar-100-python`.
pub(crate) fn locate_python(dir: &Path) -> Result<PathBuf, PythonDataError> {
    for cand in [dir.to_path_buf(), dir.join(PYTHON_DIR)] {
        if cand.join("train").is_file() && cand.join("test").is_file() {
            return Ok(cand);
        }
    }
    Err(PythonDataError::NotFound(dir.to_path_buf()))
}

/// Loads the official python layout (50,000 + 10,000 images) from `dir` or `dir/cifar-100-python`.
pub(crate) fn load_python_dir(dir: &Path) -> Result<DataSet, PythonDataError> {
    load_python_dir_expecting(dir, Expected::OFFICIAL)
}

/// As [`load_python_dir`], with the image counts to insist on.
pub(crate) fn load_python_dir_expecting(dir: &Path, expected: Expected) -> Result<DataSet, PythonDataError> {
    let root = locate_python(dir)?;
    let train = read_python_split(&root.join("train"), expected.train)?;
    let test = read_python_split(&root.join("test"), expected.test)?;
    let meta = root.join("meta");
    let class_names = if meta.is_file() { parse_meta(&meta, &read(&meta)?)? } else { builtin_names() };
    Ok(DataSet::cifar(train, test, class_names, root))
}

/// Reads one split pickle (`train` or `test`); `expected` images if given.
pub(crate) fn read_python_split(path: &Path, expected: Option<usize>) -> Result<Split, PythonDataError> {
    parse_python_split(path, read(path)?, expected)
}

/// Parses one split pickle. Takes the bytes by value so that they are freed before the pixels are copied out:
/// the training file is 155 MB.
pub fn parse_python_split(path: &Path, bytes: Vec<u8>, expected: Option<usize>) -> Result<Split, PythonDataError> {
    let root = parse_pickle(path, &bytes)?;
    drop(bytes);
    let format = |message: String| PythonDataError::Format { path: path.into(), message };
    if !matches!(root, Value::Dict(_)) {
        return Err(format(format!("it holds a {}, not a dict", root.kind())));
    }
    let field = |key: &str| root.get(key).ok_or_else(|| format(format!("it has no '{key}' entry")));
    let Value::Array(array) = field("data")? else {
        return Err(format(format!("'data' is a {}, not a numpy array", field("data")?.kind())));
    };
    let fine = field("fine_labels")?;
    let coarse = field("coarse_labels")?;
    drop(root);
    let images = image_bytes(path, take_array(array))?;
    let n = images.len() / IMAGE_BYTES;
    if let Some(e) = expected.filter(|&e| e != n) {
        return Err(PythonDataError::WrongCount { path: path.into(), found: n, expected: e });
    }
    let labels = parse_labels(path, &fine, n, "fine", 99)?;
    let coarse = parse_labels(path, &coarse, n, "coarse", 19)?;
    Ok(Split {
        images,
        labels: labels.into_iter().map(u16::from).collect(),
        coarse,
        side: CIFAR_SIDE,
        paths: Vec::new(),
    })
}

/// Parses `meta` and returns the 100 fine class names.
pub fn parse_meta(path: &Path, bytes: &[u8]) -> Result<Vec<String>, PythonDataError> {
    let root = parse_pickle(path, bytes)?;
    let format = |message: String| PythonDataError::Format { path: path.into(), message };
    let names = root.get("fine_label_names").ok_or_else(|| format("it has no 'fine_label_names' entry".into()))?;
    let names = names
        .items()
        .ok_or_else(|| format(format!("'fine_label_names' is a {}, not a list", names.kind())))?
        .iter()
        .map(Value::text)
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| format("'fine_label_names' holds something other than text".into()))?;
    if names.len() != 100 {
        return Err(format(format!("'fine_label_names' has {} names, not 100", names.len())));
    }
    Ok(names)
}

/// Loads the official archive, python (`cifar-100-python.tar.gz`) or binary (`cifar-100-binary.tar.gz`), without
/// unpacking it. Errors name a member as `ARCHIVE/MEMBER`.
pub(crate) fn load_tar_gz(path: &Path) -> Result<DataSet, PythonDataError> {
    load_tar_gz_expecting(path, Expected::OFFICIAL)
}

/// As [`load_tar_gz`], with the image counts to insist on.
pub fn load_tar_gz_expecting(path: &Path, expected: Expected) -> Result<DataSet, PythonDataError> {
    let mut m = read_members(path)?;
    let root = path.to_path_buf();
    if let (Some(train), Some(test)) = (m.remove("train"), m.remove("test")) {
        let train = parse_python_split(&path.join(&train.0), train.1, expected.train)?;
        let test = parse_python_split(&path.join(&test.0), test.1, expected.test)?;
        let class_names = match m.remove("meta") {
            Some((name, bytes)) => parse_meta(&path.join(name), &bytes)?,
            None => builtin_names(),
        };
        return Ok(DataSet::cifar(train, test, class_names, root));
    }
    if let (Some(train), Some(test)) = (m.remove("train.bin"), m.remove("test.bin")) {
        let train = parse_split(&path.join(&train.0), &train.1, expected.train)?;
        let test = parse_split(&path.join(&test.0), &test.1, expected.test)?;
        let class_names =
            m.remove("fine_label_names.txt").and_then(|(_, b)| names_from_text(&b)).unwrap_or_else(builtin_names);
        return Ok(DataSet::cifar(train, test, class_names, root));
    }
    Err(PythonDataError::Archive {
        path: path.into(),
        message: "holds neither cifar-100-python/{train,test} nor cifar-100-binary/{train.bin,test.bin}".into(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, PythonDataError> {
    let io = |source| PythonDataError::Io { path: path.into(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let (len, max) = (std::fs::metadata(path).map_err(io)?.len(), max_member_bytes(&name));
    if len > max {
        return Err(PythonDataError::Format {
            path: path.into(),
            message: format!("{len} bytes; CIFAR-100's {name} has at most {max}"),
        });
    }
    std::fs::read(path).map_err(io)
}

fn parse_pickle(path: &Path, bytes: &[u8]) -> Result<Value, PythonDataError> {
    pickle::parse(bytes).map_err(|e| PythonDataError::Pickle {
        path: path.into(),
        offset: e.offset,
        message: e.message,
    })
}

fn builtin_names() -> Vec<String> {
    CIFAR100_FINE.iter().map(|s| s.to_string()).collect()
}

/// `fine_label_names.txt` of the binary archive: one name a line, used only if it has exactly 100.
fn names_from_text(bytes: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    (names.len() == 100).then_some(names)
}

/// The array itself, without copying its bytes when nothing else refers to them.
fn take_array(array: std::rc::Rc<std::cell::RefCell<NdArray>>) -> NdArray {
    match std::rc::Rc::try_unwrap(array) {
        Ok(cell) => cell.into_inner(),
        Err(shared) => {
            let a = shared.borrow();
            NdArray {
                shape: a.shape.clone(),
                dtype: a.dtype.clone(),
                fortran: a.fortran,
                data: a.data.clone(),
                built: a.built,
            }
        }
    }
}

/// Checks that `data` is a built uint8 array of shape (N, 3072) and returns its bytes in row order.
fn image_bytes(path: &Path, a: NdArray) -> Result<Vec<u8>, PythonDataError> {
    let format = |message: String| PythonDataError::Format { path: path.into(), message };
    if !a.built {
        return Err(format("'data' is an array that was never given its contents".into()));
    }
    if a.item_size() != Some(1) || !a.dtype.trim_start_matches(['|', '<', '>', '=']).starts_with('u') {
        return Err(format(format!("'data' has dtype '{}', expected 'u1' (uint8)", a.dtype)));
    }
    let [n, IMAGE_BYTES] = a.shape[..] else {
        return Err(format(format!("'data' has shape {:?}, expected (N, {IMAGE_BYTES})", a.shape)));
    };
    if n == 0 {
        return Err(format("'data' holds no images".into()));
    }
    let data = std::rc::Rc::try_unwrap(a.data).unwrap_or_else(|shared| shared.as_ref().clone());
    Ok(if a.fortran { transpose(&data, n, IMAGE_BYTES) } else { data })
}

/// Column-major (Fortran) `rows x cols` bytes to row-major.
fn transpose(data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    for (c, column) in data.chunks_exact(rows).enumerate() {
        for (r, &v) in column.iter().enumerate() {
            out[r * cols + c] = v;
        }
    }
    out
}

/// A list of `n` labels in `0..=max`.
fn parse_labels(path: &Path, v: &Value, n: usize, what: &'static str, max: u8) -> Result<Vec<u8>, PythonDataError> {
    let format = |message: String| PythonDataError::Format { path: path.into(), message };
    let items = v.items().ok_or_else(|| format(format!("'{what}_labels' is a {}, not a list", v.kind())))?;
    if items.len() != n {
        return Err(format(format!("{n} images but {} {what} labels", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| match item {
            Value::Int(x) if (0..=i64::from(max)).contains(x) => Ok(*x as u8),
            Value::Int(x) => Err(PythonDataError::BadLabel { path: path.into(), index, what, value: *x, max }),
            other => Err(format(format!("{what} label {index} is a {}, not an int", other.kind()))),
        })
        .collect()
}

/// The files of an archive that matter, by file name: (member path, bytes).
fn read_members(path: &Path) -> Result<HashMap<&'static str, (String, Vec<u8>)>, PythonDataError> {
    const WANTED: [&str; 6] = ["train", "test", "meta", "train.bin", "test.bin", "fine_label_names.txt"];
    let file = std::fs::File::open(path).map_err(|source| PythonDataError::Io { path: path.into(), source })?;
    let broken = |e: std::io::Error| PythonDataError::Archive {
        path: path.into(),
        message: format!("cannot read it as a .tar.gz ({e}): is it truncated, or not a CIFAR-100 archive?"),
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut found = HashMap::new();
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry.path().map_err(broken)?.to_string_lossy().into_owned();
        let name = member.rsplit('/').next().unwrap_or_default();
        let Some(&key) = WANTED.iter().find(|&&w| w == name) else { continue };
        let size = entry.header().size().map_err(broken)?;
        let max = max_member_bytes(key);
        if size > max {
            return Err(PythonDataError::Archive {
                path: path.into(),
                message: format!("member {member} claims {size} bytes; CIFAR-100's {key} has at most {max}"),
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(broken)?;
        found.insert(key, (member, bytes));
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar_python")
    }

    /// The message of an expected error (`DataSet` has no `Debug`, so `unwrap_err` is unavailable).
    fn err_text<T>(r: Result<T, PythonDataError>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    fn split_fixture(name: &str) -> Result<Split, PythonDataError> {
        read_python_split(&fixtures().join("splits").join(name), Some(1))
    }

    #[test]
    fn loads_the_python_2_layout_of_the_official_files() {
        let c = load_python_dir_expecting(&fixtures(), Expected::ANY).unwrap();
        assert_eq!(c.root, fixtures().join(PYTHON_DIR));
        assert_eq!((c.train.len(), c.test.len()), (4, 2));
        assert_eq!(c.train.images.len(), 4 * IMAGE_BYTES);
        // The generator puts image i's index in its first byte, fine label 99 first and coarse 19 last.
        assert_eq!((0..4).map(|i| c.train.image(i)[0]).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        assert_eq!((c.train.labels[0], c.train.coarse[3]), (99, 19));
        assert_eq!(c.class_names.len(), 100);
        assert_eq!(c.class_names, builtin_names());
        let err = err_text(load_python_dir(&fixtures()));
        assert!(err.contains("train: 4 images, expected 50000"), "{err}");
    }

    #[test]
    fn reads_what_python_3_writes_at_protocols_2_4_and_5() {
        let p4 = split_fixture("py3_protocol4").unwrap();
        for name in ["py3_protocol2", "py3_protocol5"] {
            let s = split_fixture(name).unwrap();
            assert_eq!((&s.images, &s.labels, &s.coarse), (&p4.images, &p4.labels, &p4.coarse), "{name}");
        }
        assert_eq!((p4.labels[0], p4.coarse[0]), (99, 19));
    }

    #[test]
    fn a_fortran_ordered_array_comes_back_in_row_order() {
        let s = read_python_split(&fixtures().join("splits/py3_protocol4_fortran"), Some(2)).unwrap();
        for i in 0..2 {
            for j in [0, 1, 255, 3071] {
                assert_eq!(s.image(i)[j] as usize, (101 * i + 7 * j) % 256, "pixel ({i}, {j})");
            }
        }
    }

    #[test]
    fn damaged_files_give_messages_naming_file_and_offset() {
        let path = fixtures().join("cifar-100-python/train");
        let good = std::fs::read(&path).unwrap();
        let p = Path::new("cut/train");
        let err = parse_python_split(p, good[..good.len() / 2].to_vec(), None).unwrap_err().to_string();
        assert!(err.contains("cut/train") && err.contains("truncated") && err.contains("at byte"), "{err}");
        let err = parse_python_split(p, b"\x89PNG\r\n".to_vec(), None).unwrap_err().to_string();
        assert!(err.contains("not a pickle") && err.contains("0x89"), "{err}");
        let err = parse_python_split(p, Vec::new(), None).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        for cut in (0..good.len()).step_by(97) {
            assert!(parse_python_split(p, good[..cut].to_vec(), None).is_err());
        }
    }

    #[test]
    fn wrong_contents_are_reported_not_panicked_on() {
        let meta = std::fs::read(fixtures().join("cifar-100-python/meta")).unwrap();
        let err = parse_python_split(Path::new("m"), meta.clone(), None).unwrap_err().to_string();
        assert!(err.contains("no 'data' entry"), "{err}");
        assert_eq!(parse_meta(Path::new("m"), &meta).unwrap()[99], "worm");
        let train = std::fs::read(fixtures().join("cifar-100-python/train")).unwrap();
        let err = parse_meta(Path::new("t"), &train).unwrap_err().to_string();
        assert!(err.contains("fine_label_names"), "{err}");
    }

    #[test]
    fn labels_and_shapes_are_checked() {
        let p = Path::new("x");
        let ints = |v: &[i64]| {
            Value::List(std::rc::Rc::new(std::cell::RefCell::new(crate::data::pickle::Items(
                v.iter().map(|&i| Value::Int(i)).collect(),
            ))))
        };
        assert_eq!(parse_labels(p, &ints(&[0, 99]), 2, "fine", 99).unwrap(), vec![0, 99]);
        let err = parse_labels(p, &ints(&[0, 100]), 2, "fine", 99).unwrap_err().to_string();
        assert!(err.contains("image 1 has fine label 100"), "{err}");
        let err = parse_labels(p, &ints(&[-1]), 1, "coarse", 19).unwrap_err().to_string();
        assert!(err.contains("coarse label -1"), "{err}");
        let err = parse_labels(p, &ints(&[1]), 2, "fine", 99).unwrap_err().to_string();
        assert!(err.contains("2 images but 1 fine labels"), "{err}");

        let array = |shape: Vec<usize>, dtype: &str| NdArray {
            data: std::rc::Rc::new(vec![0; shape.iter().product::<usize>() * if dtype == "<i8" { 8 } else { 1 }]),
            shape,
            dtype: dtype.into(),
            fortran: false,
            built: true,
        };
        let err = image_bytes(p, array(vec![2, 3071], "u1")).unwrap_err().to_string();
        assert!(err.contains("shape [2, 3071]"), "{err}");
        let err = image_bytes(p, array(vec![2, 3072], "<i8")).unwrap_err().to_string();
        assert!(err.contains("dtype '<i8'"), "{err}");
        assert_eq!(image_bytes(p, array(vec![2, 3072], "u1")).unwrap().len(), 2 * 3072);
        assert_eq!(transpose(&[1, 4, 2, 5, 3, 6], 2, 3), vec![1, 2, 3, 4, 5, 6]);
    }

    fn tar_gz(members: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn write_temp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn reads_both_official_archives_without_unpacking() {
        let dir = tempfile::tempdir().unwrap();
        let f = |n: &str| std::fs::read(fixtures().join(PYTHON_DIR).join(n)).unwrap();
        let (train, test, meta) = (f("train"), f("test"), f("meta"));
        let py = tar_gz(&[
            ("cifar-100-python/file.txt~", b"junk"),
            ("cifar-100-python/train", &train),
            ("cifar-100-python/test", &test),
            ("cifar-100-python/meta", &meta),
        ]);
        let path = write_temp(&dir, "cifar-100-python.tar.gz", &py);
        let c = load_tar_gz_expecting(&path, Expected::ANY).unwrap();
        let direct = load_python_dir_expecting(&fixtures(), Expected::ANY).unwrap();
        assert_eq!((c.train.images, c.test.labels), (direct.train.images, direct.test.labels));
        assert_eq!(c.root, path);
        let err = err_text(load_tar_gz(&path));
        assert!(err.contains("cifar-100-python.tar.gz/cifar-100-python/train: 4 images"), "{err}");

        let mut bin = Vec::new();
        for (coarse, fine) in [(1u8, 2u8), (19, 99)] {
            bin.extend([coarse, fine]);
            bin.extend(std::iter::repeat_n(fine, IMAGE_BYTES));
        }
        let names: String = (0..100).map(|i| format!("class{i}\n")).collect();
        let archive = tar_gz(&[
            ("cifar-100-binary/train.bin", &bin),
            ("cifar-100-binary/test.bin", &bin[..2 + IMAGE_BYTES]),
            ("cifar-100-binary/fine_label_names.txt", names.as_bytes()),
        ]);
        let path = write_temp(&dir, "cifar-100-binary.tar.gz", &archive);
        let c = load_tar_gz_expecting(&path, Expected::ANY).unwrap();
        assert_eq!((c.train.labels, c.train.coarse, c.test.len()), (vec![2, 99], vec![1, 19], 1));
        assert_eq!(c.class_names[7], "class7");
    }

    #[test]
    fn broken_or_unrelated_archives_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let train = std::fs::read(fixtures().join("cifar-100-python/train")).unwrap();
        let good = tar_gz(&[("cifar-100-python/train", &train), ("cifar-100-python/test", &train)]);
        let path = write_temp(&dir, "cut.tar.gz", &good[..good.len() / 2]);
        let err = err_text(load_tar_gz(&path));
        assert!(err.contains("cut.tar.gz") && err.contains("truncated"), "{err}");
        let path = write_temp(&dir, "plain.tar.gz", b"not gzip at all");
        let err = err_text(load_tar_gz(&path));
        assert!(err.contains("plain.tar.gz: cannot read it as a .tar.gz"), "{err}");
        let path = write_temp(&dir, "other.tar.gz", &tar_gz(&[("notes/readme.txt", b"hi")]));
        let err = err_text(load_tar_gz(&path));
        assert!(err.contains("holds neither"), "{err}");
    }

    /// Sizes are checked before any byte is read: the file is sparse (no disk used) and the archive member is a
    /// bare header claiming 200 MB, so reading either would fail differently (or take the memory) first.
    #[test]
    fn files_and_archive_members_larger_than_cifar_100_are_refused_from_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("train");
        std::fs::File::create(&big).unwrap().set_len(160_000_001).unwrap();
        let err = err_text(read_python_split(&big, None));
        assert!(err.contains("160000001 bytes; CIFAR-100's train has at most 160000000"), "{err}");

        let mut h = tar::Header::new_gnu();
        h.set_path("cifar-100-python/train").unwrap();
        h.set_size(200_000_000);
        h.set_mode(0o644);
        h.set_cksum();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, h.as_bytes()).unwrap();
        let path = write_temp(&dir, "claims.tar.gz", &gz.finish().unwrap());
        let err = err_text(load_tar_gz(&path));
        assert!(
            err.contains("member cifar-100-python/train claims 200000000 bytes; CIFAR-100's train has at most"),
            "{err}"
        );
    }

    #[test]
    fn missing_folders_and_archives_are_named() {
        let err = err_text(load_python_dir(Path::new("/nonexistent/x")));
        assert!(err.contains("/nonexistent/x") && err.contains("cifar-100-python"), "{err}");
        let err = err_text(load_tar_gz(Path::new("/nonexistent/a.tar.gz")));
        assert!(err.contains("cannot read /nonexistent/a.tar.gz"), "{err}");
    }
}
