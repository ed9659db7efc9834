//! Training on the real CIFAR-100 (skipped with a message when ../shared/data is absent), and crash safety of
//! checkpoint writes.

use candle_core::Device;
use mobilenetv3::model::arch::{ModelConfig, Variant};
use mobilenetv3::model::weights::{self, LoadOptions, ModelMeta};
use mobilenetv3::train::{self, Status, TrainConfig, TrainControl, TrainEvent};
use mobilenetv3::MobileNetV3;
use std::path::PathBuf;
use std::time::Duration;

fn data_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/cifar-100-binary");
    if d.join("train.bin").is_file() {
        Some(d)
    } else {
        eprintln!("SKIPPED: the real CIFAR-100 is not at {} (it is in CI and on development machines)", d.display());
        None
    }
}

#[test]
fn real_data_has_the_known_channel_statistics() {
    let Some(dir) = data_dir() else { return };
    let ds = mobilenetv3::data::load(&dir).unwrap();
    assert_eq!((ds.train.len(), ds.test.len()), (50_000, 10_000));
    let (mean, std) = mobilenetv3::data::channel_stats(&ds.train);
    let (em, es) = ([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]);
    for c in 0..3 {
        assert!((mean[c] - em[c]).abs() < 1e-4, "mean[{c}] = {}", mean[c]);
        assert!((std[c] - es[c]).abs() < 1e-4, "std[{c}] = {}", std[c]);
    }
    assert_eq!(ds.class_names[0], "apple");
}

#[test]
fn a_short_real_run_lowers_the_loss_and_keeps_its_best_model() {
    let Some(dir) = data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::reference(ModelConfig::new(Variant::Small, 0.25));
    cfg.epochs = 1;
    cfg.batch_size = 64;
    cfg.limit_train = Some(4096);
    cfg.limit_test = Some(512);
    cfg.data_dir = Some(dir);
    cfg.out_dir = out.path().to_path_buf();
    let mut steps = Vec::new();
    let mut saved = None;
    let h = train::run(&cfg, None, &TrainControl::new(), |ev| match ev {
        TrainEvent::Step { loss, .. } => steps.push(loss),
        TrainEvent::Checkpoint { path, .. } => saved = Some(path),
        _ => {}
    })
    .unwrap();
    assert_eq!(steps.len(), 64);
    let first: f32 = steps[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = steps[54..].iter().sum::<f32>() / 10.0;
    assert!(last < first - 0.05, "loss did not go down: first 10 steps {first:.3}, last 10 {last:.3}");
    assert_eq!(h.status, Status::Finished);
    let path = saved.expect("a best checkpoint");
    let loaded = weights::load_model(&path, &Device::Cpu, &LoadOptions::default()).unwrap();
    let t = loaded.meta.training.expect("training summary in the header");
    assert_eq!(t["epoch"], 1);
    assert!(out.path().join("mobilenetv3_small_0.25.history.json").is_file());
}

#[test]
fn a_stopped_run_stops_within_a_batch() {
    let Some(dir) = data_dir() else { return };
    let out = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::reference(ModelConfig::new(Variant::Small, 0.25));
    cfg.batch_size = 32;
    cfg.limit_train = Some(1024);
    cfg.limit_test = Some(64);
    cfg.data_dir = Some(dir);
    cfg.out_dir = out.path().to_path_buf();
    let control = TrainControl::new();
    let mut steps = 0;
    let h = train::run(&cfg, None, &control, |ev| {
        if let TrainEvent::Step { .. } = ev {
            steps += 1;
            if steps == 3 {
                control.stop();
            }
        }
    })
    .unwrap();
    assert_eq!(steps, 3);
    assert_eq!(h.status, Status::Stopped);
}

/// The child half of the crash test: saves checkpoints in a loop until it is killed.
#[test]
fn checkpoint_writer_child() {
    let Ok(path) = std::env::var("MBV3_CRASH_TEST_PATH") else { return };
    let cfg = ModelConfig::new(Variant::Large, 1.0);
    let model = MobileNetV3::new(&cfg, &Device::Cpu, 1).unwrap();
    let mut meta = ModelMeta::cifar100(&cfg);
    // The same weights each time with a new round number: nearly all the child's time is spent writing.
    for round in 0u64.. {
        meta.training = Some(serde_json::json!({ "round": round }));
        weights::save_model(std::path::Path::new(&path), model.params(), &meta).unwrap();
    }
}

#[test]
fn sigkill_during_checkpoint_writes_leaves_a_loadable_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mobilenetv3_large_1.0.safetensors");
    let cfg = ModelConfig::new(Variant::Large, 1.0);
    weights::save_model(&path, MobileNetV3::new(&cfg, &Device::Cpu, 99).unwrap().params(), &ModelMeta::cifar100(&cfg))
        .unwrap();
    let mut written_by_child = 0;
    let temp_files = || {
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .count()
    };
    // Kill times spread over 0.3-2.3 s, until a kill has landed in the middle of a write (its temp file is left)
    // after the child has completed at least one write; at most 40 rounds (the test fails if that never happens).
    for round in 0..40u64 {
        let delay_ms = 300 + (round * 433) % 2000;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "checkpoint_writer_child", "--nocapture", "--test-threads=1"])
            .env("MBV3_CRASH_TEST_PATH", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL: no chance to clean up, as in a power cut of the process.
        child.kill().unwrap();
        child.wait().unwrap();
        let loaded = weights::load_model(&path, &Device::Cpu, &LoadOptions::default())
            .unwrap_or_else(|e| panic!("round {round}: the checkpoint is not loadable after SIGKILL: {e}"));
        assert_eq!(loaded.meta.config.name(), "large_1.0");
        written_by_child += loaded.meta.training.is_some() as usize;
        if written_by_child > 0 && temp_files() > 0 {
            break;
        }
    }
    // The child did replace the file, and at least one kill landed in the middle of a write (its temp file is
    // still there, and yet the model loaded).
    assert!(written_by_child > 0, "the child never completed a write");
    assert!(temp_files() > 0, "no kill happened during a write; the test proved nothing");
}
