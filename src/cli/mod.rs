//! Argument parsing and the text/JSON views of each subcommand.

mod bench;
mod bundle;
mod classify;
mod export;
mod info;
mod progress;
mod train;

use anyhow::{Context, Result};
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use mobilenetv3::model::weights::{self, LoadOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "mobilenetv3",
    version,
    about = "MobileNetV3 Studio: train, run and time MobileNetV3 on CIFAR-100",
    after_help = "With image files or folders and no command, the app opens on Classify with them classified \
                  (what the desktop launcher does with files opened from the file manager).",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Image files or folders to open in the app's Classify tab.
    #[arg(value_name = "IMAGE")]
    images: Vec<PathBuf>,
}

impl Cli {
    /// The command line, parsed as `Parser::parse` does (clap exits on a usage error or for --help), with the
    /// `--threads` of the command that was given it (train, latency, bench train): `main` applies that before
    /// any thread starts, the commands do not.
    pub fn parse_with_threads() -> (Cli, Option<usize>) {
        let matches = Cli::command().get_matches();
        let threads = threads_of(&matches);
        let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
        (cli, threads)
    }
}

/// The `--threads` of the innermost subcommand, if it has that option and it was given. Read from the matches,
/// by the option's name, so that every command that declares a `threads: Option<usize>` is covered.
fn threads_of(matches: &ArgMatches) -> Option<usize> {
    let mut m = matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    m.try_get_one::<usize>("threads").ok().flatten().copied()
}

/// The app's tabs, as `gui --tab` takes them.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TabArg {
    Train,
    Classify,
    Evaluate,
    Latency,
}

#[derive(Subcommand)]
enum Command {
    /// Classify images (files or folders) with one model or every model found (trained_models/, bundled).
    Classify(classify::ClassifyArgs),
    /// Export a model file to ONNX (opset 17, BatchNorm folded, any batch size), for ONNX Runtime and others.
    Export(export::ExportArgs),
    /// Describe an architecture or a model file: parameters, MACs per image (--size), layer table.
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
    /// Open the desktop app (what running with no subcommand does), optionally on a given tab.
    Gui {
        /// The tab to open on.
        #[arg(long, value_enum, ignore_case = true)]
        tab: Option<TabArg>,
    },
    /// Download the official CIFAR-100 archive (python version) and check its MD5.
    Download {
        /// Folder to put cifar-100-python.tar.gz in.
        #[arg(long, default_value = "data")]
        dir: PathBuf,
    },
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
    /// Print a shell completion script, e.g. `mobilenetv3 completions bash > ~/.local/share/bash-completion/completions/mobilenetv3`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the manual pages (mobilenetv3.1 and one per command) into a folder.
    Man {
        /// The folder to write the pages into.
        out_dir: PathBuf,
    },
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => open_app(None, absolute(cli.images)),
        Some(Command::Gui { tab }) => open_app(tab, Vec::new()),
        Some(Command::Classify(a)) => classify::run(a),
        Some(Command::Export(a)) => export::run(a),
        Some(Command::Info(a)) => info::run(a),
        Some(Command::Train(a)) => train::run(*a),
        Some(Command::Evaluate(a)) => train::evaluate(a),
        Some(Command::Latency(a)) => bench::run_latency(a),
        Some(Command::Bench(c)) => bench::run_bench(c),
        Some(Command::Download { dir }) => {
            let mut bar: Option<progress::Progress> = None;
            let path = mobilenetv3::data::download::download(
                mobilenetv3::data::download::CIFAR100_PYTHON_URL,
                &dir,
                Some(mobilenetv3::data::download::CIFAR100_PYTHON_MD5),
                &mut |done, total| {
                    let bar = bar.get_or_insert_with(|| {
                        let every = std::time::Duration::from_secs(10);
                        progress::Progress::new(total.unwrap_or(0), "downloading", progress::Unit::Bytes, every)
                    });
                    let line = || match total {
                        Some(t) => format!(
                            "{:.1} / {:.1} MB ({:.0}%)",
                            done as f64 / 1e6,
                            t as f64 / 1e6,
                            100.0 * done as f64 / t.max(1) as f64
                        ),
                        None => format!("{:.1} MB", done as f64 / 1e6),
                    };
                    bar.update(done, String::new, line);
                },
            )?;
            drop(bar);
            println!("{} (checksum ok); train with --data {}", path.display(), path.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Completions { shell }) => {
            clap_complete::generate(shell, &mut Cli::command(), "mobilenetv3", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Man { out_dir }) => {
            std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &out_dir)
                .with_context(|| format!("writing manual pages into {}", out_dir.display()))?;
            println!("manual pages written to {}", out_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Convert { input, output, si }) => {
            let opts = LoadOptions { initial_stride: Some(si), ..Default::default() };
            let loaded = weights::load_model(&input, &candle_core::Device::Cpu, &opts)?;
            weights::save_model(&output, &loaded.params, &loaded.meta)
                .with_context(|| format!("converting {}", input.display()))?;
            println!(
                "{} -> {} ({}, si {}, {} parameters)",
                input.display(),
                output.display(),
                loaded.meta.config.name(),
                loaded.meta.config.initial_stride,
                loaded.meta.config.spec().parameter_count()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Paths made absolute against the current folder, so that they name the same files wherever the app looks.
fn absolute(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    paths.into_iter().map(|p| std::path::absolute(&p).unwrap_or(p)).collect()
}

/// Opens the window (on Classify with `images` classified, when given); if no window can be opened, says why
/// and shows the command line instead.
#[cfg(feature = "gui")]
fn open_app(tab: Option<TabArg>, images: Vec<PathBuf>) -> Result<ExitCode> {
    use mobilenetv3::app::Tab;
    let tab = tab.map(|t| match t {
        TabArg::Train => Tab::Train,
        TabArg::Classify => Tab::Classify,
        TabArg::Evaluate => Tab::Evaluate,
        TabArg::Latency => Tab::Latency,
    });
    match mobilenetv3::app::run(mobilenetv3::paths::AppPaths::locate(&crate::cli::bundle::BUNDLE), tab, images) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("error: cannot open the window ({e}); the command line still works:\n");
            Cli::command().print_help()?;
            Ok(ExitCode::from(2))
        }
    }
}

/// A build without the `gui` feature (a headless engine): no window to open.
#[cfg(not(feature = "gui"))]
fn open_app(_tab: Option<TabArg>, _images: Vec<PathBuf>) -> Result<ExitCode> {
    eprintln!("error: this build has no window (built without the `gui` feature); the command line:\n");
    Cli::command().print_help()?;
    Ok(ExitCode::from(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(args: &[&str]) -> Option<usize> {
        threads_of(&Cli::command().try_get_matches_from(args).unwrap())
    }

    #[test]
    fn threads_is_read_from_each_command_that_has_it() {
        assert_eq!(threads(&["mobilenetv3", "train", "--threads", "3"]), Some(3));
        assert_eq!(threads(&["mobilenetv3", "latency", "--threads", "2"]), Some(2));
        assert_eq!(threads(&["mobilenetv3", "bench", "train", "--threads", "5"]), Some(5));
        assert_eq!(threads(&["mobilenetv3", "train"]), None);
        assert_eq!(threads(&["mobilenetv3", "info", "small_0.25"]), None);
        assert_eq!(threads(&["mobilenetv3", "gui"]), None);
        assert_eq!(threads(&["mobilenetv3"]), None);
    }
}
