use super::progress::{Progress, Unit};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use mobilenetv3::bench::{self, LatencyRow};
use mobilenetv3::device;
use mobilenetv3::model::arch::{parse_variant_name, ModelConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The six variants the reference measures.
pub const DEFAULT_VARIANTS: [&str; 6] =
    ["small_0.25", "small_0.5", "small_1.0", "large_0.25", "large_0.5", "large_1.0"];

#[derive(Args)]
pub struct LatencyArgs {
    /// Comma-separated variants (small_0.25,...) or "all".
    #[arg(long, default_value = "all")]
    variants: String,
    /// Comma-separated devices (cpu,cuda); default: every available one.
    #[arg(long)]
    devices: Option<String>,
    /// Comma-separated batch sizes.
    #[arg(long, default_value = "1")]
    batch: String,
    /// Timed runs per variant, device and batch size (the median and percentiles come from these).
    #[arg(long, default_value_t = 300, value_parser = count(1))]
    runs: usize,
    /// Untimed runs first (caches, allocator, thread pool).
    #[arg(long, default_value_t = 30, value_parser = count(0))]
    warmup: usize,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write the rows as a JSON array to FILE (or stdout with no FILE or "-").
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    json: Option<String>,
    /// Write the rows as CSV to FILE (or stdout with no FILE or "-").
    #[arg(long, num_args = 0..=1, default_missing_value = "-")]
    csv: Option<String>,
    /// Draw the bar chart (mean +-std per variant and device, a panel per batch size) to FILE.png or FILE.svg.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Draw top-1 against batch-1 latency (the models in trained_models/ and the reference's figures) to
    /// FILE.png or FILE.svg; needs batch 1 among --batch.
    #[arg(long, value_name = "FILE")]
    accuracy_plot: Option<PathBuf>,
    /// Initial stride of the timed models.
    #[arg(long, default_value_t = 1)]
    si: usize,
    /// Side in pixels of the square input (32: CIFAR-100; 224: the paper's, with --si 2).
    #[arg(long, default_value_t = 32, value_parser = input_size())]
    size: usize,
    /// Also time each layer of the CPU inference plan: per layer kind, its milliseconds per inference, share
    /// and GFLOP/s (printed after each row, and in the JSON). The timers themselves add a little to each run.
    #[arg(long)]
    profile: bool,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Training-step throughput (forward, loss, backward, SGD update) on synthetic data.
    Train(TrainBenchArgs),
}

#[derive(Args)]
pub struct TrainBenchArgs {
    /// The variant to train, as small_0.25 or large_1.0.
    #[arg(long, default_value = "small_0.25")]
    variant: String,
    /// Images per training step.
    #[arg(long, default_value_t = 128, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH as u64))]
    batch: usize,
    /// Side in pixels of the square input (32: CIFAR-100; 224: the paper's, with --si 2).
    #[arg(long, default_value_t = 32, value_parser = input_size())]
    size: usize,
    /// Initial stride of the trained model (1: CIFAR; 2: the paper's layout).
    #[arg(long, default_value_t = 1)]
    si: usize,
    /// Timed training steps.
    #[arg(long, default_value_t = 10, value_parser = count(1))]
    steps: usize,
    /// Untimed runs first (caches, allocator, thread pool).
    #[arg(long, default_value_t = 3, value_parser = count(0))]
    warmup: usize,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// fast (the hand-written CPU step; on CUDA the default graph), graph (candle autograd over our kernels:
    /// the CPU ones, or on CUDA our CUDA kernels and in-place SGD) or portable (candle autograd over its stock
    /// ops only: what a CUDA training run uses today).
    #[arg(long, default_value = "fast")]
    engine: String,
}

pub fn parse_variants(s: &str) -> Result<Vec<ModelConfig>> {
    let names: Vec<&str> =
        if s.trim() == "all" { DEFAULT_VARIANTS.to_vec() } else { s.split(',').map(str::trim).collect() };
    names
        .iter()
        .map(|n| {
            parse_variant_name(n)
                .with_context(|| format!("unknown variant {n:?} (expected e.g. small_0.25 or large_1.0)"))
        })
        .collect()
}

/// The largest batch timed or trained (as `train --batch`): more is an allocation failure, not a measurement.
const MAX_BATCH: usize = 4096;
/// The most runs or steps one measurement takes; far more than a median needs, and no overflow of a count.
const MAX_COUNT: u64 = 1_000_000;

/// The input sizes the engine takes (those a folder of images trains at).
fn input_size() -> clap::builder::RangedU64ValueParser<usize> {
    use mobilenetv3::data::folder_load::{MAX_SIDE, MIN_SIDE};
    clap::builder::RangedU64ValueParser::<usize>::new().range(MIN_SIDE as u64..=MAX_SIDE as u64)
}

/// A run or step count from `min` to [`MAX_COUNT`], refused by clap with the range otherwise.
fn count(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..=MAX_COUNT)
}

fn parse_list(s: &str, what: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|x| {
            x.trim()
                .parse::<usize>()
                .ok()
                .filter(|v| (1..=MAX_BATCH).contains(v))
                .with_context(|| format!("bad {what} {x:?}: from 1 to {MAX_BATCH}"))
        })
        .collect()
}

pub fn run_latency(a: LatencyArgs) -> Result<ExitCode> {
    // main applied --threads (RAYON_NUM_THREADS and rayon's pool) before any thread started.
    debug_assert!(a.threads.is_none_or(|n| n == rayon::current_num_threads()));
    let variants = parse_variants(&a.variants)?;
    let batches = parse_list(&a.batch, "batch size")?;
    let devices = match &a.devices {
        Some(d) => d.split(',').map(|s| device::open(s.trim())).collect::<Result<Vec<_>, _>>()?,
        None => device::available(),
    };
    for p in a.plot.iter().chain(&a.accuracy_plot) {
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if ext != "png" && ext != "svg" {
            bail!("{}: the chart is written as .png or .svg", p.display());
        }
    }
    if a.accuracy_plot.is_some() && !batches.contains(&1) {
        bail!("--accuracy-plot needs batch 1 among --batch");
    }
    if a.profile {
        bench::enable_profile();
    }
    let mut rows: Vec<LatencyRow> = Vec::new();
    for dev in &devices {
        for cfg in &variants {
            let cfg = cfg.clone().with_initial_stride(a.si);
            if let Err(e) = cfg.validate() {
                bail!(e);
            }
            for &b in &batches {
                let label = format!("{:<11} {:<5} batch {:<4} {}px", cfg.name(), bench::device_name(dev), b, a.size);
                let mut bar = Progress::new((a.warmup + a.runs) as u64, &label, Unit::Items, Duration::MAX);
                let row = bench::time_inference(&cfg, dev, b, a.size, a.warmup, a.runs, |i| {
                    bar.update(i as u64, String::new, String::new);
                    false
                })?
                .context("benchmark stopped")?;
                drop(bar);
                eprint!("{label} ");
                eprintln!(
                    "median {:8.3} ms  p10 {:8.3}  p90 {:8.3}  {:9.1} img/s",
                    row.median_ms, row.p10_ms, row.p90_ms, row.img_per_s
                );
                match &row.profile {
                    Some(layers) if !layers.is_empty() => eprint!("{}", bench::profile_table(layers, row.median_ms)),
                    Some(_) => eprintln!("  (no layer profile: only the CPU inference plan is profiled)"),
                    None => {}
                }
                rows.push(row);
            }
        }
    }
    if let Some(target) = &a.json {
        write_out(target, &serde_json::to_string_pretty(&rows)?)?;
    }
    if let Some(target) = &a.csv {
        write_out(target, &bench::to_csv(&rows))?;
    }
    if let Some(p) = &a.plot {
        let devices: Vec<String> = rows.iter().map(|r| r.device.clone()).collect();
        let caption = mobilenetv3::chart::machine_caption(&devices, &mobilenetv3::chart::today());
        let chart = mobilenetv3::chart::latency_bars(&rows, "MobileNetV3 inference latency", &caption);
        mobilenetv3::chart::save(&chart, p)?;
        eprintln!("chart written to {}", p.display());
    }
    if let Some(p) = &a.accuracy_plot {
        let dirs = mobilenetv3::paths::AppPaths::locate(&crate::cli::bundle::BUNDLE).model_dirs();
        let models: Vec<(String, f64)> = dirs.iter().flat_map(|d| mobilenetv3::zoo::trained_top1(d)).collect();
        let cpu = bench::device_name(&candle_core::Device::Cpu);
        let latency: Vec<(String, f64)> =
            rows.iter().filter(|r| r.batch == 1 && r.device == cpu).map(|r| (r.variant.clone(), r.median_ms)).collect();
        let (ours, reference) = mobilenetv3::zoo::accuracy_points(&models, &latency);
        let devices = vec![cpu.to_string()];
        let caption = mobilenetv3::chart::machine_caption(&devices, &mobilenetv3::chart::today());
        let chart = mobilenetv3::chart::accuracy_vs_latency(&ours, &reference, &caption);
        mobilenetv3::chart::save(&chart, p)?;
        eprintln!(
            "accuracy chart written to {} ({} of our models, {} reference figures)",
            p.display(),
            ours.len(),
            reference.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_out(target: &str, text: &str) -> Result<()> {
    if target == "-" {
        println!("{text}");
        Ok(())
    } else {
        mobilenetv3::fsutil::write_atomic(&PathBuf::from(target), text.as_bytes())
            .with_context(|| format!("writing {target}"))
    }
}

pub fn run_bench(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Train(a) => {
            // main applied --threads (RAYON_NUM_THREADS and rayon's pool) before any thread started.
            debug_assert!(a.threads.is_none_or(|n| n == rayon::current_num_threads()));
            let cfg = parse_variant_name(&a.variant)
                .with_context(|| format!("unknown variant {:?}", a.variant))?
                .with_initial_stride(a.si);
            if let Err(e) = cfg.validate() {
                bail!(e);
            }
            let dev = device::open(&a.device)?;
            let engine = match a.engine.as_str() {
                "fast" => bench::Engine::Fast,
                "graph" => bench::Engine::Graph,
                "portable" => bench::Engine::Portable,
                other => bail!("--engine must be fast, graph or portable, got {other}"),
            };
            let r = bench::bench_train(&cfg, &dev, engine, a.batch, a.size, a.warmup, a.steps)?;
            if a.json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} si {} batch {} at {}x{} on {} ({} engine): median step {:.1} ms, {:.1} img/s ({} steps)",
                    r.variant,
                    a.si,
                    r.batch,
                    r.size,
                    r.size,
                    a.device,
                    a.engine,
                    r.median_step_ms,
                    r.img_per_s,
                    r.steps
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
