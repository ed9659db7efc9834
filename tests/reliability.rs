//! Hostile files, diverging runs and bad resume files, as a user (or an attacker) meets them through the command
//! line: each must end quickly with a clear error and the right exit code, never a hang, a panic, an abort, or
//! a file that lies. Every hostile file is made here by the test.

use candle_core::{DType, Device, Tensor};
use mobilenetv3::model::arch::{ModelConfig, Variant};
use mobilenetv3::train::{History, Status, TrainConfig};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the CLI in `dir`, killing it after `limit` (a hang fails the test instead of stalling it).
fn run_in(dir: &Path, args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mobilenetv3"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("`mobilenetv3 {}` ran past {limit:?}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A safetensors file of `tensors` (F32 unless the tensor says otherwise).
fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

/// The state_dict names of MobileNetV3-Small, each a zero-element tensor; the stem claims 2^44 channels.
fn zero_size_small_with_huge_stem() -> HashMap<String, Tensor> {
    let spec = ModelConfig::new(Variant::Small, 0.25).spec();
    let mut m = HashMap::new();
    for t in spec.tensors() {
        m.insert(t.name.clone(), Tensor::zeros(0, DType::F32, &Device::Cpu).unwrap());
    }
    m
}

#[test]
fn a_weight_file_whose_shapes_claim_2_pow_44_channels_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // safetensors checks data length against shape, so a zero-element tensor of shape [2^44, 0, 3, 3] parses.
    let header = r#"{"conv_0.0.weight":{"dtype":"F32","shape":[17592186044416,0,3,3],"data_offsets":[0,0]}"#;
    let mut names = String::new();
    for i in 0..11 {
        names.push_str(&format!(
            r#","bottlenecks_1.{i}.pointwise_0.0.weight":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#
        ));
    }
    let json = format!("{header}{names}}}");
    let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(json.as_bytes());
    let path = dir.path().join("huge.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    assert!(bytes.len() < 2048);
    let out = run_in(dir.path(), &["info", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("huge.safetensors") && t.contains("17592186044416"), "{t}");
    // And with the zero-element tensors of a real spec under their real names.
    let path = dir.path().join("zeros.safetensors");
    write_safetensors(&path, &zero_size_small_with_huge_stem());
    let out = run_in(dir.path(), &["info", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// A zip holding one stored record, `archive/data.pkl`, with `pickle` as its content.
fn pth_with_pickle(pickle: &[u8]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(pickle).unwrap();
        z.finish().unwrap();
    }
    buf.into_inner()
}

#[test]
fn a_pth_whose_tensor_rebuild_gets_one_argument_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // OrderedDict({'conv_0.0.weight': _rebuild_tensor_v2(('storage', torch.FloatStorage, '0', 'cpu', 4),)})
    let pickle: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x0f\x00\x00\x00conv_0.0.weightq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03(X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ\x85Rs.";
    let path = dir.path().join("tiny.pth");
    std::fs::write(&path, pth_with_pickle(pickle)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1024);
    let out = run_in(dir.path(), &["info", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("tiny.pth") && !t.contains("panicked"), "{t}");
    // A storage claiming 2^34 elements for a tensor of 4: refused from the metadata, with no other output.
    let pickle: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x0f\x00\x00\x00conv_0.0.weightq\x02ctorch._utils\n_rebuild_tensor_v2\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000X\x03\x00\x00\x00cpu\x8a\x05\x00\x00\x00\x00\x04tQK\x00K\x04\x85K\x01\x85\x89h\x00)Rtq\x06Rs.";
    let path = dir.path().join("claims.pth");
    std::fs::write(&path, pth_with_pickle(pickle)).unwrap();
    let out = run_in(dir.path(), &["info", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("claims.pth") && t.contains("archive/data/0") && !t.contains("skipping"), "{t}");
}

#[test]
fn a_model_with_nan_weights_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors =
        candle_core::safetensors::load(root().join("tests/fixtures/small_0.25_si1.weights.safetensors"), &Device::Cpu)
            .unwrap();
    let w = &tensors["conv_4.bias"];
    let mut v = w.to_vec1::<f32>().unwrap();
    v[3] = f32::NAN;
    tensors.insert("conv_4.bias".into(), Tensor::new(v, &Device::Cpu).unwrap());
    let path = dir.path().join("nan.safetensors");
    write_safetensors(&path, &tensors);
    let photo = root().join("test_images/apple.jpg");
    let out = run_in(
        dir.path(),
        &["classify", "--model", path.to_str().unwrap(), photo.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("nan.safetensors") && t.contains("conv_4.bias") && !t.contains("NaN%"), "{t}");
}

/// CIFAR-100 in the binary layout with the official counts (50,000 + 10,000 records), random pixels and labels.
fn synthetic_cifar(dir: &Path) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for (name, n) in [("train.bin", 50_000usize), ("test.bin", 10_000)] {
        let mut bytes = Vec::with_capacity(n * 3074);
        for _ in 0..n {
            let fine = (next() % 100) as u8;
            bytes.push(fine / 5);
            bytes.push(fine);
            bytes.extend((0..3072 / 8).flat_map(|_| next().to_le_bytes()));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// `classify` without `--model` takes the most accurate model by its header; one whose header claims 99% but
/// whose weights are not finite is skipped with its reason, and the next most accurate classifies.
#[test]
fn classify_skips_a_most_accurate_looking_model_that_does_not_load() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("trained_models");
    std::fs::create_dir_all(&models).unwrap();
    let good = std::fs::read(root().join("trained_models/mobilenetv3_small_0.25.safetensors")).unwrap();
    std::fs::write(models.join("b_good.safetensors"), &good).unwrap();
    // The same file with one NaN weight and a header that claims top-1 99%.
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&good[8..8 + n]).unwrap();
    header["__metadata__"]["training"] = serde_json::json!(r#"{"top1": 0.99}"#);
    let start = header["conv_4.bias"]["data_offsets"][0].as_u64().unwrap() as usize;
    let mut data = good[8 + n..].to_vec();
    data[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let header = serde_json::to_vec(&header).unwrap();
    let mut bad = (header.len() as u64).to_le_bytes().to_vec();
    bad.extend_from_slice(&header);
    bad.extend_from_slice(&data);
    std::fs::write(models.join("a_nan.safetensors"), bad).unwrap();

    let photo = root().join("test_images/apple.jpg");
    let out = run_in(dir.path(), &["classify", photo.to_str().unwrap()], Duration::from_secs(60));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("skipping model file") && t.contains("a_nan.safetensors") && t.contains("not all finite"),
        "{t}"
    );
    assert!(t.contains("b_good.safetensors, top-1 60.18%") && t.contains("apple.jpg"), "{t}");
}

#[test]
fn a_diverging_run_stops_with_a_message_and_saves_no_nan_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    synthetic_cifar(&data);
    let out_dir = dir.path().join("models");
    let args = [
        "train",
        "--model",
        "small",
        "--width",
        "0.25",
        "--epochs",
        "3",
        "--lr",
        "10",
        "--limit-train",
        "2560",
        "--limit-test",
        "256",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
    ];
    let out = run_in(dir.path(), &args, Duration::from_secs(600));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("diverged") && t.contains("lower learning rate") && t.contains("epoch 1"), "{t}");
    // The history says why, and reads back.
    let history = History::load(&out_dir.join("mobilenetv3_small_0.25.history.json")).unwrap();
    assert!(matches!(&history.status, Status::Failed(m) if m.contains("diverged")), "{}", history.status);
    assert!(history.step_losses.last().is_some_and(|l| !l.is_finite()));
    // No model with non-finite weights exists: either none was saved, or the one saved loads.
    let model = out_dir.join("mobilenetv3_small_0.25.safetensors");
    if model.exists() {
        mobilenetv3::model::weights::load_model(&model, &Device::Cpu, &Default::default()).unwrap();
    }
}

/// A resume file whose header is `history` (no tensors: it must be refused before they matter).
fn resume_file(path: &Path, history: &History) {
    let header = serde_json::json!({"history": history, "best_metric": null}).to_string();
    let meta: HashMap<String, String> = [("resume".to_string(), header)].into();
    let empty: Vec<(String, Tensor)> = Vec::new();
    let bytes = safetensors::serialize(empty.iter().map(|(n, t)| (n.as_str(), t)), Some(meta)).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn history_named(name: &str, cfg: TrainConfig) -> History {
    History {
        name: name.into(),
        config: cfg,
        device: "cpu".into(),
        started_unix: 0,
        epochs: Vec::new(),
        step_losses: vec![2.0, f32::NAN],
        best_epoch: None,
        checkpoint: None,
        status: Status::Stopped,
    }
}

#[test]
fn a_resume_file_cannot_choose_where_files_go_nor_the_class_count() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TrainConfig::reference(ModelConfig::new(Variant::Small, 0.25));
    let out = dir.path().join("models");
    let cases = [
        ("escape", history_named("../../escaped", cfg.clone()), "not a plain file name"),
        (
            "classes",
            history_named("ok", {
                let mut c = cfg.clone();
                c.model.num_classes = 1001;
                c
            }),
            "1001 classes; a classifier here has 2 to 1000",
        ),
        (
            "nodata",
            history_named("ok", {
                let mut c = cfg.clone();
                c.data_dir = Some(dir.path().join("gone"));
                c
            }),
            "does not exist",
        ),
    ];
    for (file, history, expected) in cases {
        let path = dir.path().join(format!("{file}.resume.safetensors"));
        resume_file(&path, &history);
        let out = run_in(
            dir.path(),
            &["train", "--resume", path.to_str().unwrap(), "--out", out.to_str().unwrap()],
            Duration::from_secs(60),
        );
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "{file}: {t}");
        assert!(t.contains(expected), "{file}: {t}");
    }
    assert!(!dir.path().parent().unwrap().join("escaped.history.json").exists());
}

/// `train --resume exp/runs/X.resume.safetensors` continues in `exp`, the run's own folder, and a run resumed
/// into a folder where another run of the same name keeps its files (a shipped model) is refused before anything
/// is written there.
#[test]
fn a_resumed_run_never_overwrites_another_runs_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = TrainConfig::reference(ModelConfig::new(Variant::Small, 0.25));
    // The run stops at its data folder, the check after where files go: nothing trains.
    cfg.data_dir = Some(dir.path().join("gone"));
    let mut run = history_named("mobilenetv3_small_0.25", cfg.clone());
    run.started_unix = 1_000;
    std::fs::create_dir_all(dir.path().join("exp/runs")).unwrap();
    let resume = dir.path().join("exp/runs/mobilenetv3_small_0.25.resume.safetensors");
    resume_file(&resume, &run);
    // Another run of the same variant, finished in the default folder.
    let shipped = dir.path().join("trained_models");
    std::fs::create_dir_all(&shipped).unwrap();
    let mut other = history_named("mobilenetv3_small_0.25", cfg);
    other.started_unix = 2_000;
    let other_history = serde_json::to_vec_pretty(&other).unwrap();
    std::fs::write(shipped.join("mobilenetv3_small_0.25.history.json"), &other_history).unwrap();
    std::fs::write(shipped.join("mobilenetv3_small_0.25.safetensors"), b"the shipped model").unwrap();
    let resume_arg = "exp/runs/mobilenetv3_small_0.25.resume.safetensors";

    // Without --out: the run's own folder, so the other run's files are not even looked at.
    let out = run_in(dir.path(), &["train", "--resume", resume_arg], Duration::from_secs(60));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("does not exist") && !t.contains("another run"), "{t}");

    // Pointed at the other run's folder: refused, naming the file it would have overwritten.
    let out =
        run_in(dir.path(), &["train", "--resume", resume_arg, "--out", "trained_models"], Duration::from_secs(60));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("is another run's") && t.contains("stale") && t.contains("mobilenetv3_small_0.25.history.json"),
        "{t}"
    );
    // A model there without a history cannot be told to be this run's either.
    std::fs::remove_file(shipped.join("mobilenetv3_small_0.25.history.json")).unwrap();
    let out =
        run_in(dir.path(), &["train", "--resume", resume_arg, "--out", "trained_models"], Duration::from_secs(60));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("exists without its history"), "{t}");
    assert_eq!(std::fs::read(shipped.join("mobilenetv3_small_0.25.safetensors")).unwrap(), b"the shipped model");
    assert_eq!(std::fs::read_dir(&shipped).unwrap().count(), 1, "nothing else was written in trained_models");
    // The run keeps its recipe: a flag that would change it is a usage error, not silently dropped.
    let out = run_in(dir.path(), &["train", "--resume", resume_arg, "--epochs", "5"], Duration::from_secs(60));
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("--epochs") && t.contains("cannot be used with"), "{t}");
}

/// A PNG of `w` x `h` black pixels at 1 bit each whose image data is a few bytes of zlib: all that matters
/// is that the header claims the size.
fn png_claiming(w: u32, h: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(crc.sum().to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([1, 0, 0, 0, 0]); // 1-bit greyscale
    chunk(&mut png, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&[0u8; 64]).unwrap();
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn an_image_claiming_529_megapixels_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.png");
    std::fs::write(&path, png_claiming(23_000, 23_000)).unwrap();
    let err = mobilenetv3::data::preprocess::decode(&path).unwrap_err();
    assert!(err.contains("23000 x 23000") && err.contains("megapixels"), "{err}");
    let out = run_in(
        dir.path(),
        &[
            "classify",
            "--model",
            root().join("tests/fixtures/small_0.25.pth").to_str().unwrap(),
            path.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("megapixels"), "{}", text(&out));
}

#[test]
fn a_python_pickle_of_100000_nested_tuples_is_an_error_not_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("cifar-100-python");
    std::fs::create_dir(&py).unwrap();
    // PROTO 2, then 100,000 times (EMPTY_TUPLE; TUPLE1 each wraps the one before), STOP.
    let mut p = b"\x80\x02)".to_vec();
    p.extend(std::iter::repeat_n(0x85u8, 100_000));
    p.push(b'.');
    for name in ["train", "test"] {
        std::fs::write(py.join(name), &p).unwrap();
    }
    let out = run_in(
        dir.path(),
        &[
            "train",
            "--epochs",
            "1",
            "--data",
            dir.path().to_str().unwrap(),
            "--out",
            dir.path().join("m").to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("cifar-100-python/train") && t.contains("tuples, lists and dicts"), "{t}");
}

#[test]
fn the_model_list_offers_the_good_model_and_names_each_hostile_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    std::fs::copy(root().join("trained_models/mobilenetv3_small_0.25.safetensors"), &good).unwrap();
    write_safetensors(&dir.path().join("zeros.safetensors"), &zero_size_small_with_huge_stem());
    std::fs::write(dir.path().join("junk.pth"), b"PK\x03\x04 and nothing a zip needs").unwrap();
    std::fs::write(dir.path().join("empty.safetensors"), b"").unwrap();
    let start = Instant::now();
    // What the app's model picker lists (its worker maps these to entries).
    let (models, rejected) = mobilenetv3::classify::scan_models(dir.path(), &Default::default());
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(models.iter().map(|m| m.path.clone()).collect::<Vec<_>>(), vec![good]);
    assert_eq!(models[0].summary.config.name(), "small_0.25");
    let mut names: Vec<String> =
        rejected.iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["empty.safetensors", "junk.pth", "zeros.safetensors"]);
    for (path, reason) in &rejected {
        assert!(reason.contains(&*path.file_name().unwrap().to_string_lossy()), "{reason}");
    }
}

#[test]
fn ctrl_c_stops_a_run_after_its_current_batch_with_exit_code_130() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    synthetic_cifar(&data);
    let out_dir = dir.path().join("models");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mobilenetv3"))
        .current_dir(dir.path())
        .args(["train", "--epochs", "1", "--limit-test", "256", "--data", data.to_str().unwrap()])
        .arg("--out")
        .arg(&out_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once the run has started (its history exists), Ctrl-C.
    let start = Instant::now();
    while !out_dir.join("mobilenetv3_small_0.25.history.json").exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the run never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: sends SIGINT to the child this test started.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the run did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(130), "{t}");
    assert!(t.contains("stopped during epoch 1"), "{t}");
    let history = History::load(&out_dir.join("mobilenetv3_small_0.25.history.json")).unwrap();
    assert_eq!(history.status, Status::Stopped);
}
