//! Opt-in timing of the kernels (`MBV3_PROFILE=1`, or [`enable`]), printed by `bench train` (where a training
//! step goes) and `latency --profile` (where an inference goes, per layer kind, with its arithmetic rate).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicU8 = AtomicU8::new(2); // 2 = not read yet
/// Per name: calls, seconds, floating-point operations (0 where not counted).
static TABLE: Mutex<BTreeMap<&'static str, (u64, f64, u64)>> = Mutex::new(BTreeMap::new());

/// Turns profiling on for the rest of the process (as `MBV3_PROFILE=1` does).
pub fn enable() {
    ENABLED.store(1, Ordering::Relaxed);
}

/// Whether profiling is on.
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        2 => {
            let on = std::env::var("MBV3_PROFILE").map(|v| v == "1").unwrap_or(false);
            ENABLED.store(on as u8, Ordering::Relaxed);
            on
        }
        v => v == 1,
    }
}

/// Runs `f`, adding its wall time to `name`'s total when profiling is on.
#[inline]
pub fn timed<R>(name: &'static str, f: impl FnOnce() -> R) -> R {
    timed_flops(name, 0, f)
}

/// [`timed`], also adding the floating-point operations `f` does (a multiply-add counts two) to `name`'s.
#[inline]
pub fn timed_flops<R>(name: &'static str, flops: u64, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let dt = t.elapsed().as_secs_f64();
    if let Ok(mut m) = TABLE.lock() {
        let e = m.entry(name).or_insert((0, 0.0, 0));
        e.0 += 1;
        e.1 += dt;
        e.2 += flops;
    }
    r
}

/// One row of the table: a kernel or layer kind, how often it ran, its seconds and operations.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: &'static str,
    pub calls: u64,
    pub seconds: f64,
    pub flops: u64,
}

/// The table so far, and clears it.
pub fn take() -> Vec<Row> {
    let mut m = match TABLE.lock() {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    let v = m.iter().map(|(k, (n, s, f))| Row { name: k, calls: *n, seconds: *s, flops: *f }).collect();
    m.clear();
    v
}

/// Prints the table to stderr when profiling is on.
pub fn report(total_s: f64) {
    if !enabled() {
        return;
    }
    let rows = take();
    let mine: f64 = rows.iter().map(|r| r.seconds).sum();
    eprintln!("{:<34} {:>8} {:>10} {:>6}", "kernel", "calls", "ms", "%");
    for r in rows {
        eprintln!("{:<34} {:>8} {:>10.1} {:>6.1}", r.name, r.calls, r.seconds * 1e3, 100.0 * r.seconds / total_s);
    }
    eprintln!(
        "{:<34} {:>8} {:>10.1} {:>6.1}",
        "(everything else)",
        "",
        (total_s - mine) * 1e3,
        100.0 * (total_s - mine) / total_s
    );
}
