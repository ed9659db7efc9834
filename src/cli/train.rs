use super::progress::{Progress, Unit};
use anyhow::{Context, Result};
use clap::Args;
use mobilenetv3::model::weights::{self, LoadOptions};
use mobilenetv3::train::{self, hms, TrainConfig, TrainControl, TrainEvent, TrainOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct TrainArgs {
    /// The recipe, the data and the device (the library's options, shared with the app's Train form).
    #[command(flatten)]
    options: TrainOptions,
    /// Continue a run from its state file (trained_models/runs/*.resume.safetensors), with the recipe it was
    /// started with: only --data (or --images), --out and --threads may be given beside it.
    #[arg(long, conflicts_with_all = [
        "model", "width", "si", "epochs", "batch", "lr", "momentum", "weight_decay", "nesterov", "schedule",
        "milestones", "gamma", "warmup_epochs", "label_smoothing", "no_crop", "no_flip", "select_by",
        "select_by_top1", "device", "limit_train", "limit_test", "seed", "init", "val_split", "image_size", "from",
    ])]
    resume: Option<PathBuf>,
    /// Where checkpoints go [default: trained_models; with --resume, the folder that holds the file's runs/].
    #[arg(long)]
    out: Option<PathBuf>,
    /// CPU threads.
    #[arg(long)]
    threads: Option<usize>,
}

impl TrainArgs {
    /// `--out`, else the resumed run's own folder (so that the printed `--resume` hint alone continues a run
    /// kept outside `trained_models`), else `trained_models`.
    fn out_dir(&self) -> PathBuf {
        self.out
            .clone()
            .or_else(|| self.resume.as_deref().and_then(train::run_folder))
            .unwrap_or_else(|| PathBuf::from("trained_models"))
    }
}

pub fn run(a: TrainArgs) -> Result<ExitCode> {
    // main applied --threads (RAYON_NUM_THREADS and rayon's pool) before any thread started.
    debug_assert!(a.threads.is_none_or(|n| n == rayon::current_num_threads()));
    let cfg = a.options.config(&a.out_dir());
    let control = TrainControl::new();
    // Ctrl-C stops cleanly after the current batch; the best checkpoint is already on disk.
    stop_on_sigint(Arc::clone(&control));
    // A resumed run reports its own epoch count in `Started`.
    let mut epochs = cfg.epochs;
    let out_dir = cfg.out_dir.clone();
    let mut resume_hint: Option<(PathBuf, String)> = None;
    // The epoch's bar on a terminal, lines in a log.
    let mut progress: Option<Progress> = None;
    let result = train::run(&cfg, a.resume.as_deref(), &control, |ev| match ev {
        TrainEvent::Decoding { done, total } => {
            let bar = progress.get_or_insert_with(|| {
                Progress::new(total as u64, "decoding images", Unit::Items, Duration::from_secs(10))
            });
            bar.update(done as u64, String::new, || format!("decoded {done}/{total} images"));
            if done == total {
                progress = None;
            }
        }
        TrainEvent::Embedding { done, total } => {
            let bar = progress.get_or_insert_with(|| {
                Progress::new(total as u64, "embedding images", Unit::Items, Duration::from_secs(10))
            });
            bar.update(done as u64, String::new, || format!("embedded {done}/{total} images"));
            if done == total {
                progress = None;
            }
        }
        TrainEvent::Data(summary) => print_data_summary(&summary),
        TrainEvent::Started {
            name,
            epochs: run_epochs,
            steps_per_epoch,
            train_images,
            test_images,
            params,
            device,
        } => {
            epochs = run_epochs;
            resume_hint = Some((out_dir.clone(), name.clone()));
            eprintln!(
                "run {name}: {params} parameters on {device}; {train_images} training / {test_images} test images, {steps_per_epoch} steps per epoch"
            );
        }
        TrainEvent::Step { epoch, step, steps_per_epoch, loss, lr, img_per_s, eta_s } => {
            let bar = progress.get_or_insert_with(|| {
                let prefix = format!("epoch {epoch}/{epochs}");
                Progress::new(steps_per_epoch as u64, &prefix, Unit::Items, Duration::from_secs(60))
            });
            bar.update(
                step as u64,
                || format!("loss {loss:.4} lr {lr:.4} {img_per_s:.0} img/s ETA {}", hms(eta_s)),
                || {
                    format!(
                        "epoch {epoch}/{epochs} step {step}/{steps_per_epoch} loss {loss:.4} lr {lr:.4} \
                         {img_per_s:.0} img/s ETA {}",
                        hms(eta_s)
                    )
                },
            );
        }
        TrainEvent::Evaluating { .. } => progress = None,
        TrainEvent::Epoch(r) => {
            println!(
                "Epoch {}/{epochs}: train loss {:.4} (top-1 {:.2}%), val loss {:.4}, top-1 {:.2}%, top-5 {:.2}%, lr {:.4}, {:.0} img/s, elapsed {}",
                r.epoch,
                r.train_loss,
                r.train_top1 * 100.0,
                r.val_loss,
                r.top1 * 100.0,
                r.top5 * 100.0,
                r.lr,
                r.img_per_s,
                hms(r.elapsed_s)
            );
        }
        TrainEvent::Checkpoint { path, epoch } => println!("  saved best model (epoch {epoch}) to {}", path.display()),
        TrainEvent::Stopped { epoch } => {
            progress = None;
            let state = resume_hint.as_ref().map(|(dir, name)| train::resume_path(dir, name));
            match state.filter(|p| p.is_file()) {
                Some(p) => eprintln!(
                    "\nstopped during epoch {epoch}; continue from the last finished epoch with --resume {}",
                    p.display()
                ),
                None => eprintln!("\nstopped during epoch {epoch}, before any epoch finished: nothing to resume"),
            }
        }
        TrainEvent::Failed { message } => {
            progress = None;
            eprintln!("\nerror: {message}");
        }
        TrainEvent::Finished { history } => {
            if let Some(b) = history.best() {
                println!(
                    "best: epoch {} top-1 {:.2}% top-5 {:.2}% val loss {:.4}",
                    b.epoch,
                    b.top1 * 100.0,
                    b.top5 * 100.0,
                    b.val_loss
                );
            }
        }
        TrainEvent::Paused | TrainEvent::Resumed => {}
    });
    match result {
        Ok(h) if h.status == mobilenetv3::train::Status::Finished => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::from(130)),
        Err(_) => Ok(ExitCode::from(1)),
    }
}

/// The data set before training: classes and counts (CIFAR-100's 100 in one line), what was left out and the
/// warnings, on stderr with the other progress.
fn print_data_summary(s: &train::DataSummary) {
    let (train_n, val_n): (usize, usize) = (s.train_per_class.iter().sum(), s.val_per_class.iter().sum());
    eprintln!(
        "data {}: {} classes, {train_n} training / {val_n} validation images at {}x{}",
        s.root.display(),
        s.class_names.len(),
        s.side,
        s.side
    );
    if s.class_names.len() <= 20 {
        for (i, name) in s.class_names.iter().enumerate() {
            eprintln!("  {name:<24} {:>6} train {:>6} val", s.train_per_class[i], s.val_per_class[i]);
        }
    }
    const LISTED: usize = 10;
    if !s.skipped.is_empty() {
        eprintln!("skipped {} file(s):", s.skipped.len());
        for k in s.skipped.iter().take(LISTED) {
            eprintln!("  {}: {}", k.path.display(), k.reason);
        }
        if s.skipped.len() > LISTED {
            eprintln!("  ... and {} more", s.skipped.len() - LISTED);
        }
    }
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
}

/// Ctrl-C stops the run after its current batch: signal-hook's handler only sets a flag (async-signal-safe),
/// which a watcher thread passes on to the run's control; a second Ctrl-C ends the process at once with exit
/// code 130. Without a handler (registration failed), Ctrl-C keeps its default action.
fn stop_on_sigint(control: Arc<TrainControl>) {
    use signal_hook::consts::SIGINT;
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The conditional exit first: it acts only once the flag is already set, i.e. on the second Ctrl-C.
    let registered = signal_hook::flag::register_conditional_shutdown(SIGINT, 130, seen.clone())
        .and_then(|_| signal_hook::flag::register(SIGINT, seen.clone()));
    if let Err(e) = registered {
        eprintln!("warning: Ctrl-C will end the run at once ({e})");
        return;
    }
    let _ = std::thread::Builder::new().name("sigint".into()).spawn(move || loop {
        if seen.load(std::sync::atomic::Ordering::SeqCst) {
            control.stop();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
}

/// The first few names of a list, for an error message.
fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    if names.len() > shown.len() {
        format!("{}, ...", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// Model file (.safetensors or .pth).
    #[arg(long)]
    model: PathBuf,
    /// CIFAR-100: a folder of the binary or python layout, or either official .tar.gz.
    #[arg(long, conflicts_with = "images")]
    data: Option<PathBuf>,
    /// A folder of class folders (the model's classes): its validation images are evaluated, i.e. its val/ (or
    /// test/) folder, or the share `train --images` held out with the same --val-split and --seed.
    #[arg(long)]
    images: Option<PathBuf>,
    /// The share of each class held out, as in `train --images`.
    #[arg(long, default_value_t = mobilenetv3::data::folder::DEFAULT_VAL_FRACTION, requires = "images")]
    val_split: f64,
    /// The seed of the hold-out, as in `train --images`.
    #[arg(long, default_value_t = 0, requires = "images")]
    seed: u64,
    /// Initial stride for .pth files.
    #[arg(long, default_value_t = 1)]
    si: usize,
    /// Print the result as JSON (overall and per class).
    #[arg(long)]
    json: bool,
    /// Write the confusion matrix (rows: true class, columns: predicted) as CSV.
    #[arg(long)]
    confusion: Option<PathBuf>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    limit_test: Option<usize>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn evaluate(a: EvaluateArgs) -> Result<ExitCode> {
    let dev = mobilenetv3::device::open(&a.device)?;
    let loaded =
        weights::load_model(&a.model, &dev, &LoadOptions { initial_stride: Some(a.si), ..Default::default() })?;
    let mut cfg = TrainConfig::reference(loaded.meta.config.clone());
    cfg.data_dir = a.data.clone();
    cfg.limit_test = a.limit_test;
    cfg.images = a.images.clone();
    cfg.val_fraction = a.val_split;
    cfg.seed = a.seed;
    cfg.image_size = loaded.meta.image_size;
    let ds = train::load_data(&cfg)?;
    // A folder's classes are matched by name (a model knows its own); CIFAR-100's by count, as files without
    // metadata (.pth) carry no names.
    let same = match a.images {
        Some(_) => ds.class_names == loaded.meta.class_names,
        None => ds.class_names.len() == loaded.meta.class_names.len(),
    };
    if !same {
        anyhow::bail!(
            "the data's {} classes ({}) are not the model's {} ({}): evaluate a model on the classes it was trained on",
            ds.class_names.len(),
            preview(&ds.class_names),
            loaded.meta.class_names.len(),
            preview(&loaded.meta.class_names)
        );
    }
    let test = Arc::new(ds.test);
    let mut bar = Progress::new(test.len() as u64, "evaluating", Unit::Items, Duration::from_secs(10));
    let model = mobilenetv3::MobileNetV3::from_params(&loaded.meta.config, loaded.params);
    let r = train::evaluate_with_progress(
        &model,
        &test,
        256,
        || false,
        |done, total| bar.update(done as u64, String::new, || format!("evaluated {done}/{total} images")),
    )?
    .context("evaluation stopped")?;
    bar.clear();
    if let Some(p) = &a.confusion {
        let s = train::confusion_csv(&r.confusion, &loaded.meta.class_names);
        mobilenetv3::fsutil::write_atomic(p, s.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    let name = |i: usize| loaded.meta.class_names.get(i).map(String::as_str).unwrap_or("?");
    if a.json {
        let per_class: Vec<serde_json::Value> = r
            .per_class
            .iter()
            .zip(&loaded.meta.class_names)
            .map(|(acc, n)| serde_json::json!({"label": n, "top1": acc}))
            .collect();
        let mistakes: Vec<serde_json::Value> = r
            .mistakes
            .iter()
            .map(|m| {
                let mut v = serde_json::json!({
                    "index": m.index, "truth": name(m.truth), "predicted": name(m.predicted), "confidence": m.confidence,
                });
                if let Some(p) = &m.path {
                    v["path"] = serde_json::Value::from(p.display().to_string());
                }
                v
            })
            .collect();
        let v = serde_json::json!({
            "model": a.model.display().to_string(), "variant": loaded.meta.config.name(), "images": r.images,
            "loss": r.loss, "top1": r.top1, "top5": r.top5, "per_class": per_class, "mistakes": mistakes,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{} ({}) on {} test images:", a.model.display(), loaded.meta.config.name(), r.images);
        println!("top-1 {:.2}%  top-5 {:.2}%  loss {:.4}", r.top1 * 100.0, r.top5 * 100.0, r.loss);
        let mut classes: Vec<(usize, f64)> = r.per_class.iter().copied().enumerate().collect();
        classes.sort_by(|a, b| b.1.total_cmp(&a.1));
        let fmt = |v: &[(usize, f64)]| {
            v.iter()
                .map(|(i, a)| format!("{} {:.0}%", loaded.meta.class_names[*i], a * 100.0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("best classes:  {}", fmt(&classes[..5.min(classes.len())]));
        println!("worst classes: {}", fmt(&classes[classes.len().saturating_sub(5)..]));
        // A folder's images have names worth showing: the files to look at (or to move to another class).
        let named: Vec<_> = r.mistakes.iter().filter_map(|m| m.path.as_ref().map(|p| (m, p))).take(10).collect();
        if !named.is_empty() {
            println!("most confident mistakes:");
            for (m, p) in named {
                println!(
                    "  {}: {} taken for {} ({:.1}%)",
                    p.display(),
                    name(m.truth),
                    name(m.predicted),
                    m.confidence * 100.0
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
