//! The desktop app, driven headless through egui_kittest: real files, a real model, the real worker thread.

use egui_kittest::kittest::{NodeT, Queryable};
use egui_kittest::Harness;
use mobilenetv3::app::{AppPaths, Settings, StudioApp, Tab};
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

/// Steps frames until `done` holds (the worker runs in real time), failing after `secs`.
fn wait_for(h: &mut Harness<'_, StudioApp>, what: &str, secs: u64, done: impl Fn(&StudioApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
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
    while h.state().train.state != mobilenetv3::app::train_tab::RunState::Idle || h.state().train.run.epochs.is_empty()
    {
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
fn a_one_variant_latency_run_shows_a_row_and_exports() {
    let dir = project();
    let mut h = harness(dir.path(), Tab::Latency);
    {
        let f = &mut h.state_mut().latency.form;
        f.small = [true, false, false, false];
        f.large = [false; 4];
        f.runs = 5;
        f.warmup = 1;
    }
    h.step();
    h.get_by_label("Run").click();
    h.step();
    wait_for(&mut h, "the benchmark", 60, |a| !a.latency.running && !a.latency.rows.is_empty());
    assert_eq!(h.state().latency.rows.len(), 1);
    h.get_by_label("small_0.25");
    h.get_by_label("CSV").click();
    // The "saved" message moves the buttons down a line: let the layout settle before the next click.
    h.run_steps(3);
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
}
