//! The command line as a user runs it: real files, real exit codes.

use std::path::PathBuf;
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mobilenetv3"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn classify_reports_each_image_and_fails_only_the_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("test_images/apple.jpg"), dir.path().join("apple.jpg")).unwrap();
    std::fs::write(dir.path().join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"skipped: not an image extension").unwrap();
    let out = bin()
        .args(["classify", "--json", "--top", "3", "--model", "tests/fixtures/small_0.25.pth"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a broken file must make the exit code say so");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    let apple = rows.iter().find(|r| r["path"].as_str().unwrap().ends_with("apple.jpg")).unwrap();
    let top = apple["top"].as_array().unwrap();
    assert_eq!(top.len(), 3);
    let p: f64 = top.iter().map(|t| t["prob"].as_f64().unwrap()).sum();
    assert!(p > 0.0 && p <= 1.0 + 1e-6);
    assert!(top[0]["label"].is_string() && top[0]["index"].as_u64().unwrap() < 100);
    let broken = rows.iter().find(|r| r["path"].as_str().unwrap().ends_with("broken.jpg")).unwrap();
    assert!(broken["error"].is_string());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.jpg"), "{stderr}");
}

#[test]
fn classify_text_output_names_files_and_labels() {
    let out = bin()
        .args([
            "classify",
            "--model",
            "tests/fixtures/small_0.25.pth",
            "test_images/orange.jpg",
            "test_images/rose.png",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("orange.jpg") && text.contains('%'), "{text}");
}

/// Without `--model`, `classify` uses the model whose file records the best top-1 (a file with no training
/// record ranks last); `--all-models` runs each in turn.
#[test]
fn classify_defaults_to_the_most_accurate_model() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("trained_models");
    std::fs::create_dir_all(&models).unwrap();
    // Sorted first by name, with no top-1 in its header.
    std::fs::copy(
        root().join("tests/fixtures/small_0.25_si1.weights.safetensors"),
        models.join("a_untrained.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        root().join("trained_models/mobilenetv3_small_0.25.safetensors"),
        models.join("b_trained.safetensors"),
    )
    .unwrap();
    let photo = root().join("test_images/orange.jpg");
    let out = bin().current_dir(dir.path()).arg("classify").arg(&photo).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("b_trained.safetensors, top-1 60.18%"), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("orange.jpg"), "{stdout}");

    let out = bin().current_dir(dir.path()).args(["classify", "--all-models"]).arg(&photo).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.lines().filter(|l| l.starts_with("== ")).count(), 2, "{stdout}");
}

/// A binary copied alone into an empty folder (as `cargo install` leaves it) writes the files compiled into it to
/// the user's data folder and classifies the sample photos with the compiled-in model, which must be the most
/// accurate of `trained_models/`, byte for byte.
#[test]
fn a_lone_binary_writes_out_the_most_accurate_model_and_the_photos_and_classifies_them() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().ancestors().find(|d| d.join("trained_models").is_dir() || d.join("test_images").is_dir());
    assert!(project.is_none(), "the temporary folder is inside a project folder ({project:?}): set TMPDIR elsewhere");
    let lone = dir.path().join("bin/mobilenetv3");
    std::fs::create_dir_all(lone.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_mobilenetv3"), &lone).unwrap();
    let (data, cwd) = (dir.path().join("xdg-data"), dir.path().join("empty"));
    std::fs::create_dir_all(&cwd).unwrap();
    // A child that another test thread forks while the copy's file is still open for writing holds that file
    // open until it execs: running the copy then fails with "text file busy" (ETXTBSY) for a moment.
    let mut tries = 0;
    let out = loop {
        match Command::new(&lone).current_dir(&cwd).env("XDG_DATA_HOME", &data).arg("classify").output() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => break other.unwrap(),
        }
    };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let user = data.join("mobilenetv3-studio");
    let (ranked, _) = mobilenetv3::classify::models_by_accuracy(&[root().join("trained_models")], &Default::default());
    let best = ranked[0].0.file_name().unwrap();
    let written = std::fs::read(user.join("trained_models").join(best)).expect("the most accurate model written out");
    assert!(written == std::fs::read(&ranked[0].0).unwrap(), "the compiled-in model differs from {best:?}");
    assert!(stderr.contains(&*best.to_string_lossy()), "{stderr}");
    let photos = mobilenetv3::classify::collect_images(&[root().join("test_images")]);
    assert_eq!(stdout.lines().count(), photos.len(), "{stdout}");
    for photo in &photos {
        let name = photo.file_name().unwrap().to_string_lossy();
        assert!(user.join("test_images").join(&*name).is_file(), "{name} not written out");
        assert!(stdout.contains(&*name), "{name} not classified: {stdout}");
    }
}

#[test]
fn info_reports_the_reference_parameter_count() {
    let out = bin().args(["info", "--model", "small", "--width", "0.25", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["params"], 322_435);
    assert_eq!(v["layers"].as_array().unwrap().len(), 15);
}

#[test]
fn convert_writes_a_native_file_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("small.safetensors");
    let out = bin().args(["convert", "tests/fixtures/small_0.25.pth"]).arg(&out_path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let info = bin().arg("info").arg(&out_path).arg("--json").output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(v["name"], "small_0.25");
}

#[test]
fn a_wrong_model_file_is_an_error_not_a_panic() {
    let out = bin().args(["classify", "--model", "test_images/apple.jpg", "test_images/apple.jpg"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a model file"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Counts and sizes no measurement needs are refused with their range before any work, not met by a
/// "capacity overflow" panic or an allocation abort.
#[test]
fn latency_and_bench_refuse_counts_and_batches_out_of_range() {
    let cases: [(&[&str], i32, &str); 7] = [
        (&["latency", "--variants", "small_0.25", "--size", "8"], 2, "16..=512"),
        (&["bench", "train", "--size", "1000"], 2, "16..=512"),
        (&["latency", "--variants", "small_0.25", "--runs", "2000000000000000000"], 2, "1..=1000000"),
        (&["latency", "--variants", "small_0.25", "--warmup", "18446744073709551615"], 2, "0..=1000000"),
        (&["latency", "--variants", "small_0.25", "--batch", "1,100000"], 1, "from 1 to 4096"),
        (&["bench", "train", "--batch", "1000000000"], 2, "1..=4096"),
        (&["bench", "train", "--steps", "0"], 2, "1..=1000000"),
    ];
    for (args, code, expected) in cases {
        let out = bin().args(args).output().unwrap();
        let t = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {t}");
        assert!(t.contains(expected) && !t.contains("panicked"), "{args:?}: {t}");
    }
}

/// `latency --size` and `bench train --size --si` time the network at photo sizes and say so in their output
/// (the engine's numbers there are checked by `exec::tests::the_training_step_matches_the_stock_op_graph_in_f64_at_photo_sizes`).
#[test]
fn latency_and_bench_train_run_at_another_input_size() {
    let out = bin()
        .args(["latency", "--variants", "small_0.25", "--si", "2", "--size", "96", "--runs", "2", "--warmup", "0"])
        .args(["--json", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((rows[0]["size"].as_u64(), rows[0]["batch"].as_u64()), (Some(96), Some(1)), "{rows}");
    let out = bin()
        .args(["bench", "train", "--variant", "large_0.25", "--si", "2", "--size", "64", "--batch", "2"])
        .args(["--steps", "1", "--warmup", "0", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((r["size"].as_u64(), r["batch"].as_u64()), (Some(64), Some(2)), "{r}");
    assert!(r["img_per_s"].as_f64().is_some_and(|v| v > 0.0), "{r}");
}

/// `latency --profile`: each row says where an inference's time went, per layer kind, and the operations it
/// counts per kind add up to the network's own count (`info`'s MACs, twice), at 32 pixels and at a photo size,
/// one image and a batch that runs whole images per thread.
#[test]
fn latency_profile_splits_an_inference_by_layer_kind_and_counts_the_networks_operations() {
    for (variant, si, size, batches) in [("large_0.25", "1", "32", "1,4"), ("small_0.5", "2", "96", "1")] {
        let out = bin()
            .args(["latency", "--variants", variant, "--si", si, "--size", size, "--batch", batches, "--threads", "2"])
            .args(["--runs", "3", "--warmup", "1", "--profile", "--json", "-"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("depthwise 3x3 stride 2") && stderr.contains("GFLOP/s"), "{stderr}");
        assert!(stderr.contains("ms are wall time"), "batch 1 shares each layer between the threads: {stderr}");
        let (model, width) = variant.split_once('_').unwrap();
        let mut info = bin();
        let info = info.args(["info", "--model", model, "--width", width, "--si", si, "--size", size, "--json"]);
        let info = info.output().unwrap();
        assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        let macs = info["macs"].as_f64().unwrap_or_else(|| panic!("{info}"));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for row in rows.as_array().unwrap() {
            let layers = row["profile"].as_array().unwrap_or_else(|| panic!("{row}"));
            let kinds: Vec<&str> = layers.iter().map(|l| l["kind"].as_str().unwrap()).collect();
            for kind in ["stem 3x3 conv", "expand 1x1 conv", "squeeze-excite", "project 1x1 conv (+ residual)"] {
                assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
            }
            let gflop: f64 = layers.iter().map(|l| l["gflop"].as_f64().unwrap()).sum();
            let batch = row["batch"].as_f64().unwrap();
            let expected = 2.0 * macs * batch / 1e9;
            assert!((gflop - expected).abs() <= 1e-9 * expected.max(1.0), "{gflop} GFLOP against {expected}: {row}");
            let share: f64 = layers.iter().map(|l| l["share"].as_f64().unwrap()).sum();
            assert!((share - 1.0).abs() < 1e-9, "{share}");
            assert!(layers.iter().all(|l| l["ms"].as_f64().unwrap() > 0.0), "{row}");
            // Batch 4 on 2 threads runs whole images per thread: one expand call per layer and image.
            let expand = layers.iter().find(|l| l["kind"] == "expand 1x1 conv").unwrap();
            let time = if batch >= 4.0 { "thread" } else { "wall" };
            assert_eq!(expand["time"], time, "{row}");
            let blocks = info["layers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["name"].as_str().unwrap().starts_with("bottlenecks"))
                .count() as f64;
            let per = if batch >= 4.0 { batch } else { 1.0 };
            assert_eq!(expand["calls"].as_f64().unwrap(), blocks * per, "{row}");
        }
    }
}

/// The README's table of trained models lists every file of `trained_models/` with its test accuracy; `evaluate`
/// on the real test split must print exactly those figures (skipped with a message when ../shared/data is absent).
#[test]
fn evaluate_gives_the_accuracy_the_readme_claims_for_each_trained_model() {
    let data = root().join("../shared/data/cifar-100-binary");
    if !data.join("test.bin").is_file() {
        eprintln!("SKIPPED: the real CIFAR-100 is not at {} (it is in CI and on development machines)", data.display());
        return;
    }
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme.split("## Trained models").nth(1).expect("README has a Trained models section");
    let section = section.split("\n## ").next().unwrap();
    // Rows look like: | `FILE` ... | ... | **TOP1%** | TOP5% | ...
    let rows: Vec<(String, String, String)> = section
        .lines()
        .filter(|l| l.starts_with("| `mobilenetv3_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let file = cells[1].split('`').nth(1).unwrap().to_string();
            let top1 = cells.iter().find(|c| c.starts_with("**")).unwrap().trim_matches(['*', '%']).to_string();
            let idx = cells.iter().position(|c| c.starts_with("**")).unwrap();
            let top5 = cells[idx + 1].trim_end_matches('%').to_string();
            (file, top1, top5)
        })
        .collect();
    assert!(!rows.is_empty(), "no trained-model rows found in the README");
    let listed: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    for model in mobilenetv3::classify::list_models(&root().join("trained_models")) {
        let name = model.file_name().unwrap().to_string_lossy().into_owned();
        assert!(listed.contains(&name), "trained_models/{name} is not in the README's table");
    }
    for (file, top1, top5) in rows {
        let path = root().join("trained_models").join(&file);
        assert!(path.is_file(), "the README lists {file}, which is not in trained_models/");
        let out = bin().args(["evaluate", "--json", "--model"]).arg(&path).arg("--data").arg(&data).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["images"], 10000);
        let pct = |k: &str| format!("{:.2}", v[k].as_f64().unwrap() * 100.0);
        assert_eq!((pct("top1"), pct("top5")), (top1, top5), "{file}: evaluate vs README");
    }
}

#[test]
fn latency_draws_its_bar_chart_with_plot() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("latency.svg");
    let out = bin()
        .args(["latency", "--variants", "small_0.25", "--batch", "1", "--runs", "3", "--warmup", "1", "--plot"])
        .arg(&svg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains(">small_0.25</text>") && text.contains("batch 1:") && text.contains("Measured by"), "{text}");
    let out = bin().args(["latency", "--variants", "small_0.25", "--plot", "chart.pdf"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".png or .svg"));
}

/// `classify --cam DIR` writes one Grad-CAM overlay per readable image (the photo's size, at most 512 pixels a
/// side) and `--json` gives each map's class and peak; a broken file gets its error and no overlay.
#[test]
fn classify_cam_writes_an_overlay_per_image_and_the_peak_in_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("test_images/raccoon.jpg"), dir.path().join("raccoon.jpg")).unwrap();
    std::fs::write(dir.path().join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let cams = dir.path().join("cams");
    let model = "trained_models/mobilenetv3_large_0.25.safetensors";
    let out =
        bin().args(["classify", "--json", "--model", model, "--cam"]).arg(&cams).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let raccoon = v.as_array().unwrap().iter().find(|r| r["path"].as_str().unwrap().ends_with("raccoon.jpg")).unwrap();
    let cam = &raccoon["cam"];
    assert_eq!(cam["class"], raccoon["top"][0]["label"], "{raccoon}");
    let peak: Vec<f64> = cam["peak"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
    assert!(peak.len() == 2 && peak.iter().all(|p| (0.0..1.0).contains(p)), "{peak:?}");
    let file = PathBuf::from(cam["file"].as_str().unwrap());
    assert_eq!(file, cams.join("raccoon.jpg.cam.png"));
    let (w, h) = image::image_dimensions(&file).unwrap();
    let (pw, ph) = image::image_dimensions(root().join("test_images/raccoon.jpg")).unwrap();
    assert_eq!(w.max(h), pw.max(ph).min(512));
    let names: Vec<_> = std::fs::read_dir(&cams).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

/// `classify --csv FILE`: a header, then one row per image with its top labels and confidences (a broken file
/// gets its error in the last column); a path with a comma is quoted.
#[test]
fn classify_csv_writes_one_row_per_image() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("test_images/apple.jpg"), dir.path().join("apple, red.jpg")).unwrap();
    std::fs::write(dir.path().join("broken.jpg"), b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let csv = dir.path().join("out").join("results.csv");
    let model = "trained_models/mobilenetv3_small_0.25.safetensors";
    let out =
        bin().args(["classify", "--top", "2", "--model", model, "--csv"]).arg(&csv).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "path,model,label_1,confidence_1,label_2,confidence_2,error");
    assert_eq!(lines.len(), 3, "{text}");
    let apple = lines.iter().find(|l| l.contains("apple, red.jpg")).unwrap();
    assert!(apple.starts_with('"') && apple.contains("apple, red.jpg\","), "{apple}");
    let fields: Vec<&str> = apple.rsplitn(6, ',').collect();
    assert_eq!(fields[0], "", "no error: {apple}");
    let (c1, c2): (f64, f64) = (fields[3].parse().unwrap(), fields[1].parse().unwrap());
    assert!(c1 >= c2 && c1 > 0.0 && c1 <= 1.0, "{apple}");
    let broken = lines.iter().find(|l| l.contains("broken.jpg")).unwrap();
    assert!(broken.contains(",,,,") && !broken.ends_with(','), "{broken}");
}
