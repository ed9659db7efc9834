//! Argument parsing and the text/JSON views of each subcommand.

mod bench;
mod classify;
mod info;
mod train;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use mobilenetv3::weights::{self, LoadOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mobilenetv3", version, about = "MobileNetV3 Studio: train, run and time MobileNetV3 on CIFAR-100")]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (files or folders) with one model or every model in trained_models/.
    Classify(classify::ClassifyArgs),
    /// Describe an architecture or a model file: parameters, MACs per 32x32 image, layer table.
    Info(info::InfoArgs),
    /// Train a model on CIFAR-100; the best checkpoint goes to trained_models/.
    Train(Box<train::TrainArgs>),
    /// Accuracy of a model on the CIFAR-100 test split (top-1, top-5, per class, confusion matrix).
    Evaluate(train::EvaluateArgs),
    /// Time inference of each variant on each device (the Latency tab's engine).
    Latency(bench::LatencyArgs),
    /// Throughput benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Import a PyTorch state_dict checkpoint (.pth) into the native safetensors format.
    Convert {
        /// The PyTorch checkpoint (torch.save(model.state_dict())).
        input: PathBuf,
        /// Where to write the .safetensors file.
        output: PathBuf,
        /// Initial stride of the network that was trained (strides leave no trace in the weights).
        #[arg(long, default_value_t = 1)]
        si: usize,
    },
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => {
            Cli::command().print_help()?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Classify(a)) => classify::run(a),
        Some(Command::Info(a)) => info::run(a),
        Some(Command::Train(a)) => train::run(*a),
        Some(Command::Evaluate(a)) => train::evaluate(a),
        Some(Command::Latency(a)) => bench::run_latency(a),
        Some(Command::Bench(c)) => bench::run_bench(c),
        Some(Command::Convert { input, output, si }) => {
            let opts = LoadOptions { initial_stride: Some(si), ..Default::default() };
            let loaded = weights::load_model(&input, &candle_core::Device::Cpu, &opts)?;
            weights::save_model(&output, &loaded.model, &loaded.meta)
                .with_context(|| format!("converting {}", input.display()))?;
            println!(
                "{} -> {} ({}, si {}, {} parameters)",
                input.display(),
                output.display(),
                loaded.meta.config.name(),
                loaded.meta.config.initial_stride,
                loaded.model.spec().parameter_count()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The project folder that holds `trained_models/` and `test_images/`: the current directory if it has them,
/// else the first ancestor of the executable that does (so `target/release/mobilenetv3` finds the repo's).
pub fn project_dir() -> PathBuf {
    let has = |d: &std::path::Path| d.join("trained_models").is_dir() || d.join("test_images").is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        if has(&cwd) {
            return cwd;
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            if has(dir) {
                return dir.to_path_buf();
            }
        }
    }
    PathBuf::from(".")
}
