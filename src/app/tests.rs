//! The desktop app, driven headless through egui_kittest: real files, a real model, the real worker thread.
//! In the crate (not under tests/) because the tabs' state they read is the app's own business, not the
//! library's public API.

use super::{AppPaths, Settings, StudioApp, Tab};
use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use md5::Digest;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A project folder with one model (the PyTorch-made fixture) and no sample images.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trained_models")).unwrap();
    std::fs::create_dir_all(dir.path().join("test_images")).unwrap();
    std::fs::copy(
        root().join("tests/fixtures/small_0.25_si1.weights.safetensors"),
        dir.path().join("trained_models/fixture_small.safetensors"),
    )
    .unwrap();
    dir
}

fn harness(dir: &Path, tab: Tab) -> Harness<'static, StudioApp> {
    let paths = AppPaths::from_project(dir);
    let settings = Settings { tab: Some(tab), ..Default::default() };
    Harness::builder()
        .with_size(egui::vec2(1200.0, 800.0))
        .build_eframe(move |cc| StudioApp::with_settings(&cc.egui_ctx, paths, settings))
}

/// The Train tab of a project with no data set anywhere (the user's data folder is inside the project): what a
/// new user sees. `edit` sets any other field of the form.
fn train_tab_without_data(
    dir: &Path,
    edit: impl FnOnce(&mut crate::app::train_tab::TrainForm),
) -> Harness<'static, StudioApp> {
    let mut paths = AppPaths::from_project(dir);
    paths.data = dir.join("user-data");
    let mut form = crate::app::train_tab::TrainForm { data_dir: String::new(), ..Default::default() };
    edit(&mut form);
    let settings = Settings { tab: Some(Tab::Train), train: form, ..Default::default() };
    Harness::builder()
        .with_size(egui::vec2(1200.0, 800.0))
        .build_eframe(move |cc| StudioApp::with_settings(&cc.egui_ctx, paths, settings))
}

/// Steps frames until `done` holds (the worker runs in real time), failing after `secs`.
fn wait_for(h: &mut Harness<'_, StudioApp>, what: &str, secs: u64, done: impl Fn(&StudioApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        let a = h.state();
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what} (train: {:?}, {:?}; error: {:?})",
            a.train.state,
            a.train.run.message,
            a.error
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.step();
    h.step();
}

/// A file dropped onto the window, as winit hands it over.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }
    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

fn drop_files(h: &mut Harness<'_, StudioApp>, files: &[PathBuf]) {
    for f in files {
        h.input_mut().dropped_files.push(std::sync::Arc::new(Dropped(f.clone())));
    }
    h.step();
}

#[test]
fn a_dropped_photo_gets_its_labels_and_a_broken_file_an_error_card() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Train);
    wait_for(&mut h, "the model to load", 30, |a| a.classify.loaded.is_some());
    let broken = dir.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff\xe0 not a jpeg").unwrap();
    drop_files(&mut h, &[root().join("test_images/orange.jpg"), broken]);
    assert_eq!(h.state().tab, Tab::Classify, "a drop switches to the Classify tab");
    wait_for(&mut h, "both results", 30, |a| {
        a.classify.cards.len() == 2 && a.classify.cards.iter().all(|c| c.outcome.is_some())
    });
    let cards = &h.state().classify.cards;
    assert_eq!(cards.len(), 2);
    let top = cards[0].outcome.clone().unwrap().expect("orange.jpg classified");
    assert_eq!(top.len(), 5);
    assert!(cards[1].outcome.as_ref().unwrap().is_err());
    // What a user reads: the file names, the top label with its confidence, and the error card.
    h.get_by_label("orange.jpg");
    h.get_by_label_contains(&format!("{} {:.1}%", top[0].label.replace('_', " "), top[0].prob * 100.0));
    h.get_by_label("broken.jpg");
    h.get_by_label("Cannot classify");
}

#[test]
fn choosing_another_model_classifies_again() {
    let dir = project();
    std::fs::copy(
        root().join("tests/fixtures/large_0.25_si1.weights.safetensors"),
        dir.path().join("trained_models/fixture_large.safetensors"),
    )
    .unwrap();
    let mut h = harness(dir.path(), Tab::Classify);
    wait_for(&mut h, "the model list", 30, |a| a.classify.models.len() == 2 && a.classify.loaded.is_some());
    drop_files(&mut h, &[root().join("test_images/apple.jpg")]);
    wait_for(&mut h, "a result", 30, |a| {
        a.classify.cards.len() == 1 && a.classify.cards.iter().all(|c| c.outcome.is_some())
    });
    let first = h.state().classify.cards[0].outcome.clone();
    let other = h
        .state()
        .classify
        .models
        .iter()
        .find(|m| Some(&m.path) != h.state().classify.selected.as_ref())
        .unwrap()
        .path
        .clone();
    {
        let app = h.state_mut();
        let worker = &app.worker;
        app.classify.select_model(worker, other.clone());
    }
    wait_for(&mut h, "the new model's result", 30, |a| {
        a.classify.loaded.is_some() && a.classify.cards.iter().all(|c| c.outcome.is_some())
    });
    assert_ne!(h.state().classify.cards[0].outcome, first, "a different model gives different confidences");
}

#[test]
fn a_tiny_training_run_draws_its_curves() {
    let data = root().join("../shared/data/cifar-100-binary");
    if !data.join("train.bin").is_file() {
        eprintln!("SKIPPED: the real CIFAR-100 is not at {}", data.display());
        return;
    }
    let dir = project();
    let mut h = harness(dir.path(), Tab::Train);
    {
        let f = &mut h.state_mut().train.form;
        f.data_dir = data.display().to_string();
        f.epochs = "1".into();
        f.batch = "32".into();
        f.limit_train = "320".into();
    }
    h.step();
    h.get_by_label("Start").click();
    h.step();
    // Frames keep coming while the run trains: the curve grows frame by frame instead of appearing all at once
    // at the end, so the UI never waited for the training thread.
    let mut seen_lengths = std::collections::BTreeSet::new();
    let start = Instant::now();
    while h.state().train.state != crate::app::train_tab::RunState::Idle || h.state().train.run.epochs.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for the run to finish");
        h.step();
        seen_lengths.insert(h.state().train.run.step_loss.len());
        std::thread::sleep(Duration::from_millis(10));
    }
    h.step();
    assert!(seen_lengths.len() >= 4, "the curve was seen at only {} lengths: {seen_lengths:?}", seen_lengths.len());
    let run = &h.state().train.run;
    assert_eq!(run.step_loss.len(), 10, "one point per step on the loss curve");
    assert_eq!(run.epochs.len(), 1);
    assert!(run.message.starts_with("finished"), "{}", run.message);
    // The best checkpoint is in the model list of the Classify tab.
    wait_for(&mut h, "the new model in the list", 30, |a| a.classify.models.len() == 2);
}

/// A folder of two classes told apart by colour (real PNG files with noise), `per_class` images each.
fn colour_folder(root: &Path, per_class: u32) {
    for (name, colour) in [("apples", [210u8, 40, 30]), ("sky", [50, 110, 230])] {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for i in 0..per_class {
            image::RgbImage::from_fn(36 + i % 9, 40, |x, y| {
                let n = ((x * 7 + y * 13 + i * 31) % 41) as i32 - 20;
                image::Rgb(colour.map(|c| (c as i32 + n).clamp(0, 255) as u8))
            })
            .save(root.join(format!("{name}/{i}.png")))
            .unwrap();
        }
    }
}

#[test]
fn a_folder_dropped_on_the_train_tab_trains_a_model_that_labels_a_dropped_photo_with_the_users_classes() {
    let dir = project();
    let images = dir.path().join("my fruit");
    colour_folder(&images, 12);
    std::fs::write(images.join("apples/notes.txt"), "picked in June").unwrap();
    // A shipped model (trained on CIFAR-100) to start from, beside the project's fixture.
    let shipped = dir.path().join("trained_models/mobilenetv3_small_0.25.safetensors");
    std::fs::copy(root().join("trained_models/mobilenetv3_small_0.25.safetensors"), &shipped).unwrap();
    let mut h = harness(dir.path(), Tab::Train);
    wait_for(&mut h, "the model list", 30, |a| a.classify.models.len() == 2);
    // The folder dropped on the tab: My images is chosen with that folder.
    drop_files(&mut h, std::slice::from_ref(&images));
    assert_eq!(h.state().tab, Tab::Train, "a folder dropped on the Train tab stays there");
    assert_eq!(h.state().train.form.source, crate::app::train_tab::DataSource::Images);
    assert_eq!(h.state().train.form.images_dir, images.display().to_string());
    h.step();
    h.get_by_label("Image folder");
    // Before anything trains, the preview: each class with its counts and first images, what is left out.
    wait_for(&mut h, "the folder's preview", 30, |a| a.train.preview.headline().contains("classes"));
    h.step();
    h.get_by_label_contains("Data set: 2 classes, 20 training / 4 validation images");
    h.get_by_label("apples");
    assert_eq!(h.get_all_by_label("10 train · 2 val").count(), 2);
    h.get_by_label_contains("1 file left out");
    // Start from the project's model (a new classifier for the two classes), a short recipe.
    {
        let f = &mut h.state_mut().train.form;
        assert_eq!(f.image_size, "", "empty: the run's default size (32 for all layers)");
        f.start_from = shipped.display().to_string();
        f.epochs = "5".into();
        f.batch = "8".into();
        f.lr = "0.02".into();
        f.schedule = crate::train::ScheduleKind::Constant;
    }
    h.step();
    h.get_by_label("Start").click();
    h.step();
    wait_for(&mut h, "the run on the folder", 120, |a| {
        a.train.state == crate::app::train_tab::RunState::Idle && a.train.run.message.starts_with("finished")
    });
    // The new model is listed in Classify, and chosen there it labels a dropped photo with a class of the folder.
    wait_for(&mut h, "the new model in the list", 30, |a| a.classify.models.len() == 3);
    let model = dir.path().join("trained_models/my_fruit_small_0.25.safetensors");
    assert!(model.is_file());
    let photo = dir.path().join("red.png");
    image::RgbImage::from_pixel(50, 40, image::Rgb([205, 45, 35])).save(&photo).unwrap();
    // Chosen in Classify already: a model trained on the user's images is the one they want to try.
    assert_eq!(h.state().classify.selected.as_ref(), Some(&model));
    wait_for(&mut h, "the new model to load", 30, |a| a.classify.loaded.is_some());
    drop_files(&mut h, &[photo]);
    assert_eq!(h.state().tab, Tab::Classify, "files dropped on the Train tab go to Classify");
    wait_for(&mut h, "the result", 30, |a| a.classify.cards.len() == 1 && a.classify.cards[0].outcome.is_some());
    let top = h.state().classify.cards[0].outcome.clone().unwrap().expect("the photo classified");
    assert_eq!(top[0].label, "apples", "{top:?}");
    h.get_by_label_contains(&format!("apples {:.1}%", top[0].prob * 100.0));
    // The Evaluate view on the same model: the folder's validation images (no CIFAR-100 needed), with the
    // folder's class names and the user's own images for its mistakes.
    h.state_mut().tab = Tab::Evaluate;
    h.state_mut().evaluate.model = Some(model.clone());
    h.step();
    h.get_by_label("Run evaluation").click();
    h.step();
    wait_for(&mut h, "the evaluation", 60, |a| !a.evaluate.running && a.evaluate.report.is_some());
    let report = h.state().evaluate.report.as_ref().unwrap();
    assert_eq!(report.class_names, vec!["apples", "sky"]);
    assert!(report.data.contains("my fruit") && report.data.contains("validation images"), "{}", report.data);
    assert_eq!(report.result.images, 4, "20% of each class's 12 images, rounded down: 2 + 2");
    assert_eq!(report.result.confusion.len(), 2);
    assert_eq!(report.side, 32);
    assert!(report.mistake_images.iter().all(|m| m.len() == 32 * 32 * 3));
    let headline = format!("top-1 {:.2}%", report.result.top1 * 100.0);
    h.get_by_label_contains(&headline);
    h.get_by_label_contains("on the validation images of");
    // A class's images are named by their files (hovering shows the whole path).
    let first = report.test.paths[0].clone();
    assert!(report.test.paths.iter().all(|p| p.starts_with(&images)), "{:?}", report.test.paths);
    let ctx = h.ctx.clone();
    h.state_mut().evaluate.open_cell(&ctx, 0, None);
    h.step();
    h.get_by_label_contains("True apples: 2 images");
    h.get_by_label(&first.file_name().unwrap().to_string_lossy());
}

/// The fine-tuning mode is offered with a model to start from: all layers with the backbone's learning-rate
/// factor, or the last layer only, where the crop (never drawn: each image is embedded once) is greyed out.
#[test]
fn the_fine_tuning_mode_is_offered_with_a_start_model_and_last_layer_only_greys_out_the_crop() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Train);
    h.state_mut().train.form.source = crate::app::train_tab::DataSource::Images;
    h.step();
    assert!(h.query_by_label("Backbone lr factor").is_none(), "no mode without a model to start from");
    h.state_mut().train.form.start_from = "trained_models/mobilenetv3_small_0.25.safetensors".into();
    h.step();
    h.get_by_label("Backbone lr factor");
    assert!(!h.get_by_label("Random resized crop").accesskit_node().is_disabled());
    h.state_mut().train.form.freeze_backbone = true;
    h.step();
    assert!(h.query_by_label("Backbone lr factor").is_none(), "the factor is for all layers");
    assert!(h.get_by_label("Random resized crop").accesskit_node().is_disabled());
}

#[test]
fn invalid_values_are_shown_at_their_field_and_block_start() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Train);
    h.state_mut().train.form.epochs = "many".into();
    h.state_mut().train.form.lr = "-1".into();
    h.step();
    h.get_by_label_contains("not a number: \"many\"");
    assert!(h.get_by_label("Start").accesskit_node().is_disabled());
    h.state_mut().train.form.epochs = "2".into();
    h.step();
    h.get_by_label_contains("learning rate must be");
}

#[test]
fn where_cuda_does_not_open_its_choices_are_greyed_out_and_a_kept_cuda_choice_falls_back() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Latency);
    // The app asks on a background thread at start-up; the tab reads the answer once it is in.
    let start = std::time::Instant::now();
    while crate::device::cuda_if_probed().is_none() && start.elapsed().as_secs() < 30 {
        h.step();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let Some(Err(reason)) = crate::device::cuda_if_probed() else {
        eprintln!("skipped: CUDA opened on this machine");
        return;
    };
    assert!(reason.contains("CUDA is not available"), "{reason}");
    h.step();
    assert!(h.get_by_label("cuda").accesskit_node().is_disabled(), "the cuda choice should be greyed out");
    assert!(!h.state().latency.form.cuda, "cuda must not stay selected");
    assert!(!h.get_by_label("cpu").accesskit_node().is_disabled());
    // A cuda choice kept from an earlier session falls back to the CPU on the Train tab.
    h.state_mut().train.form.device = "cuda".into();
    h.state_mut().tab = Tab::Train;
    h.step();
    assert_eq!(h.state().train.form.device, "cpu");
}

/// Sets the Latency tab to time small_0.25 alone at batch 1 on the CPU, `runs` times after one warm-up.
fn time_small_025_only(h: &mut Harness<'_, StudioApp>, runs: usize) {
    let f = &mut h.state_mut().latency.form;
    f.small = [true, false, false, false];
    f.large = [false; 4];
    f.runs = runs;
    f.warmup = 1;
}

/// Clicks Run on the Latency tab and waits for the run to end.
fn run_latency(h: &mut Harness<'_, StudioApp>) {
    h.step();
    h.get_by_label("Run").click();
    h.step();
    wait_for(h, "the benchmark", 60, |a| !a.latency.running);
}

#[test]
fn a_one_variant_latency_run_shows_a_row_and_exports() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Latency);
    time_small_025_only(&mut h, 5);
    run_latency(&mut h);
    assert_eq!(h.state().latency.rows.len(), 1);
    h.get_by_label("small_0.25");
    h.get_by_label("CSV").click();
    // The "saved" message appears below the buttons: they stay where they were.
    let before = h.get_by_label("SVG").rect();
    h.run_steps(3);
    assert_eq!(h.get_by_label("SVG").rect(), before, "the export buttons moved");
    h.get_by_label("SVG").click();
    h.step();
    h.step();
    let exported: Vec<String> = std::fs::read_dir(dir.path().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let msg = &h.state().latency.message;
    assert!(
        exported.iter().any(|f| f.ends_with(".csv")) && exported.iter().any(|f| f.ends_with(".svg")),
        "{exported:?} {msg}"
    );
    let svg = exported.iter().find(|f| f.ends_with(".svg")).unwrap();
    let svg = std::fs::read_to_string(dir.path().join("exports").join(svg)).unwrap();
    for want in
        ["MobileNetV3 inference latency", ">small_0.25</text>", ">milliseconds</text>", ">cpu</text>", "Measured by"]
    {
        assert!(svg.contains(want), "{want} missing from the SVG");
    }
    // The PNG is the same chart drawn off screen: full size, with its text, not a crop of the window.
    h.run_steps(2);
    h.get_by_label("PNG").click();
    h.step();
    let png = std::fs::read_dir(dir.path().join("exports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "png"))
        .expect("a PNG export");
    let img = image::open(&png).unwrap().to_rgb8();
    assert_eq!(img.width(), 1000);
    assert!(img.height() >= 300);
    let dark = img.pixels().filter(|p| p[0] < 100 && p[1] < 100 && p[2] < 100).count();
    assert!(dark > 500, "only {dark} dark (text and axis) pixels");
}

/// CIFAR-100 in the official binary layout (50,000 + 10,000 records) as `cifar-100-binary.tar.gz`: plain
/// pixels, so that it compresses to a few hundred KB.
fn binary_archive() -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, n) in [("train.bin", 50_000usize), ("test.bin", 10_000)] {
        let mut data = Vec::with_capacity(n * 3074);
        for i in 0..n {
            let fine = (i % 100) as u8;
            data.extend([fine / 5, fine]);
            data.extend(std::iter::repeat_n(fine.wrapping_mul(2), 3072));
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("cifar-100-binary/{name}"), data.as_slice()).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// Serves `body` once on 127.0.0.1 under `/cifar-100-binary.tar.gz`; returns the URL.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cifar-100-binary.tar.gz", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
            line.clear();
        }
        let mut s = reader.into_inner();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        let _ = s.write_all(head.as_bytes()).and_then(|_| s.write_all(&body));
    });
    url
}

#[test]
fn a_new_user_downloads_the_data_from_the_train_tab_and_trains_an_epoch() {
    let dir = project();
    let archive = binary_archive();
    let md5: String = md5::Md5::digest(&archive).iter().map(|b| format!("{b:02x}")).collect();
    let url = serve_once(archive);
    let mut h = train_tab_without_data(dir.path(), |form| {
        form.epochs = "1".into();
        form.limit_train = "256".into();
    });
    h.state_mut().train.data_source = (url, Some(md5));
    h.step();
    // No data: Start is disabled, and the tab offers the download.
    assert!(h.get_by_label("Start").accesskit_node().is_disabled());
    h.get_by_label("Download CIFAR-100 (about 160 MiB)").click();
    h.step();
    wait_for(&mut h, "the download", 120, |a| !a.train.download.running && a.train.download.outcome.is_some());
    let outcome = h.state().train.download.outcome.clone().unwrap();
    assert!(outcome.as_ref().is_ok_and(|m| m.contains("ready")), "{outcome:?}");
    assert_eq!(h.state().train.form.data_dir, dir.path().join("user-data").display().to_string());
    assert!(dir.path().join("user-data/cifar-100-binary.tar.gz").is_file());
    // With the data there, Start works with no other step.
    h.step();
    assert!(!h.get_by_label("Start").accesskit_node().is_disabled());
    h.get_by_label("Start").click();
    h.step();
    wait_for(&mut h, "the one-epoch run", 300, |a| {
        a.train.state == crate::app::train_tab::RunState::Idle && !a.train.run.epochs.is_empty()
    });
    assert!(h.state().train.run.message.starts_with("finished"), "{}", h.state().train.run.message);
    assert!(dir.path().join("trained_models/mobilenetv3_small_0.25.safetensors").is_file());
}

#[test]
fn offline_the_train_tab_says_so_and_how_to_get_the_data_by_hand() {
    let dir = project();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut h = train_tab_without_data(dir.path(), |_| {});
    h.state_mut().train.data_source = (format!("http://127.0.0.1:{port}/cifar-100-python.tar.gz"), None);
    h.step();
    h.get_by_label("Download CIFAR-100 (about 160 MiB)").click();
    h.step();
    wait_for(&mut h, "the failed download", 60, |a| !a.train.download.running && a.train.download.outcome.is_some());
    h.get_by_label_contains("are you offline?");
    h.get_by_label_contains("copy it into the data folder");
    assert!(h.get_by_label("Start").accesskit_node().is_disabled());
}

#[test]
fn a_stopped_run_is_continued_from_past_runs() {
    use crate::train::{self, History, TrainConfig, TrainControl, TrainEvent};
    let dir = project();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("cifar-100-binary.tar.gz"), binary_archive()).unwrap();
    let mut cfg = TrainConfig::reference(crate::ModelConfig::new(crate::Variant::Small, 0.25));
    cfg.epochs = 2;
    cfg.limit_train = Some(256);
    cfg.limit_test = Some(256);
    cfg.data_dir = Some(data.clone());
    cfg.out_dir = dir.path().join("trained_models");
    // A run stopped after its first epoch, as Ctrl-C or the Stop button leaves it.
    let control = TrainControl::new();
    let c = control.clone();
    let stopped = train::run(&cfg, None, &control, |ev| {
        if let TrainEvent::Epoch(_) = ev {
            c.stop()
        }
    })
    .unwrap();
    assert_eq!((&stopped.status, stopped.epochs.len()), (&crate::train::Status::Stopped, 1));

    let mut h = harness(dir.path(), Tab::Train);
    // The data set is found (as the run itself finds it), so no data panel pushes the past runs down.
    h.state_mut().train.form.data_dir = data.display().to_string();
    // The past runs arrive from their background scan.
    wait_for(&mut h, "the past runs", 30, |a| !a.train.past.list.is_empty());
    // Below the form: scrolled to, as a user would.
    h.get_by_label("Continue").scroll_to_me();
    h.step();
    h.get_by_label("Continue").click();
    h.step();
    wait_for(&mut h, "the continued run", 300, |a| {
        a.train.state == crate::app::train_tab::RunState::Idle && a.train.run.message.starts_with("finished")
    });
    let history = History::load(&dir.path().join("trained_models/mobilenetv3_small_0.25.history.json")).unwrap();
    assert_eq!((&history.status, history.epochs.len()), (&crate::train::Status::Finished, 2));
}

#[test]
fn closing_the_window_during_a_run_asks_first() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Train);
    h.step();
    h.state_mut().train.state = crate::app::train_tab::RunState::Running;
    h.input_mut().viewports.entry(egui::ViewportId::ROOT).or_default().events.push(egui::ViewportEvent::Close);
    h.step();
    h.step();
    assert!(h.state().confirm_close);
    h.get_by_label("A run is training");
    h.get_by_label("Keep training").click();
    h.step();
    assert!(!h.state().confirm_close);
    assert!(!h.state().worker.train_control.is_stopped(), "keeping the run must not stop it");
}

#[test]
fn the_evaluate_tab_gives_the_figures_of_the_cli_with_its_table_heatmap_and_mistakes() {
    let dir = project();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("cifar-100-binary.tar.gz"), binary_archive()).unwrap();
    let mut h = harness(dir.path(), Tab::Evaluate);
    h.state_mut().train.form.data_dir = data.display().to_string();
    wait_for(&mut h, "the model list", 30, |a| !a.classify.models.is_empty());
    h.get_by_label("Run evaluation").click();
    h.step();
    wait_for(&mut h, "the evaluation", 120, |a| !a.evaluate.running && a.evaluate.report.is_some());
    let r = &h.state().evaluate.report.as_ref().unwrap().result;
    assert_eq!(r.images, 10_000);
    assert_eq!(r.mistakes.len(), crate::train::MISTAKES_KEPT);
    assert!(r.mistakes.windows(2).all(|w| w[0].confidence >= w[1].confidence));
    // The same figures as `mobilenetv3 evaluate` (the library calls it makes, on the same file and data).
    let model = dir.path().join("trained_models/fixture_small.safetensors");
    let loaded = crate::model::weights::load_model(&model, &candle_core::Device::Cpu, &Default::default()).unwrap();
    let mut cfg = crate::train::TrainConfig::reference(loaded.meta.config.clone());
    cfg.data_dir = Some(data.clone());
    let test = std::sync::Arc::new(crate::train::load_data(&cfg).unwrap().test);
    let net = crate::MobileNetV3::from_params(&loaded.meta.config, loaded.params);
    let cli = crate::train::evaluate_with_progress(&net, &test, 256, || false, |_, _| {}).unwrap().unwrap();
    assert_eq!((cli.top1, cli.top5), (r.top1, r.top5));
    // What a user sees: the headline, the sortable table, the mistakes.
    h.get_by_label_contains(&format!("top-1 {:.2}%", r.top1 * 100.0));
    h.get_by_label("class");
    h.get_by_label("top-1 (down)");
    let worst = r.mistakes[0].clone();
    let in_cell = r.confusion[worst.truth][worst.predicted];
    let names = h.state().evaluate.report.as_ref().unwrap().class_names.clone();
    assert!(h.query_all_by_label(&format!("said {}", names[worst.predicted])).count() >= 1);
    h.get_by_label("Export CSV").click();
    h.step();
    assert!(dir.path().join("exports/fixture_small.confusion.csv").is_file());
    assert!(dir.path().join("exports/fixture_small.per_class.csv").is_file());
    // The cell of the worst mistake (as a click on the matrix opens it): its images, that one first, each
    // with Grad-CAM on demand; then back to the mistakes.
    let ctx = h.ctx.clone();
    h.state_mut().evaluate.open_cell(&ctx, worst.truth, Some(worst.predicted));
    h.run_steps(2);
    let cell = h.state().evaluate.cell.as_ref().unwrap();
    assert_eq!(cell.indices.len() as u32, in_cell);
    assert_eq!(cell.indices[0], worst.index);
    h.get_by_label_contains(&format!("True {}, predicted {}", names[worst.truth], names[worst.predicted]));
    h.get_all_by_label("Grad-CAM").next().unwrap().click();
    h.step();
    wait_for(&mut h, "the Grad-CAM of the cell's first image", 30, |a| {
        a.evaluate.cell.as_ref().is_some_and(|c| matches!(c.cams[0], Some(Some(_))))
    });
    h.get_by_label("Back to the mistakes").click();
    h.run_steps(2);
    assert!(h.state().evaluate.cell.is_none());
    h.get_by_label("Most confident mistakes");
    // A row of the per-class table (sorted by name, the first): every image of that class, each saying what it
    // was taken for.
    h.get_by_label("class").click();
    h.run_steps(2);
    let first = (0..names.len()).min_by_key(|&i| &names[i]).unwrap();
    h.get_by_label(&names[first]).click();
    h.run_steps(2);
    let cell = h.state().evaluate.cell.as_ref().expect("the class's images");
    assert_eq!((cell.truth, cell.predicted, cell.indices.len()), (first, None, 100));
    h.get_by_label_contains(&format!("True {}: 100 images", names[first]));
    assert!(h.query_all_by_label_contains("said ").count() >= 1);
}

#[test]
fn latency_results_of_an_earlier_run_can_be_kept_beside_a_new_one() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Latency);
    time_small_025_only(&mut h, 3);
    h.state_mut().latency.keep = true;
    for _ in 0..2 {
        run_latency(&mut h);
    }
    let devices: Vec<&str> = h.state().latency.rows.iter().map(|r| r.device.as_str()).collect();
    assert_eq!(devices, ["cpu", "cpu #2"]);
    // Timed at batch 1 on the CPU, the variant is placed on the accuracy chart (with the reference's figure).
    h.state_mut().latency.view = crate::app::latency_tab::ChartView::Accuracy;
    h.step();
    h.get_by_label_contains("Top-1 against batch-1 CPU latency");
}

#[test]
fn a_thousand_dropped_images_are_all_classified_and_only_those_in_view_are_drawn() {
    let dir = project();
    let folder = dir.path().join("many");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..1000u32 {
        let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(i % 251) as u8, (x * 30) as u8, (y * 30) as u8]));
        img.save(folder.join(format!("img_{i:04}.png"))).unwrap();
    }
    let mut h = harness(dir.path(), Tab::Classify);
    wait_for(&mut h, "the model to load", 30, |a| a.classify.loaded.is_some());
    drop_files(&mut h, &[folder]);
    wait_for(&mut h, "a thousand results", 300, |a| {
        a.classify.cards.len() == 1000 && a.classify.cards.iter().all(|c| c.outcome.is_some())
    });
    assert!(h.state().classify.cards.iter().all(|c| c.outcome.as_ref().unwrap().is_ok()));
    // The first image's card is on screen, the last one's is not laid out at all.
    h.get_by_label("img_0000.png");
    assert!(h.query_by_label("img_0999.png").is_none(), "cards out of view are laid out");
    // Clear frees the cards and their textures.
    h.get_by_label("Clear").click();
    h.step();
    assert!(h.state().classify.cards.is_empty());
}

#[test]
fn where_no_file_dialog_can_be_shown_each_button_says_so_where_it_was_clicked() {
    crate::app::dialog::disable_dialogs();
    let dir = project();
    let mut h = harness(dir.path(), Tab::Classify);
    h.get_by_label("Open images…").click();
    h.step();
    h.step();
    assert!(h.query_by_label(crate::app::dialog::NO_DIALOG).is_some(), "Classify: no message");
    h.state_mut().tab = Tab::Latency;
    h.step();
    h.get_by_label("Change folder…").click();
    h.step();
    h.step();
    assert!(h.query_by_label(crate::app::dialog::NO_DIALOG).is_some(), "Latency: no message");
    // The Train tab without a data set: the picker beside the download button.
    let mut h = train_tab_without_data(dir.path(), |_| {});
    h.step();
    h.get_by_label("Use a folder I already have…").click();
    h.step();
    h.step();
    assert!(h.query_by_label(crate::app::dialog::NO_DIALOG).is_some(), "Train: no message");
}

#[test]
fn an_installed_app_lists_the_bundled_models_and_the_users_own_and_trains_into_the_users_folder() {
    let root_dir = tempfile::tempdir().unwrap();
    let share = root_dir.path().join("usr/share/mobilenetv3-studio");
    let user = root_dir.path().join("home/.local/share/mobilenetv3-studio");
    std::fs::create_dir_all(share.join("trained_models")).unwrap();
    std::fs::create_dir_all(share.join("test_images")).unwrap();
    std::fs::create_dir_all(user.join("trained_models")).unwrap();
    std::fs::copy(
        root().join("trained_models/mobilenetv3_small_0.25.safetensors"),
        share.join("trained_models/mobilenetv3_small_0.25.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        root().join("tests/fixtures/small_0.25_si1.weights.safetensors"),
        user.join("trained_models/mine.safetensors"),
    )
    .unwrap();
    std::fs::copy(root().join("test_images/rocket.jpg"), share.join("test_images/rocket.jpg")).unwrap();
    let paths = AppPaths::installed(&share, &user);
    assert_eq!(paths.models, user.join("trained_models"));
    let settings = Settings { tab: Some(Tab::Classify), ..Default::default() };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1200.0, 800.0))
        .build_eframe(move |cc| StudioApp::with_settings(&cc.egui_ctx, paths, settings));
    wait_for(&mut h, "the model list", 30, |a| a.classify.models.len() == 2);
    let models = &h.state().classify.models;
    assert_eq!(models[0].path, user.join("trained_models/mine.safetensors"));
    assert!(!models[0].bundled && models[1].bundled, "{models:?}");
    assert!(models[1].describe().contains("bundled"));
    // The bundled sample photo is shown and classified with the most accurate model (the bundled one).
    wait_for(&mut h, "the sample photo", 60, |a| a.classify.cards.iter().any(|c| c.outcome.is_some()));
    assert_eq!(
        h.state().classify.selected.as_deref(),
        Some(share.join("trained_models/mobilenetv3_small_0.25.safetensors").as_path())
    );
    assert_eq!(h.state().train.out_dir, user.join("trained_models"));
}

/// The batch-1 latency a Latency run measured outlives the session (it is kept in the settings): the next start
/// shows it beside the model in the picker, and a new measurement replaces it.
#[test]
fn measured_latency_is_remembered_across_restarts_and_replaced_by_a_new_run() {
    let dir = project();
    let paths = AppPaths::from_project(dir.path());
    let settings = Settings {
        tab: Some(Tab::Classify),
        batch1_cpu_ms: vec![("small_0.25".into(), 987.65), ("large_9.9".into(), f64::NAN)],
        ..Default::default()
    };
    let mut h = Harness::builder()
        .with_size(egui::vec2(1200.0, 800.0))
        .build_eframe(move |cc| StudioApp::with_settings(&cc.egui_ctx, paths, settings));
    wait_for(&mut h, "the model to load", 30, |a| a.classify.loaded.is_some());
    let classify = &h.state().classify;
    let entry = classify.describe(&classify.models[0]);
    assert!(entry.starts_with("fixture_small.safetensors (small_0.25"), "{entry}");
    assert!(entry.ends_with("· 987.65 ms at batch 1)"), "{entry}");
    // A value that is not a time is dropped rather than shown or saved again.
    assert_eq!(h.state().settings().batch1_cpu_ms, vec![("small_0.25".to_string(), 987.65)]);

    h.state_mut().tab = Tab::Latency;
    time_small_025_only(&mut h, 3);
    run_latency(&mut h);
    let saved = h.state().settings().batch1_cpu_ms;
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(saved[0].0, "small_0.25");
    assert!(saved[0].1 != 987.65, "the new measurement must replace the remembered one: {saved:?}");
}

/// "Export ONNX…" on Classify writes the chosen model as an ONNX file off the UI thread; where no save dialog
/// can be shown it goes to the exports folder and the line under the picker says where. Exporting a model
/// file that has become unreadable says why and leaves no file.
#[test]
fn export_onnx_writes_the_chosen_model_and_says_where() {
    crate::app::dialog::disable_dialogs();
    let dir = project();
    let mut h = harness(dir.path(), Tab::Classify);
    wait_for(&mut h, "the model to load", 30, |a| a.classify.loaded.is_some());
    h.get_by_label("Export ONNX…").click();
    h.step();
    wait_for(&mut h, "the export", 30, |a| a.classify.export_result.is_some());
    let line = h.state().classify.export_result.clone().unwrap().expect("the export succeeded");
    let out = dir.path().join("exports/fixture_small.onnx");
    assert!(line.contains(&out.display().to_string()) && line.contains("opset 17"), "{line}");
    h.get_by_label(&line);
    let bytes = std::fs::read(&out).unwrap();
    let model = <crate::export::proto::ModelProto as prost::Message>::decode(&bytes[..]).unwrap();
    assert_eq!(model.graph.unwrap().output[0].name.as_deref(), Some(crate::export::LOGITS));

    // The file goes bad behind the app's back: the export says why, and writes nothing.
    std::fs::remove_file(&out).unwrap();
    std::fs::write(dir.path().join("trained_models/fixture_small.safetensors"), b"truncated").unwrap();
    h.get_by_label("Export ONNX…").click();
    h.step();
    wait_for(&mut h, "the failed export", 30, |a| matches!(a.classify.export_result, Some(Err(_))));
    let e = h.state().classify.export_result.clone().unwrap().unwrap_err();
    assert!(e.starts_with("ONNX export failed") && e.contains("fixture_small.safetensors"), "{e}");
    h.get_by_label(&e);
    assert!(!out.exists());
}

/// The Classify tab of `dir`'s project with raccoon.jpg dropped and classified (its one card has its result).
fn raccoon_classified(dir: &Path) -> Harness<'static, StudioApp> {
    let mut h = harness(dir, Tab::Classify);
    wait_for(&mut h, "the model to load", 30, |a| a.classify.loaded.is_some());
    drop_files(&mut h, &[root().join("test_images/raccoon.jpg")]);
    wait_for(&mut h, "the result", 30, |a| {
        a.classify.cards.len() == 1 && a.classify.cards.iter().all(|c| c.outcome.is_some())
    });
    h
}

/// "Where it looked (Grad-CAM)": each classified card carries its top class's heat map; with the box ticked the
/// labels become clickable, and clicking the second one shows (and marks) where the model found that class.
#[test]
fn grad_cam_heat_maps_follow_the_class_clicked_on_a_card() {
    let dir = project();
    let mut h = raccoon_classified(dir.path());
    let top = h.state().classify.cards[0].outcome.clone().unwrap().unwrap();
    assert_eq!(h.state().classify.cards[0].cam.as_ref().map(|c| c.0), Some(top[0].index), "the top class's map");
    assert!(h.query_by_label_contains("»").is_none(), "no class is marked while the maps are hidden");
    h.get_by_label("Where it looked (Grad-CAM)").click();
    h.run_steps(2);
    h.get_by_label_contains(&format!("» {}", top[0].label.replace('_', " ")));
    h.get_by_label_contains(&format!("{} {:.1}%", top[1].label.replace('_', " "), top[1].prob * 100.0)).click();
    h.step();
    wait_for(&mut h, "the second class's map", 30, |a| {
        a.classify.cards[0].cam.as_ref().map(|c| c.0) == Some(top[1].index)
    });
    h.get_by_label_contains(&format!("» {}", top[1].label.replace('_', " ")));
}

/// With the heat maps on, clicking a thumbnail opens a larger view of the photo with its map (drawn on the
/// worker), titled with the file and the class; closing it removes it.
#[test]
fn a_thumbnail_clicked_with_grad_cam_on_opens_a_larger_view() {
    let dir = project();
    let mut h = raccoon_classified(dir.path());
    let top = h.state().classify.cards[0].outcome.clone().unwrap().unwrap();
    h.get_by_label("Where it looked (Grad-CAM)").click();
    h.run_steps(2);
    h.get_by_label("click for a larger view").click();
    h.step();
    wait_for(&mut h, "the larger view", 30, |a| a.classify.large_view.is_some());
    let (title, tex) = h.state().classify.large_view.clone().unwrap();
    assert!(title.starts_with("raccoon.jpg: where") && title.ends_with(&top[0].label), "{title}");
    assert_eq!(tex.size().iter().max(), Some(&480));
    h.get_by_label(&title);
}
