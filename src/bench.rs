//! The benchmark engine behind `mobilenetv3 latency`, `mobilenetv3 bench train` and the Latency tab.

use crate::exec::graph::MobileNetV3;
use crate::kernels::profile::timed;
use crate::model::arch::ModelConfig;
use crate::train::optim::{Sgd, SgdConfig};
use candle_core::{Device, Tensor};
use serde::Serialize;
use std::time::Instant;

/// Summary statistics of a set of timings (milliseconds).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Stats {
    pub mean_ms: f64,
    pub std_ms: f64,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
}

impl Stats {
    pub(crate) fn from_ms(samples: &[f64]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len().max(1) as f64;
        let mean = s.iter().sum::<f64>() / n;
        let var = s.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Stats {
            mean_ms: mean,
            std_ms: var.sqrt(),
            median_ms: percentile(&s, 0.5),
            p10_ms: percentile(&s, 0.1),
            p90_ms: percentile(&s, 0.9),
            min_ms: s.first().copied().unwrap_or(0.0),
        }
    }
}

/// Linear-interpolated percentile of sorted samples (numpy's default).
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// One row of the latency table (also the JSON object `latency --json` prints).
#[derive(Clone, Debug, Serialize)]
pub struct LatencyRow {
    pub variant: String,
    pub device: String,
    pub batch: usize,
    /// Side of the square input in pixels.
    pub size: usize,
    pub runs: usize,
    pub mean_ms: f64,
    pub std_ms: f64,
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub img_per_s: f64,
    /// Every timing, in run order (for charts with spread); not part of the JSON output.
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
    /// Where the time went, per layer kind, when profiling is on (`latency --profile`, or `MBV3_PROFILE=1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<Vec<LayerTime>>,
}

/// The time one kind of layer takes in an inference (`latency --profile`).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LayerTime {
    pub kind: String,
    /// Calls per inference: one per layer of this kind where the threads share each layer (a small batch),
    /// one per layer and image where each thread runs whole images (a batch of at least twice the threads).
    pub calls: f64,
    /// Mean milliseconds per inference: wall time where the threads share each layer; where each thread runs
    /// whole images, the sum of the threads' times (about threads x wall), as `time` says.
    pub ms: f64,
    /// "wall" or "thread" (see `ms`).
    pub time: &'static str,
    /// Share of all the layers' time.
    pub share: f64,
    /// Floating-point operations per inference (of the whole batch) in these layers: twice the
    /// multiply-accumulates of their convolutions, counted as `mobilenetv3 info` counts MACs.
    pub gflop: f64,
    /// GFLOP per second of `ms`: the threads' joint rate for wall time, one thread's for thread time.
    pub gflop_per_s: f64,
}

/// Turns on the per-layer profile of [`time_inference`] for the rest of the process.
pub fn enable_profile() {
    crate::kernels::profile::enable();
}

/// Per-layer-kind times from `rows` of `runs` inferences, slowest first; `per_thread`: each thread ran whole
/// images (the plan's rule for a batch of at least twice the threads), so the times are the threads' own.
fn layer_times(rows: Vec<crate::kernels::profile::Row>, runs: usize, per_thread: bool) -> Vec<LayerTime> {
    let total: f64 = rows.iter().map(|r| r.seconds).sum::<f64>().max(1e-12);
    let runs = runs.max(1) as f64;
    let mut v: Vec<LayerTime> = rows
        .into_iter()
        .map(|r| LayerTime {
            kind: r.name.to_string(),
            calls: r.calls as f64 / runs,
            ms: r.seconds * 1e3 / runs,
            // The classifier runs once for the whole batch on the calling thread: wall time either way.
            time: if per_thread && r.name != crate::exec::inference::CLASSIFIER_KIND { "thread" } else { "wall" },
            share: r.seconds / total,
            gflop: r.flops as f64 / runs / 1e9,
            gflop_per_s: if r.seconds > 0.0 { r.flops as f64 / r.seconds / 1e9 } else { 0.0 },
        })
        .collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    v
}

/// The profile as a text table, with a total line against the wall time of one inference.
pub fn profile_table(layers: &[LayerTime], wall_ms: f64) -> String {
    let per_thread = layers.iter().any(|l| l.time == "thread");
    let mut s = String::from(if per_thread {
        "  (each thread ran whole images: ms are the threads' summed time, GFLOP/s one thread's rate)\n"
    } else {
        "  (the threads shared each layer: ms are wall time, GFLOP/s the threads' joint rate)\n"
    });
    s.push_str(&format!(
        "  {:<34} {:>7} {:>9} {:>6} {:>8} {:>9}\n",
        "layer kind", "calls", "mean ms", "%", "GFLOP", "GFLOP/s"
    ));
    for l in layers {
        s.push_str(&format!(
            "  {:<34} {:>7.0} {:>9.3} {:>6.1} {:>8.4} {:>9.1}\n",
            l.kind,
            l.calls,
            l.ms,
            100.0 * l.share,
            l.gflop,
            l.gflop_per_s
        ));
    }
    let sum: f64 = layers.iter().map(|l| l.ms).sum();
    let gflop: f64 = layers.iter().map(|l| l.gflop).sum();
    s.push_str(&format!(
        "  {:<34} {:>7} {:>9.3} {:>6} {gflop:>8.4}  (median wall time {wall_ms:.3} ms)\n",
        "all layers", "", sum, ""
    ));
    s
}

/// Waits for queued device work, so that a timing covers the computation, not its launch.
pub(crate) fn synchronize(device: &Device) -> candle_core::Result<()> {
    device.synchronize()
}

/// Times inference of one model at one batch size on `size` x `size` images: `warmup` untimed runs, then `runs`
/// timed ones. `should_stop` is polled between runs; a stopped measurement returns None.
#[allow(clippy::too_many_arguments)]
pub fn time_inference(
    config: &ModelConfig,
    device: &Device,
    batch: usize,
    size: usize,
    warmup: usize,
    runs: usize,
    mut should_stop: impl FnMut(usize) -> bool,
) -> candle_core::Result<Option<LatencyRow>> {
    let model = MobileNetV3::new(config, device, 0)?;
    let runner = crate::exec::Inference::only(model)?;
    let x = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &Device::Cpu)?.to_device(device)?;
    for i in 0..warmup {
        if should_stop(i) {
            return Ok(None);
        }
        runner.forward(&x)?;
    }
    synchronize(device)?;
    let profiling = crate::kernels::profile::enabled();
    crate::kernels::profile::take();
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs {
        if should_stop(warmup + i) {
            return Ok(None);
        }
        let t = Instant::now();
        let y = runner.forward(&x)?;
        synchronize(device)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        drop(y);
    }
    let s = Stats::from_ms(&samples);
    Ok(Some(LatencyRow {
        variant: config.name(),
        device: device_name(device),
        batch,
        size,
        runs,
        img_per_s: batch as f64 / (s.median_ms / 1e3),
        mean_ms: s.mean_ms,
        std_ms: s.std_ms,
        median_ms: s.median_ms,
        p10_ms: s.p10_ms,
        p90_ms: s.p90_ms,
        min_ms: s.min_ms,
        samples_ms: samples,
        profile: profiling.then(|| {
            let per_thread = crate::exec::inference::images_per_thread(batch);
            layer_times(crate::kernels::profile::take(), runs, per_thread)
        }),
    }))
}

pub fn device_name(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => "cuda".into(),
        Device::Metal(_) => "metal".into(),
    }
}

/// Which implementation runs a CPU training step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The hand-written step of [`crate::exec::train_step`] (CPU only; other devices use the graph).
    Fast,
    /// candle's autograd over the model's ops (our kernels as custom ops on the CPU).
    Graph,
    /// candle's autograd over its stock ops only: the path that runs on every device.
    Portable,
}

/// Result of `bench train`.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBench {
    pub variant: String,
    pub engine: Engine,
    pub batch: usize,
    /// Side of the square input in pixels.
    pub size: usize,
    pub steps: usize,
    pub median_step_ms: f64,
    pub img_per_s: f64,
}

/// Full SGD steps (forward in train mode, cross-entropy, backward, update) on synthetic `size` x `size` data.
pub fn bench_train(
    config: &ModelConfig,
    device: &Device,
    engine: Engine,
    batch: usize,
    size: usize,
    warmup: usize,
    steps: usize,
) -> candle_core::Result<TrainBench> {
    let mut model = MobileNetV3::new(config, device, 0)?;
    // graph: our kernels under candle's autograd (on CUDA, our CUDA kernels, which a plain run does not use
    // yet); portable: candle's stock ops.
    match engine {
        Engine::Portable => model.set_ops(crate::exec::graph::ops::Ops::Portable),
        Engine::Graph => model.set_ops(crate::exec::graph::ops::Ops::Fused),
        Engine::Fast => {}
    }
    let mut opt = Sgd::new(model.params().trainable(), SgdConfig::default());
    opt.use_cuda_kernels(engine == Engine::Graph);
    let x_cpu = Tensor::randn(0f32, 1f32, (batch, 3, size, size), &Device::Cpu)?;
    let x_host = x_cpu.flatten_all()?.to_vec1::<f32>()?;
    let labels: Vec<u32> = (0..batch as u32).map(|i| (i * 37) % config.num_classes as u32).collect();
    let mut times = Vec::new();
    for i in 0..warmup + steps {
        if i == warmup {
            crate::kernels::profile::take();
        }
        let t = Instant::now();
        let executor = match engine {
            Engine::Fast => crate::exec::choose(device, crate::exec::Purpose::Train),
            Engine::Graph | Engine::Portable => crate::exec::Executor::Graph,
        };
        let step = timed("engine.step", || {
            crate::exec::train_step(&model, executor, x_host.clone(), size, &labels, 0.0, i as u64)
        })?;
        let grads = step.grads;
        timed("sgd.step", || opt.step(&grads))?;
        synchronize(device)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    crate::kernels::profile::report(times.iter().sum::<f64>() / 1e3);
    let s = Stats::from_ms(&times);
    Ok(TrainBench {
        variant: config.name(),
        engine,
        batch,
        size,
        steps,
        median_step_ms: s.median_ms,
        img_per_s: batch as f64 / (s.median_ms / 1e3),
    })
}

/// The rows as CSV, with the same columns as the JSON objects.
pub fn to_csv(rows: &[LatencyRow]) -> String {
    let mut s =
        String::from("variant,device,batch,size,runs,mean_ms,std_ms,median_ms,p10_ms,p90_ms,min_ms,img_per_s\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{:.4},{:.4},{:.4},{:.4},{:.4},{:.4},{:.2}\n",
            r.variant,
            r.device,
            r.batch,
            r.size,
            r.runs,
            r.mean_ms,
            r.std_ms,
            r.median_ms,
            r.p10_ms,
            r.p90_ms,
            r.min_ms,
            r.img_per_s
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_known_samples() {
        let s = Stats::from_ms(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(s.median_ms, 3.0);
        assert_eq!(s.min_ms, 1.0);
        assert!((s.p10_ms - 1.4).abs() < 1e-12);
        assert!((s.p90_ms - 4.6).abs() < 1e-12);
        assert!((s.std_ms - 2.5f64.sqrt()).abs() < 1e-12);
    }
}
