//! PyTorch checkpoints (`torch.save(model.state_dict())`): a zip archive whose `<name>/data.pkl` describes each
//! tensor (its storage record, element type, offset, size and stride) and whose `<name>/data/<key>` records hold
//! the raw little-endian bytes.
//!
//! The pickle is read with this crate's own reader ([`crate::data::pickle`]), which never runs code and is bounded
//! on hostile input. [`PthIndex::open`] reads only the pickle and the archive's directory, so a file can be
//! checked against the architecture (names, shapes, element types, and that each record really holds the
//! bytes its tensor claims) before any tensor data is read or allocated.

use crate::data::pickle::{self, TorchTensor, Value};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest `data.pkl` read: a state_dict's pickle is a few tens of KB.
const MAX_PICKLE_BYTES: u64 = 16 << 20;

/// Why a file is not a readable PyTorch checkpoint. Messages say what is wrong without the path (the caller
/// names the file, as [`crate::model::weights::WeightsError::NotAModel`] does).
#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("cannot open it: {0}")]
    Open(std::io::Error),
    #[error("its zip directory cannot be read ({0})")]
    Directory(zip::result::ZipError),
    #[error("a zip entry is broken ({0})")]
    BrokenEntry(zip::result::ZipError),
    /// A record of the archive (the pickle, or a tensor's storage) cannot be read.
    #[error("cannot read {record} ({error})")]
    Record { record: String, error: std::io::Error },
    #[error("it has no data.pkl")]
    NoPickle,
    #[error("its data.pkl claims {bytes} bytes; a state_dict's is a few tens of KB")]
    PickleTooLarge { bytes: u64 },
    #[error("{record}, at byte {offset}: {message}")]
    Pickle { record: String, offset: usize, message: String },
    #[error("its pickle holds a {kind}, not a state_dict")]
    NotAStateDict { kind: &'static str },
    #[error("a state_dict key that is a {kind}, not text")]
    KeyNotText { kind: &'static str },
    #[error("state_dict entry {name} is a {kind}, not a tensor")]
    NotATensor { name: String, kind: &'static str },
    #[error("tensor {name} has element type '{dtype}', which is not supported")]
    UnsupportedType { name: String, dtype: &'static str },
    #[error("tensor {name} claims more elements than any file can hold")]
    TooManyElements { name: String },
    #[error("tensor {name} is not stored contiguously (size {size:?}, stride {stride:?})")]
    NotContiguous { name: String, size: Vec<usize>, stride: Vec<usize> },
    #[error("tensor {name} reads elements {offset}..{end} of a storage of {numel}")]
    OutsideStorage { name: String, offset: usize, end: usize, numel: usize },
    #[error("tensor {name} refers to {record}, which the archive does not have")]
    MissingRecord { name: String, record: String },
    #[error("tensor {name}: {record} holds {have} bytes, but its storage needs {need}")]
    ShortStorage { name: String, record: String, have: u64, need: usize },
    #[error("no tensor {name}")]
    NoTensor { name: String },
    #[error("tensor {name} is too large")]
    TooLarge { name: String },
    #[error("tensor {name}: {record} holds {got} bytes, expected {expected}")]
    ShortRecord { name: String, record: String, got: usize, expected: usize },
    #[error("tensor {name} cannot be read ({error})")]
    Tensor { name: String, error: candle_core::Error },
}

/// A failed read of `record`, from the I/O or from the zip layer (a `ZipError` converts into an `io::Error` that
/// keeps it, message and all).
fn record_error(record: &str) -> impl FnOnce(std::io::Error) -> PthError + '_ {
    move |error| PthError::Record { record: record.to_string(), error }
}

/// One tensor of a checkpoint, as its pickle describes it (no data read).
#[derive(Clone, Debug, PartialEq)]
pub struct PthTensorInfo {
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Storage record (under `<prefix>data/`) and the element offset of the tensor in it.
    record: String,
    offset: usize,
}

impl PthTensorInfo {
    /// Bytes of the tensor's data.
    fn byte_len(&self) -> Option<usize> {
        self.shape.iter().try_fold(self.dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
    }
}

/// The tensors of a PyTorch checkpoint, checked for consistency with the archive, not yet read.
#[derive(Debug)]
pub struct PthIndex {
    path: PathBuf,
    pub tensors: BTreeMap<String, PthTensorInfo>,
}

fn dtype_of(code: &str) -> Option<DType> {
    Some(match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "f2" => DType::F16,
        "bf2" => DType::BF16,
        "i8" => DType::I64,
        "u1" => DType::U8,
        _ => return None,
    })
}

impl PthIndex {
    /// Reads the archive's directory and its pickle; every tensor must be a contiguous view that lies inside its
    /// storage, and every storage must fit in its record. Errors say what is wrong, without the path (the caller
    /// names the file).
    pub fn open(path: &Path) -> Result<PthIndex, PthError> {
        let file = std::fs::File::open(path).map_err(PthError::Open)?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(PthError::Directory)?;
        let mut pickle_entry = None;
        let mut records: HashMap<String, u64> = HashMap::new();
        for i in 0..zip.len() {
            let entry = zip.by_index(i).map_err(PthError::BrokenEntry)?;
            let Ok(name) = entry.name().map(|n| n.into_owned()) else { continue };
            if name.ends_with("data.pkl") && name.matches('/').count() <= 1 && pickle_entry.is_none() {
                pickle_entry = Some((i, name.clone(), entry.size()));
            }
            records.insert(name, entry.size());
        }
        let Some((index, pkl_name, pkl_size)) = pickle_entry else {
            return Err(PthError::NoPickle);
        };
        if pkl_size > MAX_PICKLE_BYTES {
            return Err(PthError::PickleTooLarge { bytes: pkl_size });
        }
        let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or_default().to_string();
        let mut bytes = Vec::with_capacity(pkl_size as usize);
        zip.by_index(index)
            .map_err(|e| record_error(&pkl_name)(e.into()))?
            .take(MAX_PICKLE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(record_error(&pkl_name))?;
        let root = pickle::parse(&bytes).map_err(|e| PthError::Pickle {
            record: pkl_name.clone(),
            offset: e.offset,
            message: e.message,
        })?;
        let Value::Dict(entries) = &root else {
            return Err(PthError::NotAStateDict { kind: root.kind() });
        };
        let mut tensors = BTreeMap::new();
        for (key, value) in entries.borrow().iter() {
            let name = key.text().ok_or_else(|| PthError::KeyNotText { kind: key.kind() })?;
            let Value::Tensor(t) = value else {
                return Err(PthError::NotATensor { name, kind: value.kind() });
            };
            let info = tensor_info(&prefix, &name, t, &records)?;
            tensors.insert(name, info);
        }
        Ok(PthIndex { path: path.to_path_buf(), tensors })
    }

    /// Reads the data of every tensor named, each checked to be exactly as long as its description says.
    pub fn read(&self, names: impl IntoIterator<Item = String>) -> Result<HashMap<String, Tensor>, PthError> {
        let file = std::fs::File::open(&self.path).map_err(PthError::Open)?;
        let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(PthError::Directory)?;
        let mut out = HashMap::new();
        for name in names {
            let Some(info) = self.tensors.get(&name) else { return Err(PthError::NoTensor { name }) };
            let Some(len) = info.byte_len() else { return Err(PthError::TooLarge { name }) };
            let skip = info.offset * info.dtype.size_in_bytes();
            let mut record = zip.by_name(&info.record).map_err(|e| record_error(&info.record)(e.into()))?;
            std::io::copy(&mut record.by_ref().take(skip as u64), &mut std::io::sink())
                .map_err(record_error(&info.record))?;
            let mut bytes = Vec::with_capacity(len);
            record.take(len as u64).read_to_end(&mut bytes).map_err(record_error(&info.record))?;
            if bytes.len() != len {
                let (record, got) = (info.record.clone(), bytes.len());
                return Err(PthError::ShortRecord { name, record, got, expected: len });
            }
            let t = match Tensor::from_raw_buffer(&bytes, info.dtype, &info.shape, &Device::Cpu) {
                Ok(t) => t,
                Err(error) => return Err(PthError::Tensor { name, error }),
            };
            out.insert(name, t);
        }
        Ok(out)
    }
}

/// Checks one tensor's description against its storage and the archive, with checked arithmetic throughout.
fn tensor_info(
    prefix: &str,
    name: &str,
    t: &TorchTensor,
    records: &HashMap<String, u64>,
) -> Result<PthTensorInfo, PthError> {
    let dtype = dtype_of(t.storage.dtype)
        .ok_or_else(|| PthError::UnsupportedType { name: name.into(), dtype: t.storage.dtype })?;
    let too_large = || PthError::TooManyElements { name: name.into() };
    let elements = t.size.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(too_large)?;
    // Row-major strides (any stride is allowed along a dimension of size 1).
    let mut expected = 1usize;
    for (&size, &stride) in t.size.iter().zip(&t.stride).rev() {
        if size != 1 && stride != expected {
            return Err(PthError::NotContiguous { name: name.into(), size: t.size.clone(), stride: t.stride.clone() });
        }
        expected = expected.checked_mul(size).ok_or_else(too_large)?;
    }
    let offset = usize::try_from(t.offset).map_err(|_| too_large())?;
    let numel = usize::try_from(t.storage.numel).map_err(|_| too_large())?;
    if offset.checked_add(elements).is_none_or(|end| end > numel) && elements > 0 {
        return Err(PthError::OutsideStorage {
            name: name.into(),
            offset,
            end: offset.saturating_add(elements),
            numel,
        });
    }
    let record = format!("{prefix}data/{}", t.storage.key);
    let storage_bytes = numel.checked_mul(dtype.size_in_bytes()).ok_or_else(too_large)?;
    match records.get(&record) {
        None => return Err(PthError::MissingRecord { name: name.into(), record }),
        Some(&have) if (have as u128) < storage_bytes as u128 => {
            return Err(PthError::ShortStorage { name: name.into(), record, have, need: storage_bytes })
        }
        Some(_) => {}
    }
    Ok(PthTensorInfo { dtype, shape: t.size.clone(), record, offset })
}
