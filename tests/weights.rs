//! Weight files: PyTorch checkpoints load, native files round-trip, and files that do not fit are refused with
//! an error that names the problem (never a panic).

use candle_core::{Device, Tensor};
use mobilenetv3::model::arch::{ModelConfig, Variant};
use mobilenetv3::model::weights::{self, load_model, LoadOptions, ModelMeta, WeightsError};
use mobilenetv3::{MobileNetV3, Mode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn input() -> Tensor {
    let io = candle_core::safetensors::load(fixture("small_0.25_si1.io.safetensors"), &Device::Cpu).unwrap();
    io["input"].clone()
}

fn logits(m: &MobileNetV3) -> Tensor {
    m.forward(&input(), Mode::Eval).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar().unwrap()
}

fn load(p: &Path) -> Result<weights::LoadedModel, WeightsError> {
    load_model(p, &Device::Cpu, &LoadOptions::default())
}

#[test]
fn pytorch_checkpoint_loads_with_variant_and_width_from_shapes() {
    let pth = load(&fixture("small_0.25.pth")).unwrap();
    assert_eq!(pth.meta.config.variant, Variant::Small);
    assert_eq!(pth.meta.config.width, 0.25);
    let st = load(&fixture("small_0.25_si1.weights.safetensors")).unwrap();
    assert_eq!(max_diff(&logits(&MobileNetV3::from_loaded(pth)), &logits(&MobileNetV3::from_loaded(st))), 0.0);
}

#[test]
fn width_is_recovered_from_shapes_when_no_metadata_says_it() {
    // Python's save_file wrote a header; strip it by re-reading the raw tensors and detecting.
    let raw = weights::read_raw(&fixture("small_0.75_si2.weights.safetensors")).unwrap();
    let cfg = weights::detect_config(&raw.tensors, "no_hint").unwrap();
    assert_eq!((cfg.variant, cfg.width), (Variant::Small, 0.75));
    let raw = weights::read_raw(&fixture("large_0.35_si2.weights.safetensors")).unwrap();
    let cfg = weights::detect_config(&raw.tensors, "Mobilenet_v3_large_0.35_best.pth").unwrap();
    assert_eq!((cfg.variant, cfg.width), (Variant::Large, 0.35));
}

#[test]
fn native_file_round_trips_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let cfg = ModelConfig::new(Variant::Large, 0.25);
    let model = MobileNetV3::new(&cfg, &Device::Cpu, 7).unwrap();
    let mut meta = ModelMeta::cifar100(&cfg);
    meta.training = Some(serde_json::json!({"top1": 0.5}));
    weights::save_model(&path, model.params(), &meta).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back.meta, meta);
    assert_eq!(max_diff(&logits(&model), &logits(&MobileNetV3::from_loaded(back))), 0.0);
    // Every state_dict tensor is written, the unused SE ones included (PyTorch strict loading needs them).
    let raw = weights::read_raw(&path).unwrap();
    assert_eq!(raw.tensors.len(), cfg.spec().tensors().len());
    assert!(raw.tensors.contains_key("bottlenecks_1.0.se_block.conv_0.1.weight"));
    // No temp file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn asking_for_another_variant_is_refused() {
    let opts = LoadOptions { expect: Some((Variant::Large, 1.0)), ..Default::default() };
    let err = load_model(&fixture("small_0.25.pth"), &Device::Cpu, &opts).err().unwrap();
    assert!(matches!(err, WeightsError::WrongVariant { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("small_0.25") && msg.contains("large_1.0"), "{msg}");
}

fn write_tensors(path: &Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

#[test]
fn missing_extra_and_misshapen_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = weights::read_raw(&fixture("small_0.25_si1.weights.safetensors")).unwrap().tensors;
    raw.remove("conv_2.1.running_var");
    raw.insert("bogus.weight".into(), Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap());
    let p = dir.path().join("broken.safetensors");
    write_tensors(&p, &raw);
    let msg = load(&p).err().unwrap().to_string();
    assert!(msg.contains("conv_2.1.running_var") && msg.contains("bogus.weight"), "{msg}");

    let mut raw = weights::read_raw(&fixture("small_0.25_si1.weights.safetensors")).unwrap().tensors;
    raw.insert(
        "conv_4.weight".into(),
        Tensor::zeros((100, 1024, 1, 2), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    write_tensors(&p, &raw);
    let msg = load(&p).err().unwrap().to_string();
    assert!(msg.contains("conv_4.weight is [100, 1024, 1, 2], expected [100, 1024, 1, 1]"), "{msg}");
}

#[test]
fn files_that_are_not_models_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.safetensors", vec![]),
        ("text.pth", b"hello, I am not a model at all".to_vec()),
        (
            "truncated.safetensors",
            std::fs::read(fixture("small_0.25_si1.weights.safetensors")).unwrap()[..5000].to_vec(),
        ),
        ("truncated.pth", std::fs::read(fixture("small_0.25.pth")).unwrap()[..5000].to_vec()),
        (
            "image.safetensors",
            std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_images/rose.png")).unwrap(),
        ),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        let err = load(&p).err().unwrap_or_else(|| panic!("{name} loaded"));
        let msg = err.to_string();
        assert!(msg.contains(name), "{name}: {msg}");
        assert!(matches!(err, WeightsError::NotAModel { .. }), "{name}: {msg}");
    }
    let err = load(&dir.path().join("absent.safetensors")).err().unwrap();
    assert!(matches!(err, WeightsError::Io { .. }), "{err}");
}

#[test]
fn a_network_of_other_shape_is_not_mistaken_for_mobilenet() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = HashMap::new();
    t.insert("fc.weight".to_string(), Tensor::zeros((10, 4), candle_core::DType::F32, &Device::Cpu).unwrap());
    let p = dir.path().join("resnet.safetensors");
    write_tensors(&p, &t);
    let err = load(&p).err().unwrap();
    assert!(matches!(err, WeightsError::Unrecognised { .. }), "{err}");
}
