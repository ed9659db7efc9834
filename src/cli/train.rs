use anyhow::{bail, Context, Result};
use clap::Args;
use mobilenetv3::arch::{ModelConfig, Variant};
use mobilenetv3::data::Augment;
use mobilenetv3::optim::SgdConfig;
use mobilenetv3::train::{self, Schedule, SelectBy, TrainConfig, TrainControl, TrainEvent};
use mobilenetv3::weights::{self, LoadOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct TrainArgs {
    /// small or large.
    #[arg(long, default_value = "small")]
    model: String,
    /// Width multiplier.
    #[arg(long, default_value_t = 0.25)]
    width: f64,
    /// Initial stride (1 for 32x32 CIFAR input, 2 for the paper's layout).
    #[arg(long, default_value_t = 1)]
    si: usize,
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch: usize,
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    #[arg(long)]
    nesterov: bool,
    /// multistep, cosine or constant.
    #[arg(long, default_value = "multistep")]
    schedule: String,
    /// MultiStep milestones (epochs).
    #[arg(long, default_value = "15,20,30")]
    milestones: String,
    #[arg(long, default_value_t = 0.1)]
    gamma: f64,
    /// Warm-up epochs of the cosine schedule.
    #[arg(long, default_value_t = 1)]
    warmup_epochs: usize,
    #[arg(long, default_value_t = 0.0)]
    label_smoothing: f64,
    /// Turn off the random crop.
    #[arg(long)]
    no_crop: bool,
    /// Turn off the random horizontal flip.
    #[arg(long)]
    no_flip: bool,
    /// Keep the checkpoint with the best top-1 instead of the lowest validation loss.
    #[arg(long)]
    select_by_top1: bool,
    /// CIFAR-100 folder (binary version).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Continue a run from its state file (trained_models/runs/*.resume.safetensors).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Train on the first N images only.
    #[arg(long)]
    limit_train: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    limit_test: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where checkpoints go.
    #[arg(long, default_value = "trained_models")]
    out: PathBuf,
    /// CPU threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Weight initialisation: kaiming (fan-out normal, as torchvision) or torch (PyTorch's layer defaults).
    #[arg(long, default_value = "kaiming")]
    init: String,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let Some(variant) = Variant::parse(&self.model) else {
            bail!("--model must be small or large, got {}", self.model)
        };
        let schedule = match self.schedule.as_str() {
            "multistep" => Schedule::MultiStep {
                milestones: self
                    .milestones
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| s.trim().parse().with_context(|| format!("bad milestone {s:?}")))
                    .collect::<Result<_>>()?,
                gamma: self.gamma,
            },
            "cosine" => Schedule::Cosine { warmup_epochs: self.warmup_epochs },
            "constant" => Schedule::Constant,
            other => bail!("--schedule must be multistep, cosine or constant, got {other}"),
        };
        Ok(TrainConfig {
            model: ModelConfig::new(variant, self.width).with_initial_stride(self.si),
            epochs: self.epochs,
            batch_size: self.batch,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                nesterov: self.nesterov,
            },
            schedule,
            label_smoothing: self.label_smoothing,
            augment: Augment { crop: !self.no_crop, flip: !self.no_flip },
            seed: self.seed,
            data_dir: self.data.clone(),
            device: self.device.clone(),
            limit_train: self.limit_train,
            limit_test: self.limit_test,
            out_dir: self.out.clone(),
            select_by: if self.select_by_top1 { SelectBy::Top1 } else { SelectBy::ValLoss },
            init: match self.init.as_str() {
                "kaiming" => mobilenetv3::params::Init::KaimingFanOut,
                "torch" => mobilenetv3::params::Init::Torch,
                other => bail!("--init must be kaiming or torch, got {other}"),
            },
        })
    }
}

fn hms(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

pub fn run(a: TrainArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        mobilenetv3::device::set_cpu_threads(t)?;
    }
    let cfg = a.config()?;
    let control = TrainControl::new();
    {
        // Ctrl-C stops cleanly after the current batch; the best checkpoint is already on disk.
        let c = Arc::clone(&control);
        let _ = ctrlc_handler(move || c.stop());
    }
    // A resumed run reports its own epoch count in `Started`.
    let mut epochs = cfg.epochs;
    let out_dir = cfg.out_dir.clone();
    let mut resume_hint: Option<(PathBuf, String)> = None;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut last_draw = std::time::Instant::now() - std::time::Duration::from_secs(1);
    let result = train::run(&cfg, a.resume.as_deref(), &control, |ev| match ev {
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
            if !tty {
                // Logs get a plain line now and then instead of a redrawn bar.
                if step % 50 == 0 {
                    eprintln!("epoch {epoch}/{epochs} step {step}/{steps_per_epoch} loss {loss:.4} lr {lr:.4} {img_per_s:.0} img/s ETA {}", hms(eta_s));
                }
            } else if last_draw.elapsed().as_millis() >= 200 || step == steps_per_epoch {
                last_draw = std::time::Instant::now();
                let width = 24;
                let done = width * step / steps_per_epoch;
                eprint!(
                    "\repoch {epoch}/{epochs} [{}{}] {step}/{steps_per_epoch} loss {loss:.4} lr {lr:.4} {img_per_s:.0} img/s ETA {}   ",
                    "#".repeat(done),
                    ".".repeat(width - done),
                    hms(eta_s)
                );
                let _ = std::io::stderr().flush();
            }
        }
        TrainEvent::Evaluating { .. } => {
            if tty {
                eprint!("\r{:120}\r", "");
            }
        }
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
            let state = resume_hint.as_ref().map(|(dir, name)| train::resume_path(dir, name));
            match state.filter(|p| p.is_file()) {
                Some(p) => eprintln!(
                    "\nstopped during epoch {epoch}; continue from the last finished epoch with --resume {}",
                    p.display()
                ),
                None => eprintln!("\nstopped during epoch {epoch}, before any epoch finished: nothing to resume"),
            }
        }
        TrainEvent::Failed { message } => eprintln!("\nerror: {message}"),
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
        Ok(h) if h.status == "finished" => Ok(ExitCode::SUCCESS),
        Ok(_) => Ok(ExitCode::from(130)),
        Err(_) => Ok(ExitCode::from(1)),
    }
}

/// Installs a SIGINT handler that calls `f` once (a second Ctrl-C kills the process as usual).
fn ctrlc_handler(f: impl Fn() + Send + 'static) -> std::io::Result<()> {
    use std::sync::OnceLock;
    static HANDLER: OnceLock<Box<dyn Fn() + Send + Sync>> = OnceLock::new();
    let f = std::sync::Mutex::new(f);
    let _ = HANDLER.set(Box::new(move || {
        if let Ok(f) = f.lock() {
            f()
        }
    }));
    extern "C" fn on_sigint(_: libc::c_int) {
        if let Some(h) = HANDLER.get() {
            h();
        }
        // Restore the default so that a second Ctrl-C ends the process.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
        }
    }
    // SAFETY: installs a plain C signal handler. The handler calls `f`, which sets the run's stop flag (an
    // atomic) under an uncontended mutex; the training thread never holds that mutex.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
    Ok(())
}

#[derive(Args)]
pub struct EvaluateArgs {
    /// Model file (.safetensors or .pth).
    #[arg(long)]
    model: PathBuf,
    /// CIFAR-100 folder (binary version).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Initial stride for .pth files.
    #[arg(long, default_value_t = 1)]
    si: usize,
    #[arg(long)]
    json: bool,
    /// Write the confusion matrix (rows: true class, columns: predicted) as CSV.
    #[arg(long)]
    confusion: Option<PathBuf>,
    #[arg(long)]
    limit_test: Option<usize>,
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
    let ds = train::load_data(&cfg)?;
    let test = Arc::new(ds.test);
    let r = train::evaluate(&loaded.model, &test, 256, || false)?.context("evaluation stopped")?;
    if let Some(p) = &a.confusion {
        let s = train::confusion_csv(&r.confusion, &loaded.meta.class_names);
        mobilenetv3::fsutil::write_atomic(p, s.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
    }
    if a.json {
        let per_class: Vec<serde_json::Value> = r
            .per_class
            .iter()
            .zip(&loaded.meta.class_names)
            .map(|(acc, n)| serde_json::json!({"label": n, "top1": acc}))
            .collect();
        let v = serde_json::json!({
            "model": a.model.display().to_string(), "variant": loaded.meta.config.name(), "images": r.images,
            "loss": r.loss, "top1": r.top1, "top5": r.top5, "per_class": per_class,
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
    }
    Ok(ExitCode::SUCCESS)
}
