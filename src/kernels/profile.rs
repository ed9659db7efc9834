//! Opt-in timing of the kernels (`MBV3_PROFILE=1`), printed by `bench train`: where a training step goes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicU8 = AtomicU8::new(2); // 2 = not read yet
static TABLE: Mutex<BTreeMap<&'static str, (u64, f64)>> = Mutex::new(BTreeMap::new());

fn enabled() -> bool {
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
    if !enabled() {
        return f();
    }
    let t = Instant::now();
    let r = f();
    let dt = t.elapsed().as_secs_f64();
    if let Ok(mut m) = TABLE.lock() {
        let e = m.entry(name).or_insert((0, 0.0));
        e.0 += 1;
        e.1 += dt;
    }
    r
}

/// The table so far (name, calls, seconds), and clears it.
pub fn take() -> Vec<(&'static str, u64, f64)> {
    let mut m = match TABLE.lock() {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    let v = m.iter().map(|(k, (n, s))| (*k, *n, *s)).collect();
    m.clear();
    v
}

/// Prints the table to stderr when profiling is on.
pub fn report(total_s: f64) {
    if !enabled() {
        return;
    }
    let rows = take();
    let mine: f64 = rows.iter().map(|r| r.2).sum();
    eprintln!("{:<34} {:>8} {:>10} {:>6}", "kernel", "calls", "ms", "%");
    for (name, n, s) in rows {
        eprintln!("{name:<34} {n:>8} {:>10.1} {:>6.1}", s * 1e3, 100.0 * s / total_s);
    }
    eprintln!(
        "{:<34} {:>8} {:>10.1} {:>6.1}",
        "(everything else)",
        "",
        (total_s - mine) * 1e3,
        100.0 * (total_s - mine) / total_s
    );
}
