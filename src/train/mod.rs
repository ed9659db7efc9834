//! The training engine: one loop that emits events (step, epoch, checkpoint, finished, failed) to whoever
//! listens (the CLI's progress bar, the app's Train tab, a log), and that can be paused, resumed and stopped
//! from another thread. Checkpoints are written atomically; a run can resume from its last epoch.
//!
//! The loop is here; what it is made of lives beside it, one job a file: the run's config ([`config`]), its
//! record ([`history`]), its events and controls ([`events`]), evaluation ([`evaluate`]), finding the data
//! ([`dataset`]), starting from a model file ([`start`]), resume state ([`resume`]), the divergence guard
//! ([`divergence`]), last-layer-only training on embeddings ([`head_only`]), its files and locks
//! ([`runfiles`]) and SGD with momentum ([`optim`]).

mod config;
mod dataset;
mod divergence;
mod error;
mod evaluate;
mod events;
mod head_only;
mod history;
pub mod optim;
mod options;
mod resume;
pub mod runfiles;
mod start;

pub use config::{Schedule, ScheduleKind, SelectBy, TrainConfig, DEFAULT_WARMUP_EPOCHS};
pub use dataset::{evaluation_config, has_dataset, load_data, load_data_with_progress, open_dataset};
pub use error::{ResumeError, TrainError};
pub use evaluate::{confusion_csv, csv_field, evaluate, evaluate_with_progress, EvalResult, Mistake, MISTAKES_KEPT};
pub use events::{DataSummary, TrainControl, TrainEvent};
pub use history::{EpochRecord, History, Status};
pub use options::{default_side, Milestones, TrainOptions};
pub use resume::{resume_path, run_folder};

use crate::data;
use crate::device;
use crate::exec::graph::MobileNetV3;
use crate::model::weights::{self, ModelMeta};
use crate::train::optim::Sgd;
use divergence::{kept, DivergenceGuard};
use events::wait_while_paused;
use history::save_history;
use resume::{load_resume, resumed_config, save_resume, ResumeHeader};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// What the training engine's functions return.
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs (or resumes) training. Events go to `on_event`; the return value is the final history.
pub fn run(
    cfg: &TrainConfig,
    resume: Option<&Path>,
    control: &TrainControl,
    mut on_event: impl FnMut(TrainEvent),
) -> Result<History> {
    let result = run_inner(cfg, resume, control, &mut on_event);
    if let Err(e) = &result {
        on_event(TrainEvent::Failed { message: format!("{e:#}") });
    }
    result
}

fn run_inner(
    cfg: &TrainConfig,
    resume: Option<&Path>,
    control: &TrainControl,
    on_event: &mut impl FnMut(TrainEvent),
) -> Result<History> {
    // Resuming takes the saved run's recipe (so it cannot silently change mid-run), but where files go comes from
    // the caller: the file supplies only its run's name, checked to be a plain file name.
    let (mut cfg, resumed) = match resume {
        Some(p) => {
            let (tensors, header) = load_resume(p)?;
            let cfg = resumed_config(p, &header, cfg)?;
            (cfg, Some((tensors, header)))
        }
        None => (cfg.clone(), None),
    };
    if let Some((field, message)) = cfg.problems().into_iter().next() {
        return Err(TrainError::Config { field, message });
    }
    let dev = device::open(&cfg.device)?;
    let executor = crate::exec::choose(&dev, crate::exec::Purpose::Train);
    let ds = load_with_events(&cfg, control, on_event)?;
    let classes = ds.class_names.len();
    // A new run's classifier has the data set's classes; a resumed one must already have them.
    let start = match (&resumed, &cfg.from) {
        (Some(_), _) if cfg.model.num_classes != classes => {
            return Err(TrainError::ClassCountMismatch { model: cfg.model.num_classes, data: classes });
        }
        (Some(_), _) => None,
        (None, Some(from)) => {
            let s = start::start_weights(from, &ds.class_names, cfg.model.dropout)?;
            cfg.model = s.config.clone();
            Some(s)
        }
        (None, None) => {
            cfg.model.num_classes = classes;
            None
        }
    };
    on_event(TrainEvent::Data(Box::new(DataSummary::of(&ds))));
    if ds.train.len() < cfg.batch_size {
        return Err(TrainError::TooFewImages { images: ds.train.len(), batch: cfg.batch_size });
    }
    let crop = ds.crop;
    let side = ds.side();
    let class_names = ds.class_names;
    let train = Arc::new(ds.train);
    let test = Arc::new(ds.test);
    // Before any epoch: the output folder must take files, with room for the checkpoints; temp files that
    // crashed runs left behind are removed.
    let checkpoint_bytes = cfg.model.spec().parameter_count() as u64 * 4;
    runfiles::prepare_out_dir(&cfg.out_dir, checkpoint_bytes)?;

    let model = MobileNetV3::new_with(&cfg.model, &dev, cfg.seed, cfg.init)?;
    if let Some(start) = start {
        // The fresh model's tensors where the file gives none (a new classifier), the file's everywhere else.
        let mut tensors: std::collections::HashMap<_, _> = model.params().snapshot()?.into_iter().collect();
        tensors.extend(start.tensors);
        model.params().copy_from(&tensors)?;
    }
    let trainable = if cfg.freeze_backbone { model.params().classifier() } else { model.params().trainable() };
    let mut opt = Sgd::new(trainable, cfg.sgd.clone());
    if cfg.from.is_some() {
        let classifier = crate::model::names::classifier();
        opt.scale_lr(|n| n != classifier.weight && n != classifier.bias, cfg.backbone_lr_factor);
    }
    let (mut history, mut best_metric, _lock) = match resumed {
        Some((tensors, header)) => {
            let lock = runfiles::RunLock::acquire(&cfg.out_dir, &header.history.name)?;
            // Again under the lock: a run of the same name may have started and ended since the first check.
            resume::files_are_this_runs(&cfg.out_dir, &header.history)?;
            model.params().copy_from(&tensors)?;
            opt.load_state(&tensors)?;
            let mut h = header.history;
            h.config = cfg.clone();
            (h, header.best_metric.filter(|m| m.is_finite()), lock)
        }
        None => {
            let mut h = History {
                name: String::new(),
                config: cfg.clone(),
                device: cfg.device.clone(),
                started_unix: unix_now(),
                epochs: Vec::new(),
                step_losses: Vec::new(),
                best_epoch: None,
                checkpoint: None,
                status: Status::Running,
            };
            let lock = runfiles::reserve_name(&cfg.out_dir, &base_name(&cfg), |name| {
                h.name = name.to_string();
                Ok(serde_json::to_string_pretty(&h)?.into_bytes())
            })?;
            (h, None, lock)
        }
    };
    history.status = Status::Running;
    let stem = history.name.clone();
    let ckpt_path = cfg.out_dir.join(format!("{stem}.safetensors"));
    let history_path = cfg.out_dir.join(format!("{stem}.history.json"));
    let state_path = resume_path(&cfg.out_dir, &stem);
    // From here on a failure is recorded in the run's history ("failed: <reason>") before it is reported.
    let fail = |history: &mut History, e: TrainError| -> TrainError {
        history.status = Status::Failed(format!("{e:#}"));
        let _ = save_history(&history_path, history);
        e
    };
    let steps_per_epoch = data::batches_per_epoch(train.len(), cfg.batch_size, true);
    on_event(TrainEvent::Started {
        name: stem.clone(),
        epochs: cfg.epochs,
        steps_per_epoch,
        train_images: train.len(),
        test_images: test.len(),
        params: model.spec().parameter_count(),
        device: cfg.device.clone(),
    });

    let start_epoch = history.epochs.len();
    let embedded = if cfg.freeze_backbone {
        let embedded = head_only::Embedded::compute(
            &model,
            &train,
            &test,
            cfg.augment.flip,
            |done, total| on_event(TrainEvent::Embedding { done, total }),
            || control.is_stopped(),
        );
        match embedded.map_err(|e| fail(&mut history, e))? {
            Some(e) => Some(e),
            None => return finish_stopped(history, &history_path, start_epoch, on_event),
        }
    } else {
        None
    };
    let elapsed_before: f64 = history.epochs.last().map(|r| r.elapsed_s).unwrap_or(0.0);
    let run_start = Instant::now();
    // Seconds per training step and per evaluation, smoothed, for the ETA.
    let mut step_s: Option<f64> = None;
    let mut divergence = DivergenceGuard::default();
    let mut eval_s: Option<f64> = None;
    for epoch in start_epoch..cfg.epochs {
        let epoch_start = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let epoch_seed = cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64);
        let batches: Box<dyn Iterator<Item = data::Batch>> = match &embedded {
            Some(e) => Box::new(e.epoch_batches(cfg.batch_size, epoch_seed).into_iter()),
            None => Box::new(
                data::epoch_batches(
                    train.clone(),
                    cfg.batch_size,
                    cfg.augment.crop.then_some(crop),
                    cfg.augment.flip,
                    true,
                    true,
                    epoch_seed,
                    3,
                )
                .into_iter(),
            ),
        };
        let mut lr = cfg.schedule.lr(cfg.sgd.lr, epoch, 0.0, cfg.epochs);
        for b in batches {
            if wait_while_paused(control, on_event) {
                return finish_stopped(history, &history_path, epoch, on_event);
            }
            let t = Instant::now();
            lr = cfg.schedule.lr(cfg.sgd.lr, epoch, b.index as f64 / steps_per_epoch as f64, cfg.epochs);
            opt.set_lr(lr);
            let n = b.labels.len();
            let global = (epoch * steps_per_epoch + b.index) as u64;
            let dropout_seed = cfg.seed ^ global.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let smoothing = cfg.label_smoothing as f32;
            let step = match &embedded {
                Some(_) => crate::exec::head_step(&model, b.images, &b.labels, smoothing, dropout_seed)?,
                None => crate::exec::train_step(&model, executor, b.images, side, &b.labels, smoothing, dropout_seed)?,
            };
            let (loss_v, pred, grads) = (step.loss, step.predictions, step.grads);
            if let Some(what) = divergence.check(loss_v) {
                history.step_losses.push(loss_v);
                let e = TrainError::Diverged {
                    what,
                    when: format!("at epoch {}, step {}", epoch + 1, b.index + 1),
                    lr,
                    kept: kept(&history),
                };
                return Err(fail(&mut history, e));
            }
            opt.step(&grads)?;
            correct += pred.iter().zip(&b.labels).filter(|(a, b)| a == b).count();
            loss_sum += loss_v as f64 * n as f64;
            seen += n;
            history.step_losses.push(loss_v);
            let dt = t.elapsed().as_secs_f64();
            step_s = Some(match step_s {
                Some(s) => 0.9 * s + 0.1 * dt,
                None => dt,
            });
            let s = step_s.unwrap_or(dt);
            let steps_left = (cfg.epochs - epoch) * steps_per_epoch - (b.index + 1);
            let evals_left = (cfg.epochs - epoch) as f64;
            let eta = steps_left as f64 * s
                + evals_left * eval_s.unwrap_or(s * test.len() as f64 / cfg.batch_size as f64 / 3.0);
            on_event(TrainEvent::Step {
                epoch: epoch + 1,
                step: b.index + 1,
                steps_per_epoch,
                loss: loss_v,
                lr,
                img_per_s: n as f64 / s,
                eta_s: eta,
            });
        }
        let train_s = epoch_start.elapsed().as_secs_f64();
        on_event(TrainEvent::Evaluating { epoch: epoch + 1 });
        let t_eval = Instant::now();
        let ev = match &embedded {
            Some(e) => e.evaluate(&model)?,
            None => match evaluate(&model, &test, 256, || control.is_stopped())? {
                Some(ev) => ev,
                None => return finish_stopped(history, &history_path, epoch, on_event),
            },
        };
        eval_s = Some(t_eval.elapsed().as_secs_f64());
        if !ev.loss.is_finite() {
            let e = TrainError::Diverged {
                what: format!("the validation loss became {}", ev.loss),
                when: format!("after epoch {}", epoch + 1),
                lr,
                kept: kept(&history),
            };
            return Err(fail(&mut history, e));
        }
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss: loss_sum / seen.max(1) as f64,
            train_top1: correct as f64 / seen.max(1) as f64,
            val_loss: ev.loss,
            top1: ev.top1,
            top5: ev.top5,
            lr,
            img_per_s: seen as f64 / train_s,
            elapsed_s: elapsed_before + run_start.elapsed().as_secs_f64(),
        };
        history.epochs.push(record.clone());
        on_event(TrainEvent::Epoch(record.clone()));
        let metric = match cfg.select_by {
            SelectBy::ValLoss => -ev.loss,
            SelectBy::Top1 => ev.top1,
        };
        if metric.is_finite() && best_metric.is_none_or(|b| metric > b) {
            best_metric = Some(metric);
            history.best_epoch = Some(epoch + 1);
            history.checkpoint = Some(ckpt_path.clone());
            let mut meta = ModelMeta::cifar100(&cfg.model);
            meta.class_names = class_names.clone();
            meta.image_size = side;
            meta.training = Some(training_summary(&history, &record, train.len()));
            if let Err(e) = weights::save_model(&ckpt_path, model.params(), &meta) {
                return Err(fail(&mut history, e.into()));
            }
            on_event(TrainEvent::Checkpoint { path: ckpt_path.clone(), epoch: epoch + 1 });
        }
        let saved = save_history(&history_path, &history).and_then(|()| {
            save_resume(&state_path, &model, &opt, &ResumeHeader { history: history.clone(), best_metric })
        });
        if let Err(e) = saved {
            return Err(fail(&mut history, e));
        }
    }
    history.status = Status::Finished;
    save_history(&history_path, &history)?;
    // The run is complete: its resume state is no longer needed.
    let _ = std::fs::remove_file(&state_path);
    on_event(TrainEvent::Finished { history: Box::new(history.clone()) });
    Ok(history)
}

/// The name a new run's files start with: `mobilenetv3_small_0.25` on CIFAR-100, `<folder>_small_0.25` on a
/// folder of images (its name reduced to ASCII letters, digits, `-` and `_`), so that the user's models are told apart
/// in Classify's list.
fn base_name(cfg: &TrainConfig) -> String {
    let folder = cfg.images.as_deref().and_then(|d| d.file_name()).map(|n| {
        let clean: String = n
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
            .take(60)
            .collect();
        clean.trim_matches('_').to_string()
    });
    match folder.filter(|f| !f.is_empty()) {
        Some(f) => format!("{f}_{}", cfg.model.name()),
        None => format!("mobilenetv3_{}", cfg.model.name()),
    }
}

/// Loads the run's data; while a folder of images is decoded (on another thread), its progress goes out as
/// events and the Stop button cancels it.
fn load_with_events(
    cfg: &TrainConfig,
    control: &TrainControl,
    on_event: &mut impl FnMut(TrainEvent),
) -> Result<data::DataSet> {
    if cfg.images.is_none() {
        return load_data(cfg);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let cancel = &cancel;
        let loading = scope.spawn(move || {
            load_data_with_progress(
                cfg,
                move |done, total| {
                    let _ = tx.send((done, total));
                },
                cancel,
            )
        });
        for (done, total) in rx {
            on_event(TrainEvent::Decoding { done, total });
            if control.is_stopped() {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        loading.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A duration for progress lines: `mm:ss`, or `h:mm:ss` from an hour on.
pub fn hms(s: f64) -> String {
    let s = if s.is_finite() { s.max(0.0) as u64 } else { 0 };
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}

/// What the checkpoint's header says about its training.
fn training_summary(h: &History, best: &EpochRecord, train_images: usize) -> serde_json::Value {
    serde_json::json!({
        "run": h.name,
        "epoch": best.epoch,
        "epochs_planned": h.config.epochs,
        "top1": best.top1,
        "top5": best.top5,
        "val_loss": best.val_loss,
        "train_images": train_images,
        "batch_size": h.config.batch_size,
        "lr": h.config.sgd.lr,
        "schedule": h.config.schedule,
        "seed": h.config.seed,
        "device": h.device,
    })
}

fn finish_stopped(
    mut history: History,
    path: &Path,
    epoch: usize,
    on_event: &mut impl FnMut(TrainEvent),
) -> Result<History> {
    history.status = Status::Stopped;
    save_history(path, &history)?;
    on_event(TrainEvent::Stopped { epoch: epoch + 1 });
    Ok(history)
}
