//! Progress on stderr: a bar redrawn in place when stderr is a terminal (indicatif), plain lines now and then
//! when it is a log, so that `nohup ... > log` stays readable.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    bar: Option<ProgressBar>,
    last_line: Instant,
    line_every: Duration,
    total: u64,
}

/// What is counted: items (steps, images, runs) or bytes.
#[derive(Clone, Copy)]
pub enum Unit {
    Items,
    Bytes,
}

impl Progress {
    /// A bar over `total` (0: unknown) with `prefix` before it; a terminal gets the bar, a log a line every
    /// `line_every` (and one at the end).
    pub fn new(total: u64, prefix: &str, unit: Unit, line_every: Duration) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let template = match unit {
                Unit::Items => "{prefix} [{bar:24}] {pos}/{len} {msg}",
                Unit::Bytes => "{prefix} [{bar:24}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            };
            let style = ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("#>.");
            let bar = ProgressBar::with_draw_target(Some(total).filter(|t| *t > 0), ProgressDrawTarget::stderr());
            bar.set_style(style);
            bar.set_prefix(prefix.to_string());
            bar
        });
        Progress { bar, last_line: Instant::now(), line_every, total }
    }

    /// Moves to `done`; `message` says the rest (loss, speed, ...). A log gets `line()` now and then.
    pub fn update(&mut self, done: u64, message: impl FnOnce() -> String, line: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(done);
                bar.set_message(message());
            }
            None => {
                if self.last_line.elapsed() >= self.line_every || (self.total > 0 && done >= self.total) {
                    self.last_line = Instant::now();
                    eprintln!("{}", line());
                }
            }
        }
    }

    /// Removes the bar (a terminal) so that the next line starts clean.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
