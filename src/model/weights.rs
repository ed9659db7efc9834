//! Weight files: the native safetensors format (PyTorch state_dict names plus metadata) and PyTorch `.pth`
//! checkpoints. Every file is checked against the architecture before it is used, and a file that does not
//! fit gets an error that says what was expected and what was found.

use crate::data::labels::{CIFAR100_FINE, CIFAR100_MEAN, CIFAR100_STD};
use crate::fsutil::write_atomic;
use crate::model::arch::{self, ArchSpec, ModelConfig, TensorRole, Variant};
use crate::model::names;
use crate::model::params::ParamStore;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Marks files written by this project in the safetensors header.
pub(crate) const FORMAT_TAG: &str = "mobilenetv3-studio/1";

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a model file: {reason}")]
    NotAModel { path: PathBuf, reason: String },
    #[error("{path} does not look like MobileNetV3: {reason}")]
    Unrecognised { path: PathBuf, reason: String },
    #[error("{path} holds {found}, but {expected} was asked for")]
    WrongVariant { path: PathBuf, expected: String, found: String },
    #[error("{path} does not fit {expected}: {details}")]
    Mismatch { path: PathBuf, expected: String, details: String },
    #[error("{path} holds weights that are not all finite (NaN or infinity, first in {tensor}): it comes from a run that diverged and cannot classify")]
    NotFinite { path: PathBuf, tensor: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, WeightsError>;

/// What the safetensors header says besides the tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelMeta {
    pub config: ModelConfig,
    pub class_names: Vec<String>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Side of the square input the model was trained on; images are resized to it (32 for CIFAR-100, and for
    /// files that do not record it).
    pub image_size: usize,
    /// Free-form training summary (accuracy, epochs, recipe), when the file came from a training run.
    pub training: Option<serde_json::Value>,
}

impl ModelMeta {
    /// Metadata for a CIFAR-100 model with the standard normalisation.
    pub fn cifar100(config: &ModelConfig) -> Self {
        ModelMeta {
            config: config.clone(),
            class_names: CIFAR100_FINE.iter().map(|s| s.to_string()).collect(),
            mean: CIFAR100_MEAN,
            std: CIFAR100_STD,
            image_size: arch::INPUT_SIZE,
            training: None,
        }
    }

    fn to_header(&self) -> HashMap<String, String> {
        let c = &self.config;
        let mut h = HashMap::new();
        h.insert("format".into(), FORMAT_TAG.into());
        h.insert("variant".into(), c.variant.name().into());
        h.insert("width".into(), arch::format_width(c.width));
        h.insert("si".into(), c.initial_stride.to_string());
        h.insert("num_classes".into(), c.num_classes.to_string());
        h.insert("dropout".into(), c.dropout.to_string());
        h.insert("class_names".into(), serde_json::to_string(&self.class_names).unwrap_or_default());
        h.insert("mean".into(), serde_json::to_string(&self.mean).unwrap_or_default());
        h.insert("std".into(), serde_json::to_string(&self.std).unwrap_or_default());
        h.insert("image_size".into(), self.image_size.to_string());
        if let Some(t) = &self.training {
            h.insert("training".into(), t.to_string());
        }
        h
    }

    /// Reads what the header holds; fields it lacks are left to the caller (None).
    fn from_header(h: &HashMap<String, String>) -> (Option<Variant>, Option<f64>, Option<usize>, PartialMeta) {
        let variant = h.get("variant").and_then(|v| Variant::parse(v));
        let width = h.get("width").and_then(|w| w.parse().ok());
        let si = h.get("si").and_then(|s| s.parse().ok());
        let partial = PartialMeta {
            class_names: h.get("class_names").and_then(|s| serde_json::from_str(s).ok()),
            mean: h.get("mean").and_then(|s| serde_json::from_str(s).ok()),
            std: h.get("std").and_then(|s| serde_json::from_str(s).ok()),
            dropout: h.get("dropout").and_then(|s| s.parse().ok()),
            image_size: h.get("image_size").and_then(|s| s.parse().ok()),
            training: h.get("training").and_then(|s| serde_json::from_str(s).ok()),
        };
        (variant, width, si, partial)
    }
}

#[derive(Default)]
pub(crate) struct PartialMeta {
    class_names: Option<Vec<String>>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    dropout: Option<f32>,
    image_size: Option<usize>,
    training: Option<serde_json::Value>,
}

/// What the caller knows before loading.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Refuse a file that holds another variant or width.
    pub expect: Option<(Variant, f64)>,
    /// The initial stride for files that do not record it (`.pth`): strides leave no trace in the shapes.
    pub initial_stride: Option<usize>,
}

/// A model read from a file, with where it came from: what it is (`meta.config`), its parameters and its
/// metadata. The executors are built from these in [`crate::exec`] (`MobileNetV3::from_params`, the inference
/// plan, the training step), so that the model knows nothing of how it runs.
pub struct LoadedModel {
    pub params: ParamStore,
    pub meta: ModelMeta,
    pub path: PathBuf,
}

/// What a weight file says of one tensor, read from its header (safetensors) or pickle (`.pth`) before any
/// tensor data is read.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMeta {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

/// Anything with a shape and an element type: a tensor read, or one only described.
pub trait Shaped {
    fn shape_dims(&self) -> &[usize];
    fn elem_dtype(&self) -> DType;
}

impl Shaped for Tensor {
    fn shape_dims(&self) -> &[usize] {
        self.dims()
    }
    fn elem_dtype(&self) -> DType {
        self.dtype()
    }
}

impl Shaped for TensorMeta {
    fn shape_dims(&self) -> &[usize] {
        &self.shape
    }
    fn elem_dtype(&self) -> DType {
        self.dtype
    }
}

/// The largest weight file read: MobileNetV3-Large at width 2 with its optimizer state is ~140 MB.
pub(crate) const MAX_FILE_BYTES: u64 = 1 << 30;
/// The largest safetensors header read (a model's is a few tens of KB with its metadata).
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// A weight file's tensor descriptions and header, read without its tensor data.
pub struct FileIndex {
    pub tensors: HashMap<String, TensorMeta>,
    pub header: Option<HashMap<String, String>>,
    pth: Option<crate::model::pth::PthIndex>,
}

/// The raw content of a weight file.
pub struct RawWeights {
    pub tensors: HashMap<String, Tensor>,
    pub header: Option<HashMap<String, String>>,
}

fn safetensors_dtype(s: &str) -> Option<DType> {
    Some(match s {
        "F32" => DType::F32,
        "F64" => DType::F64,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        _ => return None,
    })
}

/// Reads what a file holds without reading tensor data: for safetensors the JSON header (every tensor's dtype,
/// shape and byte range checked against each other and the file's length, in checked arithmetic), for a
/// PyTorch zip its pickle ([`crate::model::pth::PthIndex`]).
pub(crate) fn inspect(path: &Path) -> Result<FileIndex> {
    use std::io::Read;
    let io = |source| WeightsError::Io { path: path.into(), source };
    let not_model = |reason: String| WeightsError::NotAModel { path: path.into(), reason };
    let file_len = std::fs::metadata(path).map_err(io)?.len();
    if file_len > MAX_FILE_BYTES {
        return Err(not_model(format!("{file_len} bytes, more than any MobileNetV3 weight file ({MAX_FILE_BYTES})")));
    }
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut first = [0u8; 8];
    let got = f.read(&mut first).map_err(io)?;
    if got >= 4 && first.starts_with(b"PK\x03\x04") {
        let index = crate::model::pth::PthIndex::open(path)
            .map_err(|e| not_model(format!("a zip file, but not a readable PyTorch checkpoint: {e}")))?;
        if index.tensors.is_empty() {
            return Err(not_model("a PyTorch file without tensors".into()));
        }
        let tensors = index
            .tensors
            .iter()
            .map(|(n, i)| (n.clone(), TensorMeta { shape: i.shape.clone(), dtype: i.dtype }))
            .collect();
        return Ok(FileIndex { tensors, header: None, pth: Some(index) });
    }
    if file_len < 8 || got < 8 {
        return Err(not_model(format!("only {file_len} bytes long")));
    }
    let n = u64::from_le_bytes(first);
    let neither = "neither a safetensors file nor a PyTorch zip checkpoint";
    if n > MAX_HEADER_BYTES || n > file_len - 8 {
        return Err(not_model(format!("{neither} (its first 8 bytes announce a header of {n} bytes)")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io)?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| not_model(format!("{neither} (header: {e})")))?;
    let obj = json.as_object().ok_or_else(|| not_model(format!("{neither} (its header is not a JSON object)")))?;
    let data_len = file_len - 8 - n;
    let mut tensors = HashMap::new();
    let mut meta = None;
    for (name, v) in obj {
        if name == "__metadata__" {
            meta = v.as_object().map(|m| {
                m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect::<HashMap<_, _>>()
            });
            continue;
        }
        let t = tensor_entry(name, v, data_len).map_err(|e| not_model(format!("tensor {name}: {e}")))?;
        tensors.insert(name.clone(), t);
    }
    Ok(FileIndex { tensors, header: Some(meta.unwrap_or_default()), pth: None })
}

/// One tensor entry of a safetensors header: `{"dtype", "shape", "data_offsets"}`, consistent with itself and
/// with the `data_len` bytes that follow the header.
fn tensor_entry(name: &str, v: &serde_json::Value, data_len: u64) -> std::result::Result<TensorMeta, String> {
    let dtype_name = v["dtype"].as_str().ok_or("no dtype")?;
    let dtype = safetensors_dtype(dtype_name).ok_or_else(|| format!("element type {dtype_name} is not supported"))?;
    let shape = v["shape"]
        .as_array()
        .ok_or("no shape")?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or("a shape that is not a list of sizes")?;
    let offsets = v["data_offsets"].as_array().ok_or("no data_offsets")?;
    let [Some(begin), Some(end)] = [offsets.first().and_then(|x| x.as_u64()), offsets.get(1).and_then(|x| x.as_u64())]
    else {
        return Err("data_offsets is not two byte positions".into());
    };
    let bytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes() as u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("shape {shape:?} is larger than any file"))?;
    if end < begin || end > data_len || end - begin != bytes {
        return Err(format!(
            "shape {shape:?} of {dtype_name} needs {bytes} bytes, but its data_offsets are {begin}..{end} of {data_len}"
        ));
    }
    let _ = name;
    Ok(TensorMeta { shape, dtype })
}

/// Reads the tensors of a safetensors or PyTorch zip file (detected from the content, not the name).
pub fn read_raw(path: &Path) -> Result<RawWeights> {
    let index = inspect(path)?;
    read_data(path, index, None)
}

/// Reads the data of the tensors an [`inspect`] described (only those in `only`, when given).
fn read_data(path: &Path, index: FileIndex, only: Option<&BTreeSet<String>>) -> Result<RawWeights> {
    let not_model = |reason: String| WeightsError::NotAModel { path: path.into(), reason };
    let wanted = |n: &String| only.is_none_or(|o| o.contains(n));
    if let Some(pth) = &index.pth {
        let names: Vec<String> = index.tensors.keys().filter(|n| wanted(n)).cloned().collect();
        let tensors = pth.read(names).map_err(|e| not_model(e.to_string()))?;
        return Ok(RawWeights { tensors, header: None });
    }
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| not_model(format!("neither a safetensors file nor a PyTorch zip checkpoint ({e})")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        if !wanted(&name) {
            continue;
        }
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
            .map_err(|e| not_model(format!("tensor {name} cannot be read ({e})")))?;
        tensors.insert(name, t);
    }
    Ok(RawWeights { tensors, header: index.header })
}

/// The first tensor of `tensors` (by name) that holds a NaN or an infinity.
pub(crate) fn first_non_finite(tensors: &HashMap<String, Tensor>) -> candle_core::Result<Option<String>> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        if !t.dtype().is_float() {
            continue;
        }
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if v.iter().any(|x| !x.is_finite()) {
            return Ok(Some(name.clone()));
        }
    }
    Ok(None)
}

/// Checks that `tensors` holds exactly what `spec` needs: every name, each shape, a numeric dtype.
pub(crate) fn check_tensors<T: Shaped>(
    tensors: &HashMap<String, T>,
    spec: &ArchSpec,
) -> std::result::Result<(), String> {
    let specs = spec.tensors();
    let expected: BTreeSet<&str> = specs.iter().map(|t| t.name.as_str()).collect();
    let mut problems = Vec::new();
    let missing: Vec<&str> = specs.iter().map(|t| t.name.as_str()).filter(|n| !tensors.contains_key(*n)).collect();
    let mut extra: Vec<&str> = tensors.keys().map(String::as_str).filter(|n| !expected.contains(n)).collect();
    extra.sort();
    if !missing.is_empty() {
        problems.push(format!("{} missing tensor(s): {}", missing.len(), list(&missing)));
    }
    if !extra.is_empty() {
        problems.push(format!("{} unexpected tensor(s): {}", extra.len(), list(&extra)));
    }
    let mut shapes = Vec::new();
    for t in &specs {
        let Some(found) = tensors.get(&t.name) else {
            continue;
        };
        let dims = found.shape_dims();
        // PyTorch stores num_batches_tracked as a 0-d tensor; accept a 1-element one too.
        let fits = dims == t.shape.as_slice() || (t.shape.is_empty() && dims.iter().product::<usize>() == 1);
        if !fits {
            shapes.push(format!("{} is {:?}, expected {:?}", t.name, dims, t.shape));
        }
        let numeric_ok = match t.role {
            TensorRole::BnBatchCount => true,
            _ => found.elem_dtype().is_float(),
        };
        if !numeric_ok {
            shapes.push(format!("{} has dtype {:?}, expected a float type", t.name, found.elem_dtype()));
        }
    }
    if !shapes.is_empty() {
        let refs: Vec<&str> = shapes.iter().map(String::as_str).collect();
        problems.push(format!("{} wrong shape(s): {}", shapes.len(), list(&refs)));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn list(items: &[&str]) -> String {
    const SHOWN: usize = 4;
    let mut s = items.iter().take(SHOWN).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", ... ({} more)", items.len() - SHOWN));
    }
    s
}

/// The most classes a model file may have.
const MAX_CLASSES: usize = 100_000;

/// The most stem channels any allowed width gives (16 x 2).
const MAX_STEM: usize = 32;

/// Works out variant and width from the tensor shapes alone (PyTorch files carry no metadata).
/// `name_hint` is the file name: a width written in it (`..._0.75_...`) is preferred when the shapes allow it.
pub fn detect_config<T: Shaped>(
    tensors: &HashMap<String, T>,
    name_hint: &str,
) -> std::result::Result<ModelConfig, String> {
    let mut blocks = BTreeSet::new();
    blocks.extend(tensors.keys().filter_map(|name| names::block_index(name)));
    let variant = match blocks.len() {
        11 => Variant::Small,
        15 => Variant::Large,
        0 => return Err(format!("no tensors named {}* (MobileNetV3 state_dict names)", names::BLOCK_PREFIX)),
        n => return Err(format!("{n} bottlenecks found; MobileNetV3-Small has 11, Large has 15")),
    };
    let stem_weight = names::stem().weight;
    let stem = tensors
        .get(&stem_weight)
        .ok_or_else(|| format!("no stem convolution {stem_weight}"))?
        .shape_dims()
        .first()
        .copied()
        .unwrap_or(0);
    if stem == 0 || stem > MAX_STEM {
        return Err(format!(
            "the stem convolution {stem_weight} has {stem} output channels; MobileNetV3 at widths up to 2 has \
             1 to {MAX_STEM}"
        ));
    }
    // Every width w with int(16 w) == stem lies in [stem/16, (stem+1)/16): enumerate the ones with up to four
    // decimals as integers (k / 10^d), after the likely ones.
    let mut candidates: Vec<f64> = width_hints(name_hint);
    candidates.extend([0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]);
    for digits in 1..=4u32 {
        let scale = 10usize.pow(digits);
        let (first, last) = (stem * scale / 16, ((stem + 1) * scale).div_ceil(16));
        candidates.extend((first..=last).map(|k| k as f64 / scale as f64));
    }
    for w in candidates {
        let cfg = ModelConfig::new(variant, w);
        if arch::scale(16, w) == stem && cfg.validate().is_ok() && check_tensors(tensors, &cfg.spec()).is_ok() {
            return Ok(cfg);
        }
    }
    // Say what the closest guess lacks.
    let guess = ModelConfig::new(variant, (stem as f64 / 16.0).max(0.01));
    Err(format!(
        "the shapes fit no width of MobileNetV3-{variant} (stem has {stem} channels); against {}: {}",
        guess.name(),
        check_tensors(tensors, &guess.spec()).err().unwrap_or_default()
    ))
}

/// Numbers in a file name that could be a width: `Mobilenet_v3_large_0.75_best.pth` gives 0.75.
fn width_hints(name: &str) -> Vec<f64> {
    name.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|s| s.contains('.'))
        .filter_map(|s| s.trim_matches('.').parse::<f64>().ok())
        .filter(|w| *w > 0.0 && *w <= 2.0)
        .take(8)
        .collect()
}

/// What a model file is, found from its header or pickle alone (no tensor data read): its configuration and
/// header, with every tensor's name, shape and element type checked against the architecture.
pub struct ModelSummary {
    pub config: ModelConfig,
    pub header: Option<HashMap<String, String>>,
}

impl ModelSummary {
    /// The test top-1 (a fraction) that the file's training summary records, if any.
    pub fn top1(&self) -> Option<f64> {
        let training: serde_json::Value = serde_json::from_str(self.header.as_ref()?.get("training")?).ok()?;
        training["top1"].as_f64().filter(|t| t.is_finite())
    }
}

/// Describes a model file without reading its tensor data (the model list of the app and the CLI).
pub fn describe(path: &Path, opts: &LoadOptions) -> Result<ModelSummary> {
    let index = inspect(path)?;
    let config = config_of(path, &index, opts)?;
    Ok(ModelSummary { config, header: index.header })
}

/// The configuration a file holds, checked against the tensors it describes.
fn config_of(path: &Path, index: &FileIndex, opts: &LoadOptions) -> Result<ModelConfig> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unrecognised = |reason: String| WeightsError::Unrecognised { path: path.into(), reason };
    let (h_variant, h_width, h_si, partial) = match &index.header {
        Some(h) => ModelMeta::from_header(h),
        None => (None, None, None, PartialMeta::default()),
    };
    let mut config = match (h_variant, h_width) {
        (Some(v), Some(w)) => ModelConfig::new(v, w),
        _ => detect_config(&index.tensors, &file_name).map_err(unrecognised)?,
    };
    config.initial_stride = h_si.or(opts.initial_stride).unwrap_or(1);
    let classifier = names::classifier();
    if let Some(classes) = index.tensors.get(&classifier.bias).and_then(|t| t.shape.first().copied()) {
        if !(1..=MAX_CLASSES).contains(&classes) {
            return Err(unrecognised(format!(
                "the classifier {} has {classes} outputs; 1 to {MAX_CLASSES} are supported",
                names::CLASSIFIER_LAYER
            )));
        }
        config.num_classes = classes;
    }
    if let Some(p) = partial.dropout {
        config.dropout = p;
    }
    config.validate().map_err(|e| WeightsError::Invalid(format!("{}: {e}", path.display())))?;
    if let Some((v, w)) = opts.expect {
        if v != config.variant || arch::scale(1000, w) != arch::scale(1000, config.width) {
            return Err(WeightsError::WrongVariant {
                path: path.into(),
                expected: ModelConfig::new(v, w).name(),
                found: config.name(),
            });
        }
    }
    check_tensors(&index.tensors, &config.spec()).map_err(|details| WeightsError::Mismatch {
        path: path.into(),
        expected: format!("MobileNetV3-{} width {}", config.variant, arch::format_width(config.width)),
        details,
    })?;
    Ok(config)
}

/// Loads a model file (safetensors or `.pth`) onto `device`, checking it against the architecture from its
/// header or pickle before any tensor data is read, and refusing weights that are not all finite.
pub fn load_model(path: &Path, device: &Device, opts: &LoadOptions) -> Result<LoadedModel> {
    let index = inspect(path)?;
    let config = config_of(path, &index, opts)?;
    let partial = index.header.as_ref().map(|h| ModelMeta::from_header(h).3).unwrap_or_default();
    let raw = read_data(path, index, None)?;
    if let Some(tensor) = first_non_finite(&raw.tensors)? {
        return Err(WeightsError::NotFinite { path: path.into(), tensor });
    }
    let spec = config.spec();
    let mut meta = ModelMeta::cifar100(&config);
    if let Some(names) = partial.class_names {
        if names.len() == config.num_classes {
            meta.class_names = names;
        }
    }
    if meta.class_names.len() != config.num_classes {
        meta.class_names = (0..config.num_classes).map(|i| format!("class_{i}")).collect();
    }
    meta.mean = partial.mean.filter(|m| m.iter().all(|x| x.is_finite())).unwrap_or(meta.mean);
    meta.std = partial.std.filter(|s| s.iter().all(|x| x.is_finite() && *x > 0.0)).unwrap_or(meta.std);
    meta.training = partial.training;
    // Sizes the executors take; anything else in a header is damage, read as CIFAR-100's 32.
    meta.image_size = partial.image_size.filter(|s| (16..=1024).contains(s)).unwrap_or(meta.image_size);
    let params = ParamStore::from_tensors(&spec, raw.tensors, device)?;
    Ok(LoadedModel { params, meta, path: path.into() })
}

/// The bytes of a native weight file: every state_dict tensor (the unused SE ones too, so that PyTorch's
/// `load_state_dict(strict=True)` accepts it) plus the metadata header.
pub(crate) fn to_safetensors_bytes(params: &ParamStore, meta: &ModelMeta) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for (name, t) in params.snapshot()? {
        let t = t.to_device(&Device::Cpu)?;
        let t = if t.dtype() == DType::I64 { t } else { t.to_dtype(DType::F32)? };
        tensors.push((name, t));
    }
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    if let Some(tensor) = first_non_finite(&map)? {
        return Err(WeightsError::Invalid(format!(
            "the weights are not all finite (NaN or infinity, first in {tensor}): a model that diverged is not saved"
        )));
    }
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta.to_header()))
        .map_err(|e| WeightsError::Invalid(format!("cannot serialise the weights: {e}")))
}

/// Saves a model's parameters atomically: a crash at any moment leaves either the previous file or the new one.
pub fn save_model(path: &Path, params: &ParamStore, meta: &ModelMeta) -> Result<()> {
    let bytes = to_safetensors_bytes(params, meta)?;
    write_atomic(path, &bytes).map_err(|source| WeightsError::Write { path: path.into(), source })
}
