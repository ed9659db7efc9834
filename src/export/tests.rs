//! The export checked three ways: the file decodes to the graph the issue asks for (standard operators, no
//! BatchNorm, a symbolic batch, the metadata); a plain f64 interpreter of the decoded graph, written from the
//! ONNX operator definitions, gives the engine's logits; and, where `MBV3_ONNX_PYTHON` names a Python with
//! ONNX Runtime and onnx (`.ci/run` makes one), ONNX Runtime gives them too and `onnx.checker` passes.

use super::proto::*;
use super::*;
use crate::exec::inference::InferencePlan;
use crate::model::arch::{ModelConfig, Variant};
use crate::model::params::{Init, ParamStore};
use crate::model::weights::ModelMeta;
use candle_core::Device;
use prost::Message;
use std::collections::HashMap;

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("trained_models").join(format!("mobilenetv3_{name}.safetensors"))
}

fn load(path: &Path) -> LoadedModel {
    load_model(path, &Device::Cpu, &LoadOptions::default()).unwrap()
}

/// A shipped model's weights in another layout: stride `si` at `size` pixels (strides leave no trace in the
/// weights, and a folder-trained model has its own input size), so that its logits are a trained network's.
fn relaid(name: &str, si: usize, size: usize) -> LoadedModel {
    let mut loaded = load(&shipped(name));
    loaded.meta.config.initial_stride = si;
    loaded.meta.image_size = size;
    loaded
}

/// A model with fresh weights, `classes` classes and its own input size.
fn fresh(variant: Variant, width: f64, classes: usize, size: usize) -> LoadedModel {
    let config = ModelConfig { num_classes: classes, ..ModelConfig::new(variant, width) };
    let params = ParamStore::init_with(&config.spec(), &Device::Cpu, 7, Init::default()).unwrap();
    let mut meta = ModelMeta::cifar100(&config);
    meta.class_names = (0..classes).map(|i| format!("class {i}")).collect();
    meta.image_size = size;
    LoadedModel { params, meta, path: PathBuf::from("fresh") }
}

fn decode(loaded: &LoadedModel, opts: ExportOptions) -> ModelProto {
    let bytes = onnx_model(loaded, opts).unwrap().encode_to_vec();
    ModelProto::decode(&bytes[..]).unwrap()
}

/// The dimensions of a graph input or output (float32 only).
fn dims(v: &ValueInfoProto) -> Vec<Option<DimensionValue>> {
    let t = v.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
    assert_eq!(t.elem_type, Some(FLOAT));
    t.shape.as_ref().unwrap().dim.iter().map(|d| d.value.clone()).collect()
}

fn fixed(v: i64) -> Option<DimensionValue> {
    Some(DimensionValue::DimValue(v))
}

/// Deterministic inputs in the range normalised images take.
fn inputs(n: usize, size: usize) -> Vec<f32> {
    (0..n * 3 * size * size).map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 2.0).collect()
}

/// A value of the interpreter: shape and elements.
#[derive(Clone)]
struct Value {
    shape: Vec<usize>,
    data: Vec<f64>,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name.as_deref() == Some(name))
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_f(node: &NodeProto, name: &str) -> f64 {
    attr(node, name).and_then(|a| a.f).unwrap() as f64
}

/// Runs the decoded graph on `x` (n, 3, s, s) in f64, each operator as the ONNX specification defines it.
fn interpret(model: &ModelProto, x: &[f32], n: usize, size: usize) -> Value {
    let graph = model.graph.as_ref().unwrap();
    let mut values: HashMap<String, Value> = HashMap::new();
    for t in &graph.initializer {
        let raw = t.raw_data.as_ref().unwrap();
        let data = raw.chunks(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64).collect();
        values.insert(t.name.clone().unwrap(), Value { shape: t.dims.iter().map(|&d| d as usize).collect(), data });
    }
    let input = Value { shape: vec![n, 3, size, size], data: x.iter().map(|&v| v as f64).collect() };
    values.insert(graph.input[0].name.clone().unwrap(), input);
    for node in &graph.node {
        let arg = |i: usize| values[&node.input[i]].clone();
        let map =
            |v: Value, f: &dyn Fn(f64) -> f64| Value { shape: v.shape, data: v.data.into_iter().map(f).collect() };
        let out = match node.op_type.as_deref().unwrap() {
            "Conv" => conv(node, &arg(0), &arg(1), &arg(2)),
            "Relu" => map(arg(0), &|v| v.max(0.0)),
            "HardSwish" => map(arg(0), &|v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
            "HardSigmoid" => {
                let (a, b) = (attr_f(node, "alpha"), attr_f(node, "beta"));
                map(arg(0), &|v| (a * v + b).clamp(0.0, 1.0))
            }
            "GlobalAveragePool" => {
                let v = arg(0);
                let (nc, hw) = (v.shape[0] * v.shape[1], v.shape[2] * v.shape[3]);
                let data = (0..nc).map(|i| v.data[i * hw..(i + 1) * hw].iter().sum::<f64>() / hw as f64).collect();
                Value { shape: vec![v.shape[0], v.shape[1], 1, 1], data }
            }
            "Mul" => {
                let (a, g) = (arg(0), arg(1));
                assert_eq!(g.shape[..2], a.shape[..2]);
                let hw = a.shape[2] * a.shape[3];
                let data = a.data.iter().enumerate().map(|(i, v)| v * g.data[i / hw]).collect();
                Value { shape: a.shape, data }
            }
            "Add" => {
                let (a, b) = (arg(0), arg(1));
                assert_eq!(a.shape, b.shape);
                Value { shape: a.shape, data: a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect() }
            }
            "Flatten" => {
                let v = arg(0);
                assert_eq!(attr_i(node, "axis", 1), 1);
                Value { shape: vec![v.shape[0], v.shape[1..].iter().product()], data: v.data }
            }
            "Gemm" => {
                let (a, w, b) = (arg(0), arg(1), arg(2));
                assert_eq!(attr_i(node, "transB", 0), 1);
                let (rows, k, out) = (a.shape[0], a.shape[1], w.shape[0]);
                assert_eq!(w.shape[1], k);
                let mut data = vec![0.0; rows * out];
                for r in 0..rows {
                    for o in 0..out {
                        let dot: f64 = (0..k).map(|i| a.data[r * k + i] * w.data[o * k + i]).sum();
                        data[r * out + o] = dot + b.data[o];
                    }
                }
                Value { shape: vec![rows, out], data }
            }
            "Softmax" => {
                let v = arg(0);
                let c = v.shape[1];
                let mut data = v.data.clone();
                for row in data.chunks_mut(c) {
                    let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    row.iter_mut().for_each(|x| *x = (*x - m).exp());
                    let s: f64 = row.iter().sum();
                    row.iter_mut().for_each(|x| *x /= s);
                }
                Value { shape: v.shape, data }
            }
            op => panic!("the interpreter does not know {op}"),
        };
        values.insert(node.output[0].clone(), out);
    }
    values.remove(graph.output[0].name.as_ref().unwrap()).unwrap()
}

/// ONNX Conv (NCHW, weight (o, c / group, k, k), bias, symmetric pads, no dilation).
fn conv(node: &NodeProto, x: &Value, w: &Value, b: &Value) -> Value {
    let ints = |name: &str| attr(node, name).map(|a| a.ints.clone()).unwrap_or_default();
    let (stride, pads, group) = (ints("strides"), ints("pads"), attr_i(node, "group", 1) as usize);
    let (s, p) = (stride.first().copied().unwrap_or(1) as usize, pads.first().copied().unwrap_or(0) as usize);
    assert!(ints("dilations").iter().all(|&d| d == 1));
    let (n, c, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3]);
    let (o, ci, k) = (w.shape[0], w.shape[1], w.shape[2]);
    assert_eq!(ci * group, c);
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (wd + 2 * p - k) / s + 1);
    let per_group = o / group;
    let mut out = vec![0.0; n * o * oh * ow];
    for img in 0..n {
        for oc in 0..o {
            let g = oc / per_group;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = b.data[oc];
                    for cc in 0..ci {
                        let ic = g * ci + cc;
                        for ky in 0..k {
                            let iy = (y * s + ky) as isize - p as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            for kx in 0..k {
                                let ix = (xo * s + kx) as isize - p as isize;
                                if ix < 0 || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x.data[((img * c + ic) * h + iy as usize) * wd + ix as usize];
                                acc += xv * w.data[((oc * ci + cc) * k + ky) * k + kx];
                            }
                        }
                    }
                    out[((img * o + oc) * oh + y) * ow + xo] = acc;
                }
            }
        }
    }
    Value { shape: vec![n, o, oh, ow], data: out }
}

/// The engine's logits (the CPU inference plan, what Classify runs) for `x`.
fn engine_logits(loaded: &LoadedModel, x: &[f32], n: usize) -> Vec<f32> {
    let plan = InferencePlan::new(&loaded.meta.config.spec(), &loaded.params).unwrap();
    plan.forward(x, n, loaded.meta.image_size)
}

/// The largest difference between the engine's and the exported graph's logits, and the largest logit.
fn gap(loaded: &LoadedModel, n: usize) -> (f64, f64) {
    let size = loaded.meta.image_size;
    let x = inputs(n, size);
    let want = engine_logits(loaded, &x, n);
    let got = interpret(&decode(loaded, ExportOptions::default()), &x, n, size);
    assert_eq!(got.shape, vec![n, loaded.meta.config.num_classes]);
    let d = got.data.iter().zip(&want).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
    (d, want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64)
}

/// The exported graph computes the engine's logits: both trained 0.25 networks in the CIFAR layout, and at
/// other input sizes with stride 2 (a folder-trained model's layout). Tolerance: 1e-4 of the largest logit (the
/// engine is f32, the interpreter f64; folding BatchNorm rounds once more).
#[test]
fn the_exported_graph_computes_the_engines_logits() {
    let models = [
        load(&shipped("small_0.25")),
        load(&shipped("large_0.25")),
        relaid("small_0.25", 2, 64),
        relaid("large_0.25", 2, 47),
    ];
    for loaded in &models {
        let (d, max) = gap(loaded, 3);
        let name = format!(
            "{} si {} at {} px",
            loaded.meta.config.name(),
            loaded.meta.config.initial_stride,
            loaded.meta.image_size
        );
        assert!(max > 0.1, "{name}: degenerate logits (largest {max})");
        assert!(d <= 1e-4 * max, "{name}: the exported graph's logits differ by {d:.2e} (largest {max:.2})");
    }
}

/// Standard operators only, BatchNorm folded away, opset 17, one symbolic batch dimension, the class names,
/// input size and normalisation in the metadata; with `--softmax` the output is probabilities.
#[test]
fn the_file_is_a_standard_onnx_model_that_describes_itself() {
    let loaded = fresh(Variant::Small, 0.25, 5, 40);
    let model = decode(&loaded, ExportOptions::default());
    assert_eq!(model.ir_version, Some(IR_VERSION));
    assert_eq!(model.opset_import.len(), 1);
    assert_eq!((model.opset_import[0].domain.as_deref(), model.opset_import[0].version), (Some(""), Some(17)));
    let graph = model.graph.as_ref().unwrap();
    let allowed = ["Conv", "HardSwish", "HardSigmoid", "Relu", "GlobalAveragePool", "Mul", "Add", "Flatten", "Gemm"];
    for node in &graph.node {
        let op = node.op_type.as_deref().unwrap();
        assert!(allowed.contains(&op), "{op} is not among the standard operators the export may use");
        assert!(node.domain.as_deref().unwrap_or("").is_empty(), "{op} outside the standard domain");
    }
    // One Conv per convolution of the network: 1 stem + 3 per block + 2 per squeeze-excite + the last one.
    let spec = loaded.meta.config.spec();
    let convs = 1 + 3 * spec.blocks.len() + 2 * spec.blocks.iter().filter(|b| b.squeeze_excite).count() + 1;
    assert_eq!(graph.node.iter().filter(|n| n.op_type.as_deref() == Some("Conv")).count(), convs);
    // Every node input is the graph input, an initializer or an earlier node's output (topological order).
    let mut known: std::collections::HashSet<String> =
        graph.initializer.iter().filter_map(|t| t.name.clone()).collect();
    known.insert(INPUT.to_string());
    for node in &graph.node {
        for i in &node.input {
            assert!(known.contains(i), "{:?} reads {i} before it exists", node.name);
        }
        known.extend(node.output.iter().cloned());
    }
    let batch = Some(DimensionValue::DimParam("batch".into()));
    assert_eq!(dims(&graph.input[0]), vec![batch.clone(), fixed(3), fixed(40), fixed(40)]);
    assert_eq!(graph.output[0].name.as_deref(), Some(LOGITS));
    assert_eq!(dims(&graph.output[0]), vec![batch, fixed(5)]);
    let meta: HashMap<_, _> =
        model.metadata_props.iter().map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap())).collect();
    let names: Vec<String> = serde_json::from_str(&meta["class_names"]).unwrap();
    assert_eq!(names, loaded.meta.class_names);
    assert_eq!(meta["input_size"], "40");
    assert_eq!(serde_json::from_str::<Vec<f32>>(&meta["mean"]).unwrap(), loaded.meta.mean);
    assert_eq!(serde_json::from_str::<Vec<f32>>(&meta["std"]).unwrap(), loaded.meta.std);

    let with_softmax = decode(&loaded, ExportOptions { softmax: true, ..Default::default() });
    let g = with_softmax.graph.as_ref().unwrap();
    assert_eq!(g.output[0].name.as_deref(), Some(PROBABILITIES));
    assert_eq!(g.node.last().unwrap().op_type.as_deref(), Some("Softmax"));
    let p = interpret(&with_softmax, &inputs(2, 40), 2, 40);
    for row in p.data.chunks(5) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-9 && row.iter().all(|v| *v > 0.0));
    }
}

/// A file that is not a model, a model with a NaN weight, a folder that cannot be made and the model file
/// itself as the output are refused with a reason, and no file (or temp file) is left behind.
#[test]
fn bad_input_is_refused_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let not_a_model = dir.path().join("notes.safetensors");
    std::fs::write(&not_a_model, b"these are notes, not weights").unwrap();
    let e = export_file(&not_a_model, &out, ExportOptions::default()).unwrap_err();
    assert!(matches!(e, ExportError::Model(_)), "{e}");
    assert!(e.to_string().contains("notes.safetensors"), "{e}");

    let loaded = load(&shipped("small_0.25"));
    let mut tensors: HashMap<String, candle_core::Tensor> = loaded.params.snapshot().unwrap().into_iter().collect();
    let name = names::block(2).depthwise.weight;
    let mut w = tensors[&name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
    w[3] = f32::NAN;
    tensors.insert(name.clone(), candle_core::Tensor::from_vec(w, tensors[&name].shape(), &Device::Cpu).unwrap());
    let st = dir.path().join("diverged.safetensors");
    candle_core::safetensors::save(&tensors, &st).unwrap();
    let e = export_file(&st, &out, ExportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("not all finite"), "{e}");

    let good = shipped("small_0.25");
    // A folder that cannot exist: its would-be parent is a file.
    let unwritable = not_a_model.join("m.onnx");
    let e = export_file(&good, &unwritable, ExportOptions::default()).unwrap_err();
    assert!(matches!(e, ExportError::Write { .. }) && e.to_string().contains("m.onnx"), "{e}");

    let copy = dir.path().join("copy.safetensors");
    std::fs::copy(&good, &copy).unwrap();
    let e = export_file(&copy, &copy, ExportOptions::default()).unwrap_err();
    assert!(matches!(e, ExportError::SameFile(_)), "{e}");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&good).unwrap(), "the model was changed");

    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 3, "files left behind: {left:?}");
    assert!(!out.exists());

    // And a good export replaces an existing file whole.
    std::fs::write(&out, b"old").unwrap();
    let done = export_file(&good, &out, ExportOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(&out).unwrap().len() as usize, done.bytes);
    assert_eq!((done.classes, done.image_size), (100, 32));
}

/// `export --size N --si S`: the same weights laid out with another stem stride, declaring another input size
/// (to time the network at photo sizes in another runtime); the graph computes what the engine computes there.
#[test]
fn a_model_can_be_exported_at_another_input_size_and_stride() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small_224.onnx");
    let opts = ExportOptions { image_size: Some(56), initial_stride: Some(2), ..Default::default() };
    let done = export_file(&shipped("small_0.25"), &out, opts).unwrap();
    assert_eq!(done.image_size, 56);
    let model = ModelProto::decode(&std::fs::read(&out).unwrap()[..]).unwrap();
    let graph = model.graph.as_ref().unwrap();
    assert_eq!(dims(&graph.input[0])[2..], [fixed(56), fixed(56)]);
    let meta: HashMap<String, String> =
        model.metadata_props.iter().map(|e| (e.key.clone().unwrap(), e.value.clone().unwrap())).collect();
    assert_eq!((meta["input_size"].as_str(), meta["initial_stride"].as_str()), ("56", "2"));
    let stem = graph.node.iter().find(|n| n.op_type.as_deref() == Some("Conv")).unwrap();
    assert_eq!(attr(stem, "strides").unwrap().ints, vec![2, 2]);
    // That layout, built in memory from the same weights, computes the engine's logits at that size.
    let (d, max) = gap(&relaid("small_0.25", 2, 56), 2);
    assert!(max > 0.1 && d <= 1e-4 * max, "{d:.2e} of {max:.2}");
    let e = export_file(&shipped("small_0.25"), &out, ExportOptions { initial_stride: Some(3), ..Default::default() });
    assert!(e.is_err(), "a stride the network cannot take is refused");
}

/// Writes `data` as a little-endian f32 `.npy` file of `shape` (NumPy's format, version 1.0).
fn write_npy(path: &Path, shape: &[usize], data: &[f32]) {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let tuple = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {tuple}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

/// ONNX Runtime (`tools/onnx/check_onnx.py`, run with the Python `MBV3_ONNX_PYTHON` names) loads the export of
/// every shipped model, `onnx.checker` passes, and its logits on the twelve sample photos (batch 12 and batch 1)
/// match the engine's within 1e-4; the same for a softmax export's probabilities.
#[test]
fn onnx_runtime_runs_every_shipped_models_export_like_the_engine() {
    let Some(python) = std::env::var_os("MBV3_ONNX_PYTHON") else {
        eprintln!(
            "skipped: set MBV3_ONNX_PYTHON to a Python with onnxruntime and onnx (.ci/run makes one in target/onnx-venv)"
        );
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let photos = crate::classify::collect_images(&[root.join("test_images")]);
    assert_eq!(photos.len(), 12, "the sample photos");
    let dir = tempfile::tempdir().unwrap();
    for name in ["small_0.25", "small_0.5", "small_1.0", "large_0.25", "large_0.5", "large_1.0"] {
        let loaded = load(&shipped(name));
        let size = loaded.meta.image_size;
        let x: Vec<f32> = photos
            .iter()
            .flat_map(|p| crate::classify::prepare_image(&loaded.meta, &crate::data::preprocess::decode(p).unwrap()))
            .collect();
        let logits = engine_logits(&loaded, &x, photos.len());
        let case = dir.path().join(name);
        std::fs::create_dir(&case).unwrap();
        export_file(&shipped(name), &case.join("model.onnx"), ExportOptions::default()).unwrap();
        export_file(
            &shipped(name),
            &case.join("model_softmax.onnx"),
            ExportOptions { softmax: true, ..Default::default() },
        )
        .unwrap();
        write_npy(&case.join("input.npy"), &[photos.len(), 3, size, size], &x);
        write_npy(&case.join("logits.npy"), &[photos.len(), loaded.meta.config.num_classes], &logits);
        std::fs::write(case.join("class_names.json"), serde_json::to_string(&loaded.meta.class_names).unwrap())
            .unwrap();
    }
    let status = std::process::Command::new(python)
        .arg(root.join("tools/onnx/check_onnx.py"))
        .arg(dir.path())
        .status()
        .expect("running the ONNX Runtime check");
    assert!(status.success(), "tools/onnx/check_onnx.py failed (its output is above)");
}
