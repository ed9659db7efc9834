//! `mobilenetv3`: the command line over the engine library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    mobilenetv3::device::tune_allocator();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
