//! `mobilenetv3`: the command line over the engine library.

mod cli;

fn main() -> std::process::ExitCode {
    mobilenetv3::device::tune_allocator();
    let (args, threads) = cli::Cli::parse_with_threads();
    if let Some(n) = threads.filter(|&n| n >= 1) {
        // SAFETY: no other thread exists yet (clap parsed on this one; no command, rayon pool or app has started),
        // so nothing reads the environment while it changes; later, with threads that may read it, this would be
        // a data race. Its readers: candle, on each CPU matrix product (it sizes gemm's parallelism by it), and
        // rayon, for a global pool built with default settings.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
    // The rayon pool of that size (and the error for --threads 0), before the command runs.
    let threads_set = match threads {
        Some(n) => mobilenetv3::device::set_cpu_threads(n).map_err(anyhow::Error::from),
        None => Ok(()),
    };
    match threads_set.and_then(|()| cli::run(args)) {
        Ok(code) => code,
        // A command that fails exits 1; clap has already exited 2 for a usage error.
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
