//! BatchNorm fused with the activation that follows it, over NCHW data.
//!
//! Training: per-channel batch statistics, y = act((x - mean) / sqrt(var + eps) * gamma + beta), and a backward
//! pass that recomputes the normalised input instead of storing it. Evaluation: y = act(x * scale + shift).

use super::{Act, SharedMut};
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub n: usize,
    pub c: usize,
    /// h * w
    pub hw: usize,
}

impl Dims {
    fn plane(&self, img: usize, ch: usize) -> std::ops::Range<usize> {
        let start = (img * self.c + ch) * self.hw;
        start..start + self.hw
    }
    pub fn count(&self) -> usize {
        self.n * self.hw
    }
}

/// Batch mean and biased variance of each channel (sums in f64 for accuracy at large batch x spatial sizes).
pub fn batch_stats(d: &Dims, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let stats: Vec<(f32, f32)> = (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let mut sum = 0f64;
            for img in 0..d.n {
                sum += x[d.plane(img, ch)].iter().map(|v| *v as f64).sum::<f64>();
            }
            let mean = sum / d.count() as f64;
            let mut sq = 0f64;
            for img in 0..d.n {
                let m = mean as f32;
                let s: f32 = x[d.plane(img, ch)].iter().map(|v| (v - m) * (v - m)).sum();
                sq += s as f64;
            }
            (mean as f32, (sq / d.count() as f64) as f32)
        })
        .collect();
    stats.into_iter().unzip()
}

/// Training forward. Returns the batch mean and biased variance (for the running statistics); `inv_std` is
/// written for the backward pass.
pub fn train_forward(
    d: &Dims,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    act: Act,
    eps: f32,
    y: &mut [f32],
    inv_std: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let (mean, var) = batch_stats(d, x);
    for ch in 0..d.c {
        inv_std[ch] = 1.0 / (var[ch] + eps).sqrt();
    }
    let scale: Vec<f32> = (0..d.c).map(|ch| gamma[ch] * inv_std[ch]).collect();
    let shift: Vec<f32> = (0..d.c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
    affine_act(d, x, &scale, &shift, act, y);
    (mean, var)
}

/// y = act(x * scale[c] + shift[c]): evaluation-mode BatchNorm (and the second half of the training forward).
pub fn affine_act(d: &Dims, x: &[f32], scale: &[f32], shift: &[f32], act: Act, y: &mut [f32]) {
    y.par_chunks_mut(d.hw).zip(x.par_chunks(d.hw)).enumerate().for_each(|(plane, (out, inp))| {
        let ch = plane % d.c;
        let (a, b) = (scale[ch], shift[ch]);
        match act {
            Act::None => out.iter_mut().zip(inp).for_each(|(o, v)| *o = v * a + b),
            Act::Relu => out.iter_mut().zip(inp).for_each(|(o, v)| *o = (v * a + b).max(0.0)),
            Act::HardSwish => out.iter_mut().zip(inp).for_each(|(o, v)| *o = Act::HardSwish.apply(v * a + b)),
        }
    });
}

/// In-place y = act(y + bias[c]) (the epilogue of a folded convolution).
pub fn bias_act_inplace(d: &Dims, y: &mut [f32], bias: &[f32], act: Act) {
    y.par_chunks_mut(d.hw).enumerate().for_each(|(plane, out)| {
        let b = bias[plane % d.c];
        out.iter_mut().for_each(|o| *o = act.apply(*o + b));
    });
}

/// Training backward: gradients of x, gamma and beta from dy, recomputing x_hat from x, mean and inv_std.
#[allow(clippy::too_many_arguments)]
pub fn train_backward(
    d: &Dims,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    act: Act,
    dx: &mut [f32],
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) {
    let out = SharedMut(dx.as_mut_ptr());
    let sums: Vec<(f32, f32)> = (0..d.c)
        .into_par_iter()
        .map(|ch| {
            let (m, is, g, b) = (mean[ch], inv_std[ch], gamma[ch], beta[ch]);
            // Pass 1: dz = dy * act'(z); sums of dz and dz * x_hat.
            let (mut sdz, mut sdzx) = (0f64, 0f64);
            for img in 0..d.n {
                let r = d.plane(img, ch);
                let (mut a, mut bsum) = (0f32, 0f32);
                for (xv, gv) in x[r.clone()].iter().zip(&dy[r]) {
                    let xh = (xv - m) * is;
                    let dz = gv * act.derivative(xh * g + b);
                    a += dz;
                    bsum += dz * xh;
                }
                sdz += a as f64;
                sdzx += bsum as f64;
            }
            // Pass 2: dx = gamma * inv_std * (dz - mean(dz) - x_hat * mean(dz * x_hat)).
            let cnt = d.count() as f64;
            let (mdz, mdzx) = ((sdz / cnt) as f32, (sdzx / cnt) as f32);
            let k = g * is;
            for img in 0..d.n {
                let r = d.plane(img, ch);
                // SAFETY: channel `ch`'s planes are written by this task only.
                let o = unsafe { out.slice(r.start, d.hw) };
                for ((ov, xv), gv) in o.iter_mut().zip(&x[r.clone()]).zip(&dy[r]) {
                    let xh = (xv - m) * is;
                    let dz = gv * act.derivative(xh * g + b);
                    *ov = k * (dz - mdz - xh * mdzx);
                }
            }
            (sdzx as f32, sdz as f32)
        })
        .collect();
    for (ch, (gx, gb)) in sums.into_iter().enumerate() {
        dgamma[ch] = gx;
        dbeta[ch] = gb;
    }
}
