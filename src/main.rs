//! `mobilenetv3`: the command line over the engine library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    mobilenetv3::device::tune_allocator();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        // A command that fails exits 1; clap has already exited 2 for a usage error.
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
