//! Training on the user's own images: a folder of class folders generated here (real PNG and JPEG files), a
//! model started from a model file with a new classifier for those classes, and the model file it leaves
//! labelling new images with the user's class names at its own input size.

use mobilenetv3::classify::Classifier;
use mobilenetv3::model::weights::{self, LoadOptions};
use mobilenetv3::train::{self, Status, TrainConfig, TrainControl, TrainEvent};
use std::path::{Path, PathBuf};

fn shipped_small() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("trained_models/mobilenetv3_small_0.25.safetensors")
}

/// Colours the classes are told apart by; each image is its class's colour with noise, of a random size.
const CLASSES: [(&str, [u8; 3]); 3] = [("lemons", [230, 210, 40]), ("leaves", [40, 160, 50]), ("sky", [60, 110, 230])];

/// A photo-like image of a class: its colour, brighter or darker, with per-pixel noise and a darker band.
fn image_of(colour: [u8; 3], seed: u32) -> image::RgbImage {
    let (w, h) = (40 + seed % 37, 36 + (seed * 7) % 41);
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state % 61) as i32 - 30
    };
    let shade = (seed % 5) as i32 * 8 - 16;
    image::RgbImage::from_fn(w, h, |x, y| {
        let band = if (x + y) % 17 < 4 { -40 } else { 0 };
        image::Rgb(colour.map(|c| (c as i32 + shade + band + noise()).clamp(0, 255) as u8))
    })
}

/// `per_class` images of each class (every third a JPEG), a broken file and a text file among them.
fn make_folder(root: &Path, per_class: u32) {
    for (k, (name, colour)) in CLASSES.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("more")).unwrap();
        for i in 0..per_class {
            let img = image_of(*colour, i * 3 + k as u32 + 1);
            let path = match i % 3 {
                0 => dir.join(format!("{i}.jpg")),
                // Deeper folders count for their class.
                1 => dir.join("more").join(format!("{i}.png")),
                _ => dir.join(format!("{i}.png")),
            };
            img.save(&path).unwrap();
        }
    }
    std::fs::write(root.join("sky/broken.png"), b"\x89PNG\r\n\x1a\n but no image").unwrap();
    std::fs::write(root.join("leaves/notes.txt"), b"not an image").unwrap();
}

fn config(images: &Path, out: &Path, image_size: usize) -> TrainConfig {
    let mut cfg =
        TrainConfig { images: Some(images.into()), from: Some(shipped_small()), image_size, ..Default::default() };
    cfg.epochs = 6;
    cfg.batch_size = 8;
    cfg.sgd.lr = 0.02;
    cfg.schedule = train::Schedule::Constant;
    cfg.select_by = train::SelectBy::Top1;
    cfg.out_dir = out.into();
    cfg
}

#[test]
fn a_model_started_from_a_model_file_learns_the_classes_of_a_folder_and_labels_new_images_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("my photos");
    make_folder(&images, 20);
    let out = dir.path().join("models");
    let cfg = config(&images, &out, 32);
    let mut summary = None;
    let mut decoded = 0;
    let h = train::run(&cfg, None, &TrainControl::new(), |ev| match ev {
        TrainEvent::Data(s) => summary = Some(s),
        TrainEvent::Decoding { done, .. } => decoded = done,
        _ => {}
    })
    .unwrap();
    assert_eq!(h.status, Status::Finished);
    // The data set as the user is shown it: classes sorted, 20% of each held out, the broken files listed.
    let s = summary.expect("a data summary before training");
    assert_eq!(s.class_names, vec!["leaves", "lemons", "sky"]);
    for k in 0..3 {
        // 20% of each class's files held out before decoding; the broken file, wherever it fell, is not counted.
        assert_eq!(s.train_per_class[k] + s.val_per_class[k], 20, "{s:?}");
        assert!((3..=4).contains(&s.val_per_class[k]), "{s:?}");
    }
    assert_eq!(decoded, 61, "every image decoded once (the broken one too, which is then skipped)");
    let listed: Vec<String> = s.skipped.iter().map(|k| format!("{}: {}", k.path.display(), k.reason)).collect();
    assert!(listed.iter().any(|l| l.contains("broken.png") && l.contains("cannot be read")), "{listed:?}");
    assert!(listed.iter().any(|l| l.contains("notes.txt") && l.contains("not an image")), "{listed:?}");
    // The run is named after the folder; its model knows the classes and the input size.
    assert_eq!(h.name, "my_photos_small_0.25");
    let best = h.best().unwrap();
    assert!(best.top1 >= 0.9, "validation top-1 {:.3} after {} epochs", best.top1, h.epochs.len());
    let model_path = out.join("my_photos_small_0.25.safetensors");
    let loaded = weights::load_model(&model_path, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.meta.class_names, s.class_names);
    assert_eq!((loaded.meta.config.num_classes, loaded.meta.image_size), (3, 32));
    // A new image of each class is labelled with the user's name for it.
    let classifier = Classifier::load(&model_path, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
    let new: Vec<PathBuf> = CLASSES
        .iter()
        .enumerate()
        .map(|(k, (name, colour))| {
            let p = dir.path().join(format!("new_{k}.png"));
            image_of(*colour, 1000 + k as u32).save(&p).unwrap();
            let _ = name;
            p
        })
        .collect();
    let results = classifier.classify_files(&new, 1).unwrap();
    let labels: Vec<String> =
        results.iter().map(|r| r.outcome.as_ref().map(|p| p[0].label.clone()).unwrap_or_default()).collect();
    assert_eq!(labels, vec!["lemons", "leaves", "sky"]);
}

#[test]
fn a_folder_trains_at_another_input_size_and_the_model_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("colours");
    make_folder(&images, 6);
    let out = dir.path().join("models");
    let mut cfg = config(&images, &out, 48);
    cfg.epochs = 1;
    let h = train::run(&cfg, None, &TrainControl::new(), |_| {}).unwrap();
    assert_eq!(h.status, Status::Finished);
    let model_path = out.join("colours_small_0.25.safetensors");
    let loaded = weights::load_model(&model_path, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
    assert_eq!(loaded.meta.image_size, 48);
    // Classify resizes to the model's size: a 48-pixel model takes a photo of any size.
    let classifier = Classifier::load(&model_path, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
    let p = dir.path().join("any.png");
    image_of([200, 30, 30], 7).save(&p).unwrap();
    let r = classifier.classify_files(&[p], 3).unwrap();
    let preds = r[0].outcome.as_ref().unwrap();
    assert_eq!(preds.len(), 3);
    assert!((preds.iter().map(|p| p.prob).sum::<f32>() - 1.0).abs() < 1e-4);
}

#[test]
fn a_folder_with_one_class_or_a_missing_start_model_is_a_clear_error_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("one");
    std::fs::create_dir_all(images.join("only")).unwrap();
    image_of([1, 2, 3], 1).save(images.join("only/a.png")).unwrap();
    let out = dir.path().join("models");
    let err = train::run(&config(&images, &out, 32), None, &TrainControl::new(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("1 class folder(s) (only)") && err.contains("at least 2"), "{err}");

    let images = dir.path().join("two");
    make_folder(&images, 3);
    let mut cfg = config(&images, &out, 32);
    cfg.from = Some(dir.path().join("no such model.safetensors"));
    let err = train::run(&cfg, None, &TrainControl::new(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("the model to start from") && err.contains("no such model"), "{err}");
    assert!(!out.join("two_small_0.25.history.json").exists(), "nothing is written for a run that cannot start");
}

/// The same journey on the command line: `train --images --from`, `evaluate --images --json`, `classify`.
#[test]
fn the_command_line_trains_on_a_folder_evaluates_on_its_held_out_images_and_classifies_with_its_names() {
    let bin = || std::process::Command::new(env!("CARGO_BIN_EXE_mobilenetv3"));
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("garden");
    make_folder(&images, 20);
    let out = dir.path().join("models");
    let run = bin()
        .args(["train", "--images"])
        .arg(&images)
        .arg("--from")
        .arg(shipped_small())
        .args(["--epochs", "8", "--batch", "8", "--lr", "0.02", "--schedule", "constant", "--select-by", "top1"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // What the user is told before training: the classes with their counts, the skipped files and why.
    let summary = stderr.lines().find(|l| l.contains("3 classes, ")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(summary.ends_with("validation images at 32x32"), "all layers train at 32 pixels by default: {summary}");
    // 4 of each class's 20 images held out (of sky's 21 files, the broken one may be among those held out).
    let held_out: u64 = summary.split(" / ").nth(1).and_then(|v| v.split(' ').next()?.parse().ok()).unwrap();
    assert!((11..=12).contains(&held_out), "{summary}");
    assert!(stderr.contains("lemons") && stderr.contains("broken.png: cannot be read"), "{stderr}");
    let model = out.join("garden_small_0.25.safetensors");
    assert!(model.is_file(), "{stderr}");

    let eval = bin().args(["evaluate", "--json", "--model"]).arg(&model).arg("--images").arg(&images).output().unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let v: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    assert_eq!(v["images"], held_out, "the held-out share, as training held it out: {v}");
    assert!(v["top1"].as_f64().unwrap() >= 0.8, "{v}");
    let labels: Vec<&str> = v["per_class"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, vec!["leaves", "lemons", "sky"]);
    assert!(v["mistakes"].is_array(), "{v}");
    // On a folder whose classes hold each other's colours every image is a mistake, each named by its file (in
    // the folder of its true class), in the JSON and in the text.
    let swapped = dir.path().join("swapped");
    for (k, (name, _)) in CLASSES.iter().enumerate() {
        std::fs::create_dir_all(swapped.join(name)).unwrap();
        for i in 0..5 {
            image_of(CLASSES[(k + 1) % 3].1, 500 + i).save(swapped.join(format!("{name}/{i}.png"))).unwrap();
        }
    }
    let eval =
        bin().args(["evaluate", "--json", "--model"]).arg(&model).arg("--images").arg(&swapped).output().unwrap();
    assert!(eval.status.success(), "{}", String::from_utf8_lossy(&eval.stderr));
    let v: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let mistakes = v["mistakes"].as_array().unwrap();
    assert!(!mistakes.is_empty(), "{v}");
    for m in mistakes {
        let path = Path::new(m["path"].as_str().unwrap_or_else(|| panic!("{m}")));
        assert!(path.starts_with(&swapped) && path.parent().unwrap().ends_with(m["truth"].as_str().unwrap()), "{m}");
    }
    let eval = bin().args(["evaluate", "--model"]).arg(&model).arg("--images").arg(&swapped).output().unwrap();
    let text = String::from_utf8_lossy(&eval.stdout);
    let first = mistakes[0]["path"].as_str().unwrap();
    assert!(text.contains("most confident mistakes:") && text.contains(first), "{text}");

    // On a folder of other classes: refused, naming both.
    let other = dir.path().join("other");
    for name in ["cats", "dogs"] {
        std::fs::create_dir_all(other.join(name)).unwrap();
        for i in 0..3 {
            image_of([9, 9, 9], i).save(other.join(format!("{name}/{i}.png"))).unwrap();
        }
    }
    let eval = bin().args(["evaluate", "--model"]).arg(&model).arg("--images").arg(&other).output().unwrap();
    let err = String::from_utf8_lossy(&eval.stderr);
    assert!(!eval.status.success());
    assert!(err.contains("(cats, dogs) are not the model's 3 (leaves, lemons, sky)"), "{err}");

    let photo = dir.path().join("sky.png");
    image_of(CLASSES[2].1, 4242).save(&photo).unwrap();
    let c = bin().args(["classify", "--model"]).arg(&model).arg(&photo).output().unwrap();
    let stdout = String::from_utf8_lossy(&c.stdout);
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    assert!(stdout.starts_with("sky.png") && stdout.contains("sky"), "{stdout}");
    let first_label = stdout.split_whitespace().nth(1).unwrap_or_default();
    assert_eq!(first_label, "sky", "{stdout}");
}

/// A stopped run on a folder continues from its resume file, and refuses a folder of other classes.
#[test]
fn a_stopped_folder_run_continues_and_refuses_a_folder_with_another_number_of_classes() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("three");
    make_folder(&images, 6);
    let out = dir.path().join("models");
    let mut cfg = config(&images, &out, 32);
    cfg.epochs = 2;
    let control = TrainControl::new();
    let c = control.clone();
    let h = train::run(&cfg, None, &control, |ev| {
        if let TrainEvent::Epoch(_) = ev {
            c.stop()
        }
    })
    .unwrap();
    assert_eq!((h.status, h.epochs.len()), (Status::Stopped, 1));
    let state = train::resume_path(&out, &h.name);

    let two = dir.path().join("two");
    for (name, colour) in &CLASSES[..2] {
        std::fs::create_dir_all(two.join(name)).unwrap();
        for i in 0..4 {
            image_of(*colour, i).save(two.join(format!("{name}/{i}.png"))).unwrap();
        }
    }
    let other = TrainConfig { images: Some(two), ..cfg.clone() };
    let err = train::run(&other, Some(&state), &TrainControl::new(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("the model has 3 classes, the data set 2"), "{err}");

    let h = train::run(&cfg, Some(&state), &TrainControl::new(), |_| {}).unwrap();
    assert_eq!((h.status, h.epochs.len()), (Status::Finished, 2));
}

/// Last layer only: every tensor of the start model but the classifier (backbone, hidden layer, BatchNorm
/// statistics) is left bit for bit as it was, each image is embedded once as it is and once mirrored, and
/// the classifier alone learns the folder's classes.
#[test]
fn last_layer_only_training_changes_the_classifier_alone_and_learns_the_classes() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("colours");
    make_folder(&images, 20);
    let out = dir.path().join("models");
    let mut cfg = config(&images, &out, 48);
    cfg.freeze_backbone = true;
    cfg.epochs = 10;
    cfg.sgd.lr = 0.1;
    let (mut embedded, mut train_images, mut val_images) = ((0, 0), 0, 0);
    let h = train::run(&cfg, None, &TrainControl::new(), |ev| match ev {
        TrainEvent::Embedding { done, total } => embedded = (done, total),
        TrainEvent::Started { train_images: t, test_images: v, .. } => (train_images, val_images) = (t, v),
        _ => {}
    })
    .unwrap();
    assert_eq!(h.status, Status::Finished);
    let expected = 2 * train_images + val_images;
    assert_eq!(embedded, (expected, expected), "each training image embedded twice, each validation image once");
    let best = h.best().unwrap();
    assert!(best.top1 >= 0.9, "validation top-1 {:.3} after {} epochs", best.top1, h.epochs.len());

    let opts = LoadOptions::default();
    let cpu = candle_core::Device::Cpu;
    let start = weights::load_model(&shipped_small(), &cpu, &opts).unwrap().params.snapshot().unwrap();
    let trained = weights::load_model(&out.join("colours_small_0.25.safetensors"), &cpu, &opts).unwrap();
    assert_eq!(trained.meta.class_names, vec!["leaves", "lemons", "sky"]);
    let trained: std::collections::HashMap<_, _> = trained.params.snapshot().unwrap().into_iter().collect();
    let classifier = mobilenetv3::model::names::classifier();
    let mut same = 0;
    for (name, t) in &start {
        if name == &classifier.weight || name == &classifier.bias {
            continue;
        }
        let (a, b) = (t.flatten_all().unwrap(), trained[name].flatten_all().unwrap());
        let equal = match t.dtype() {
            candle_core::DType::I64 => a.to_vec1::<i64>().unwrap() == b.to_vec1::<i64>().unwrap(),
            _ => a.to_vec1::<f32>().unwrap() == b.to_vec1::<f32>().unwrap(),
        };
        assert!(equal, "{name} changed in last-layer-only training");
        same += 1;
    }
    assert!(same > 100, "only {same} tensors compared");
    assert_eq!(trained[&classifier.weight].dims(), &[3, 1024, 1, 1][..]);
}

/// A model trained on a folder is evaluated, when no data is named (the app's Evaluate view), on that folder's
/// validation images as its run held them out; without its run history beside it, the error says what to do.
#[test]
fn a_model_trained_on_a_folder_is_evaluated_on_its_validation_images_and_without_its_history_says_how() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("colours");
    make_folder(&images, 10);
    let out = dir.path().join("models");
    let mut cfg = config(&images, &out, 40);
    cfg.epochs = 1;
    cfg.seed = 7;
    cfg.val_fraction = 0.3;
    let h = train::run(&cfg, None, &TrainControl::new(), |_| {}).unwrap();
    let model = out.join(format!("{}.safetensors", h.name));
    let meta = weights::load_model(&model, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap().meta;
    let (eval, what) = train::evaluation_config(&model, &meta, None).unwrap();
    assert_eq!((eval.images.as_deref(), eval.val_fraction, eval.seed, eval.image_size), (Some(&*images), 0.3, 7, 40));
    assert!(what.contains("validation images of") && what.contains("30%"), "{what}");
    // The same validation images the run held out.
    let run_val = train::load_data(&cfg).unwrap().test;
    let eval_val = train::load_data(&eval).unwrap().test;
    // Each image knows its file (what names a mistake), under its class's folder (or a folder inside it).
    assert_eq!(eval_val.paths.len(), eval_val.len());
    for (p, &label) in eval_val.paths.iter().zip(&eval_val.labels) {
        assert!(p.starts_with(images.join(&meta.class_names[label as usize])), "{p:?}");
    }
    assert_eq!((run_val.images, run_val.labels, run_val.paths), (eval_val.images, eval_val.labels, eval_val.paths));

    std::fs::remove_file(out.join(format!("{}.history.json", h.name))).unwrap();
    let err = train::evaluation_config(&model, &meta, None).unwrap_err().to_string();
    assert!(err.contains("knows other classes than CIFAR-100's") && err.contains("--images DIR"), "{err}");
}
