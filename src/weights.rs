//! Weight files: the native safetensors format (PyTorch state_dict names plus metadata) and PyTorch `.pth`
//! checkpoints. Every file is checked against the architecture before it is used, and a file that does not
//! fit gets an error that says what was expected and what was found.

use crate::arch::{self, ArchSpec, ModelConfig, TensorRole, Variant};
use crate::fsutil::write_atomic;
use crate::labels::{CIFAR100_FINE, CIFAR100_MEAN, CIFAR100_STD};
use crate::model::MobileNetV3;
use crate::params::ParamStore;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Marks files written by this project in the safetensors header.
pub const FORMAT_TAG: &str = "mobilenetv3-studio/1";

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
            training: h.get("training").and_then(|s| serde_json::from_str(s).ok()),
        };
        (variant, width, si, partial)
    }
}

#[derive(Default)]
struct PartialMeta {
    class_names: Option<Vec<String>>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    dropout: Option<f32>,
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

/// A model read from a file, with where it came from.
pub struct LoadedModel {
    pub model: MobileNetV3,
    pub meta: ModelMeta,
    pub path: PathBuf,
}

/// The raw content of a weight file.
pub struct RawWeights {
    pub tensors: HashMap<String, Tensor>,
    pub header: Option<HashMap<String, String>>,
}

/// Reads the tensors of a safetensors or PyTorch zip file (detected from the content, not the name).
pub fn read_raw(path: &Path) -> Result<RawWeights> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.into(), source })?;
    let not_model = |reason: String| WeightsError::NotAModel { path: path.into(), reason };
    if bytes.starts_with(b"PK\x03\x04") {
        let list = candle_core::pickle::read_all(path)
            .map_err(|e| not_model(format!("a zip file, but not a PyTorch state_dict ({e})")))?;
        if list.is_empty() {
            return Err(not_model("a PyTorch file without tensors".into()));
        }
        return Ok(RawWeights { tensors: list.into_iter().collect(), header: None });
    }
    if bytes.len() < 8 {
        return Err(not_model(format!("only {} bytes long", bytes.len())));
    }
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| not_model(format!("neither a safetensors file nor a PyTorch zip checkpoint ({e})")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| not_model(format!("unreadable safetensors header ({e})")))?;
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let t = candle_core::safetensors::Load::load(&view, &Device::Cpu)
            .map_err(|e| not_model(format!("tensor {name} cannot be read ({e})")))?;
        tensors.insert(name, t);
    }
    Ok(RawWeights { tensors, header: header.metadata().clone() })
}

/// The metadata header of a safetensors file, without reading its tensors (None for other formats).
pub fn read_header(path: &Path) -> Result<Option<HashMap<String, String>>> {
    use std::io::Read;
    let io = |source| WeightsError::Io { path: path.into(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    if f.read_exact(&mut len).is_err() {
        return Ok(None);
    }
    let n = u64::from_le_bytes(len);
    if n == 0 || n > 100_000_000 {
        return Ok(None);
    }
    let mut header = vec![0u8; n as usize];
    if f.read_exact(&mut header).is_err() {
        return Ok(None);
    }
    let v: serde_json::Value = match serde_json::from_slice(&header) {
        Ok(v) => v,
        Err(_) => return Ok(None),
    };
    let meta = v.get("__metadata__").and_then(|m| m.as_object()).map(|m| {
        m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect::<HashMap<_, _>>()
    });
    Ok(Some(meta.unwrap_or_default()))
}

/// Checks that `tensors` holds exactly what `spec` needs: every name, each shape, a numeric dtype.
pub fn check_tensors(tensors: &HashMap<String, Tensor>, spec: &ArchSpec) -> std::result::Result<(), String> {
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
        // PyTorch stores num_batches_tracked as a 0-d tensor; accept a 1-element one too.
        let fits = found.dims() == t.shape.as_slice() || (t.shape.is_empty() && found.elem_count() == 1);
        if !fits {
            shapes.push(format!("{} is {:?}, expected {:?}", t.name, found.dims(), t.shape));
        }
        let numeric_ok = match t.role {
            TensorRole::BnBatchCount => true,
            _ => found.dtype().is_float(),
        };
        if !numeric_ok {
            shapes.push(format!("{} has dtype {:?}, expected a float type", t.name, found.dtype()));
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

/// Works out variant and width from the tensor shapes alone (PyTorch files carry no metadata).
/// `name_hint` is the file name: a width written in it (`..._0.75_...`) is preferred when the shapes allow it.
pub fn detect_config(tensors: &HashMap<String, Tensor>, name_hint: &str) -> std::result::Result<ModelConfig, String> {
    let mut blocks = BTreeSet::new();
    for name in tensors.keys() {
        if let Some(rest) = name.strip_prefix("bottlenecks_1.") {
            if let Some(i) = rest.split('.').next().and_then(|i| i.parse::<usize>().ok()) {
                blocks.insert(i);
            }
        }
    }
    let variant = match blocks.len() {
        11 => Variant::Small,
        15 => Variant::Large,
        0 => return Err("no tensors named bottlenecks_1.* (MobileNetV3 state_dict names)".into()),
        n => return Err(format!("{n} bottlenecks found; MobileNetV3-Small has 11, Large has 15")),
    };
    let stem = tensors
        .get("conv_0.0.weight")
        .ok_or("no stem convolution conv_0.0.weight")?
        .dims()
        .first()
        .copied()
        .unwrap_or(0);
    // Every width w with int(16 w) == stem lies in [stem/16, (stem+1)/16); try the likely ones first.
    let mut candidates: Vec<f64> = width_hints(name_hint);
    candidates.extend([0.25, 0.35, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]);
    let (lo, hi) = (stem as f64 / 16.0, (stem + 1) as f64 / 16.0);
    for digits in 1..=4 {
        let step = 10f64.powi(-digits);
        let mut w = (lo / step).floor() * step;
        while w < hi + step {
            candidates.push((w * 10f64.powi(digits)).round() / 10f64.powi(digits));
            w += step;
        }
    }
    for w in candidates {
        let cfg = ModelConfig::new(variant, w);
        if cfg.validate().is_ok() && check_tensors(tensors, &cfg.spec()).is_ok() {
            return Ok(cfg);
        }
    }
    // Say what the closest guess lacks.
    let guess = ModelConfig::new(variant, lo.max(0.01));
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
        .collect()
}

/// Loads a model file (safetensors or `.pth`) onto `device`, checking it against the architecture.
pub fn load_model(path: &Path, device: &Device, opts: &LoadOptions) -> Result<LoadedModel> {
    let raw = read_raw(path)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unrecognised = |reason: String| WeightsError::Unrecognised { path: path.into(), reason };
    let (h_variant, h_width, h_si, partial) = match &raw.header {
        Some(h) => ModelMeta::from_header(h),
        None => (None, None, None, PartialMeta::default()),
    };
    let mut config = match (h_variant, h_width) {
        (Some(v), Some(w)) => ModelConfig::new(v, w),
        _ => detect_config(&raw.tensors, &file_name).map_err(unrecognised)?,
    };
    config.initial_stride = h_si.or(opts.initial_stride).unwrap_or(1);
    if let Some(classes) = raw.tensors.get("conv_4.bias").and_then(|t| t.dims().first().copied()) {
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
    let spec = config.spec();
    check_tensors(&raw.tensors, &spec).map_err(|details| WeightsError::Mismatch {
        path: path.into(),
        expected: format!("MobileNetV3-{} width {}", config.variant, arch::format_width(config.width)),
        details,
    })?;
    let mut meta = ModelMeta::cifar100(&config);
    if let Some(names) = partial.class_names {
        if names.len() == config.num_classes {
            meta.class_names = names;
        }
    }
    if meta.class_names.len() != config.num_classes {
        meta.class_names = (0..config.num_classes).map(|i| format!("class_{i}")).collect();
    }
    meta.mean = partial.mean.unwrap_or(meta.mean);
    meta.std = partial.std.unwrap_or(meta.std);
    meta.training = partial.training;
    let params = ParamStore::from_tensors(&spec, raw.tensors, device)?;
    Ok(LoadedModel { model: MobileNetV3::from_params(&config, params), meta, path: path.into() })
}

/// The bytes of a native weight file: every state_dict tensor (the unused SE ones too, so that PyTorch's
/// `load_state_dict(strict=True)` accepts it) plus the metadata header.
pub fn to_safetensors_bytes(params: &ParamStore, meta: &ModelMeta) -> Result<Vec<u8>> {
    let mut tensors = Vec::new();
    for (name, t) in params.snapshot()? {
        let t = t.to_device(&Device::Cpu)?;
        let t = if t.dtype() == DType::I64 { t } else { t.to_dtype(DType::F32)? };
        tensors.push((name, t));
    }
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(meta.to_header()))
        .map_err(|e| WeightsError::Invalid(format!("cannot serialise the weights: {e}")))
}

/// Saves a model atomically: a crash at any moment leaves either the previous file or the new one.
pub fn save_model(path: &Path, model: &MobileNetV3, meta: &ModelMeta) -> Result<()> {
    let bytes = to_safetensors_bytes(model.params(), meta)?;
    write_atomic(path, &bytes).map_err(|source| WeightsError::Write { path: path.into(), source })
}
