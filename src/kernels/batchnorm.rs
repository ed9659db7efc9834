//! BatchNorm fused with the activation that follows it, over NCHW data.
//!
//! Training: per-channel batch statistics, y = act((x - mean) / sqrt(var + eps) * gamma + beta), and a backward
//! pass that recomputes the normalised input instead of storing it. Evaluation: y = act(x * scale + shift).
//! The activation is a type parameter, so each inner loop is branch-free and vectorises.

use super::{hsum, Act};
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

/// An activation known at compile time.
trait Activation: Copy + Send + Sync {
    fn apply(z: f32) -> f32;
    fn derivative(z: f32) -> f32;
}

#[derive(Clone, Copy)]
struct Identity;
#[derive(Clone, Copy)]
struct Relu;
#[derive(Clone, Copy)]
struct HardSwish;

impl Activation for Identity {
    #[inline(always)]
    fn apply(z: f32) -> f32 {
        z
    }
    #[inline(always)]
    fn derivative(_: f32) -> f32 {
        1.0
    }
}

impl Activation for Relu {
    #[inline(always)]
    fn apply(z: f32) -> f32 {
        z.max(0.0)
    }
    #[inline(always)]
    fn derivative(z: f32) -> f32 {
        if z > 0.0 {
            1.0
        } else {
            0.0
        }
    }
}

impl Activation for HardSwish {
    #[inline(always)]
    fn apply(z: f32) -> f32 {
        z * (z + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0)
    }
    #[inline(always)]
    fn derivative(z: f32) -> f32 {
        // (2z + 3) / 6 inside [-3, 3], 0 below, 1 above; written as selects, which vectorise.
        let inner = (2.0 * z + 3.0) * (1.0 / 6.0);
        let v = if z < -3.0 { 0.0 } else { inner };
        if z > 3.0 {
            1.0
        } else {
            v
        }
    }
}

/// Calls `$f::<A>` with the type for `$act`.
macro_rules! by_act {
    ($act:expr, $f:ident ( $($arg:expr),* )) => {
        match $act {
            Act::None => $f::<Identity>($($arg),*),
            Act::Relu => $f::<Relu>($($arg),*),
            Act::HardSwish => $f::<HardSwish>($($arg),*),
        }
    };
}

/// Batch mean and biased variance of each channel. One pass over the data: sums of (x - K) and (x - K)^2 with
/// K the channel's first value (shifted sums keep the variance accurate when |mean| >> std), per plane in f32
/// and across planes in f64.
pub(crate) fn batch_stats(d: &Dims, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let shift: Vec<f32> = (0..d.c).map(|ch| x[d.plane(0, ch)].first().copied().unwrap_or(0.0)).collect();
    // Image-major, one contiguous range of images per thread (see `backward_sums_t`).
    let partial: Vec<Vec<(f64, f64)>> = crate::kernels::image_ranges(d.n)
        .into_par_iter()
        .map(|range| {
            let mut acc = vec![(0f64, 0f64); d.c];
            for img in range {
                for (ch, a) in acc.iter_mut().enumerate() {
                    let (s1, s2) = simd!(shifted_sums(&x[d.plane(img, ch)], shift[ch]));
                    a.0 += s1 as f64;
                    a.1 += s2 as f64;
                }
            }
            acc
        })
        .collect();
    let n = d.count() as f64;
    (0..d.c)
        .map(|ch| {
            let (s1, s2) = partial.iter().fold((0f64, 0f64), |t, p| (t.0 + p[ch].0, t.1 + p[ch].1));
            let m = s1 / n;
            ((shift[ch] as f64 + m) as f32, (s2 / n - m * m).max(0.0) as f32)
        })
        .unzip()
}

#[inline(always)]
fn shifted_sums(v: &[f32], k: f32) -> (f32, f32) {
    let mut a = [0f32; 16];
    let mut b = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            let t = c[l] - k;
            a[l] += t;
            b[l] += t * t;
        }
    }
    let (mut s1, mut s2): (f32, f32) = (hsum(a), hsum(b));
    for t in rest {
        s1 += t - k;
        s2 += (t - k) * (t - k);
    }
    (s1, s2)
}

/// Training forward. Returns the batch mean and biased variance (for the running statistics); `inv_std` is
/// written for the backward pass.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_forward(
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
    let norm = TrainNorm::new(mean, &var, gamma.to_vec(), beta.to_vec(), act, eps);
    inv_std[..d.c].copy_from_slice(&norm.inv_std);
    affine_act(d, x, &norm.scale, &norm.shift, act, y);
    (norm.mean, var)
}

/// y = act(x * scale[c] + shift[c]): evaluation-mode BatchNorm (and the second half of the training forward).
pub(crate) fn affine_act(d: &Dims, x: &[f32], scale: &[f32], shift: &[f32], act: Act, y: &mut [f32]) {
    by_act!(act, affine_act_t(d, x, scale, shift, y))
}

fn affine_act_t<A: Activation>(d: &Dims, x: &[f32], scale: &[f32], shift: &[f32], y: &mut [f32]) {
    y.par_chunks_mut(d.hw).zip(x.par_chunks(d.hw)).enumerate().for_each(|(plane, (out, inp))| {
        let ch = plane % d.c;
        let (a, b) = (scale[ch], shift[ch]);
        simd!(out.iter_mut().zip(inp).for_each(|(o, v)| *o = A::apply(v * a + b)));
    });
}

/// In place: y = act(y + bias[c]) (the epilogue of a folded convolution).
pub(crate) fn bias_act_inplace(d: &Dims, y: &mut [f32], bias: &[f32], act: Act) {
    by_act!(act, bias_act_t(d, y, bias))
}

fn bias_act_t<A: Activation>(d: &Dims, y: &mut [f32], bias: &[f32]) {
    y.par_chunks_mut(d.hw).enumerate().for_each(|(plane, out)| {
        let b = bias[plane % d.c];
        simd!(out.iter_mut().for_each(|o| *o = A::apply(*o + b)));
    });
}

/// Training backward: gradients of x, gamma and beta from dy, recomputing x_hat from x, mean and inv_std.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_backward(
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
    assert!(dx.len() >= d.n * d.c * d.hw, "batch norm backward: short buffers");
    let coeffs = backward_sums(d, x, dy, gamma, beta, mean, inv_std, act, dgamma, dbeta);
    dx.par_chunks_mut(d.hw).enumerate().take(d.n * d.c).for_each(|(plane, out)| {
        let r = plane * d.hw..(plane + 1) * d.hw;
        coeffs.plane_grad(plane % d.c, &x[r.clone()], &dy[r], out);
    });
}

/// What the second pass of the BatchNorm backward needs per channel, from the first pass's batch sums: the
/// input gradient of any plane can then be computed on its own (inside the convolution that consumes it).
pub struct BackwardCoeffs {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    /// Batch means of dz = dy * act'(.) and of dz * x_hat.
    mdz: Vec<f32>,
    mdzx: Vec<f32>,
    act: Act,
}

impl BackwardCoeffs {
    /// dx for one plane of channel `ch`: gamma * inv_std * (dz - mean(dz) - x_hat * mean(dz * x_hat)).
    #[inline]
    pub(crate) fn plane_grad(&self, ch: usize, x: &[f32], dy: &[f32], dx: &mut [f32]) {
        by_act!(self.act, plane_grad_t(self, ch, x, dy, dx))
    }
}

fn plane_grad_t<A: Activation>(c: &BackwardCoeffs, ch: usize, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    let (m, is, g, b) = (c.mean[ch], c.inv_std[ch], c.gamma[ch], c.beta[ch]);
    let (mdz, mdzx, k) = (c.mdz[ch], c.mdzx[ch], g * is);
    simd!({
        for ((ov, xv), gv) in dx.iter_mut().zip(x).zip(dy) {
            let xh = (xv - m) * is;
            let dz = gv * A::derivative(xh * g + b);
            *ov = k * (dz - mdz - xh * mdzx);
        }
    });
}

/// The first pass of the backward: per channel, the sums of dz = dy * act'(x_hat * gamma + beta) and of
/// dz * x_hat over the batch, which are also the gradients of beta and gamma (written here).
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward_sums(
    d: &Dims,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    inv_std: &[f32],
    act: Act,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> BackwardCoeffs {
    assert!(x.len() >= d.n * d.c * d.hw && dy.len() >= x.len(), "batch norm backward: short buffers");
    let sums = by_act!(act, backward_sums_t(d, x, dy, gamma, beta, mean, inv_std));
    coeffs_from_sums(&sums, d.count(), mean, inv_std, gamma, beta, act, dgamma, dbeta)
}

#[allow(clippy::too_many_arguments)]
fn coeffs_from_sums(
    sums: &[(f64, f64)],
    count: usize,
    mean: &[f32],
    inv_std: &[f32],
    gamma: &[f32],
    beta: &[f32],
    act: Act,
    dgamma: &mut [f32],
    dbeta: &mut [f32],
) -> BackwardCoeffs {
    let cnt = count.max(1) as f64;
    let (mut mdz, mut mdzx) = (vec![0f32; sums.len()], vec![0f32; sums.len()]);
    for (ch, &(sdz, sdzx)) in sums.iter().enumerate() {
        dgamma[ch] = sdzx as f32;
        dbeta[ch] = sdz as f32;
        mdz[ch] = (sdz / cnt) as f32;
        mdzx[ch] = (sdzx / cnt) as f32;
    }
    BackwardCoeffs {
        mean: mean.to_vec(),
        inv_std: inv_std.to_vec(),
        gamma: gamma.to_vec(),
        beta: beta.to_vec(),
        mdz,
        mdzx,
        act,
    }
}

fn backward_sums_t<A: Activation>(
    d: &Dims,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    inv_std: &[f32],
) -> Vec<(f64, f64)> {
    // Image-major: each thread streams through a contiguous range of images (all their channels in memory
    // order) and keeps its own per-channel sums; reading channel by channel across the batch jumps c*hw floats
    // per plane and ran at a fraction of the memory bandwidth.
    let partial: Vec<Vec<(f64, f64)>> = crate::kernels::image_ranges(d.n)
        .into_par_iter()
        .map(|range| {
            let mut acc = vec![(0f64, 0f64); d.c];
            for img in range {
                for (ch, a) in acc.iter_mut().enumerate() {
                    let r = d.plane(img, ch);
                    let (s1, s2) = simd!(plane_backward_sums::<A>(
                        &x[r.clone()],
                        &dy[r],
                        mean[ch],
                        inv_std[ch],
                        gamma[ch],
                        beta[ch]
                    ));
                    a.0 += s1 as f64;
                    a.1 += s2 as f64;
                }
            }
            acc
        })
        .collect();
    let mut sums = vec![(0f64, 0f64); d.c];
    for part in partial {
        for (s, v) in sums.iter_mut().zip(part) {
            s.0 += v.0;
            s.1 += v.1;
        }
    }
    sums
}

/// Sums over one plane of dz = dy * act'(x_hat * g + b) and of dz * x_hat, in 16 independent lanes.
#[inline(always)]
fn plane_backward_sums<A: Activation>(xs: &[f32], gs: &[f32], m: f32, is: f32, g: f32, b: f32) -> (f32, f32) {
    let (mut a, mut bs) = ([0f32; 16], [0f32; 16]);
    let (xc, gc) = (xs.chunks_exact(16), gs.chunks_exact(16));
    let (xr, gr) = (xc.remainder(), gc.remainder());
    for (x, d) in xc.zip(gc) {
        for l in 0..16 {
            let xh = (x[l] - m) * is;
            let dz = d[l] * A::derivative(xh * g + b);
            a[l] += dz;
            bs[l] += dz * xh;
        }
    }
    let (mut s1, mut s2): (f32, f32) = (hsum(a), hsum(bs));
    for (x, d) in xr.iter().zip(gr) {
        let xh = (x - m) * is;
        let dz = d * A::derivative(xh * g + b);
        s1 += dz;
        s2 += dz * xh;
    }
    (s1, s2)
}

/// Batch statistics gathered plane by plane while each plane is in cache (inside the convolution that made it):
/// each plane's mean and sum of squared deviations in f32 (two passes over the plane, so accurate far from
/// zero), summed per channel in f64.
#[derive(Clone)]
pub struct MomentSums {
    /// Per channel: the sum of values and the sum of (M2 + n * mean^2) over planes.
    s1: Vec<f64>,
    q: Vec<f64>,
    count: Vec<usize>,
}

impl MomentSums {
    pub fn new(c: usize) -> Self {
        MomentSums { s1: vec![0.0; c], q: vec![0.0; c], count: vec![0; c] }
    }

    #[inline]
    pub(crate) fn add_plane(&mut self, ch: usize, v: &[f32]) {
        let (m, m2) = simd!(plane_moments(v));
        let n = v.len() as f64;
        self.s1[ch] += n * m as f64;
        self.q[ch] += m2 as f64 + n * (m as f64) * (m as f64);
        self.count[ch] += v.len();
    }

    /// The sums of several parts of the batch (one per thread).
    pub(crate) fn merge(parts: Vec<MomentSums>) -> MomentSums {
        let mut it = parts.into_iter();
        let mut total = it.next().expect("at least one part");
        for p in it {
            for ch in 0..total.s1.len() {
                total.s1[ch] += p.s1[ch];
                total.q[ch] += p.q[ch];
                total.count[ch] += p.count[ch];
            }
        }
        total
    }

    /// Per channel: the batch mean and biased variance.
    pub(crate) fn mean_var(&self) -> (Vec<f32>, Vec<f32>) {
        (0..self.s1.len())
            .map(|ch| {
                let n = self.count[ch].max(1) as f64;
                let m = self.s1[ch] / n;
                (m as f32, (self.q[ch] / n - m * m).max(0.0) as f32)
            })
            .unzip()
    }
}

/// A plane's mean and sum of squared deviations from it.
#[inline(always)]
fn plane_moments(v: &[f32]) -> (f32, f32) {
    let mut a = [0f32; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            a[l] += c[l];
        }
    }
    let m = (hsum(a) + rest.iter().sum::<f32>()) / v.len().max(1) as f32;
    let (s1, s2) = shifted_sums(v, m);
    // s1 is the rounding residue of the mean; removing it keeps M2 exact to first order.
    (m, s2 - s1 * s1 / v.len().max(1) as f32)
}

/// A BatchNorm layer in a training step, once its batch statistics are known: applies itself plane by plane
/// (inside the layer that consumes it) and gives the per-plane sums of its backward pass.
pub struct TrainNorm {
    pub mean: Vec<f32>,
    pub inv_std: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub scale: Vec<f32>,
    pub shift: Vec<f32>,
    pub act: Act,
}

impl TrainNorm {
    /// From the batch mean and biased variance.
    pub fn new(mean: Vec<f32>, var: &[f32], gamma: Vec<f32>, beta: Vec<f32>, act: Act, eps: f32) -> Self {
        let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let scale: Vec<f32> = gamma.iter().zip(&inv_std).map(|(g, i)| g * i).collect();
        let shift: Vec<f32> = (0..gamma.len()).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
        TrainNorm { mean, inv_std, gamma, beta, scale, shift, act }
    }

    /// y = act(BN(z)) for one plane of channel `ch`.
    #[inline]
    pub(crate) fn apply_plane(&self, ch: usize, z: &[f32], y: &mut [f32]) {
        by_act!(self.act, apply_plane_t(z, self.scale[ch], self.shift[ch], y))
    }

    /// The backward's batch sums for one plane (add them up per channel for [`TrainNorm::coeffs`]).
    #[inline]
    pub(crate) fn backward_plane_sums(&self, ch: usize, z: &[f32], dy: &[f32]) -> (f32, f32) {
        let (m, is, g, b) = (self.mean[ch], self.inv_std[ch], self.gamma[ch], self.beta[ch]);
        by_act!(self.act, backward_plane_sums_simd(z, dy, m, is, g, b))
    }

    /// The second pass's coefficients from the batch sums; writes the gradients of gamma and beta.
    pub(crate) fn coeffs(
        &self,
        sums: &[(f64, f64)],
        count: usize,
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) -> BackwardCoeffs {
        coeffs_from_sums(sums, count, &self.mean, &self.inv_std, &self.gamma, &self.beta, self.act, dgamma, dbeta)
    }
}

fn apply_plane_t<A: Activation>(z: &[f32], a: f32, b: f32, y: &mut [f32]) {
    simd!(y.iter_mut().zip(z).for_each(|(o, v)| *o = A::apply(v * a + b)));
}

fn backward_plane_sums_simd<A: Activation>(z: &[f32], dy: &[f32], m: f32, is: f32, g: f32, b: f32) -> (f32, f32) {
    simd!(plane_backward_sums::<A>(z, dy, m, is, g, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 250.0 - 2.0 + offset
            })
            .collect()
    }

    #[test]
    fn statistics_stay_accurate_far_from_zero() {
        let d = Dims { n: 3, c: 2, hw: 37 };
        let x = data(3 * 2 * 37, 1, 1000.0);
        let (mean, var) = batch_stats(&d, &x);
        for ch in 0..2 {
            let vals: Vec<f64> = (0..3).flat_map(|i| x[d.plane(i, ch)].iter().map(|v| *v as f64)).collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let v = vals.iter().map(|x| (x - m).powi(2)).sum::<f64>() / vals.len() as f64;
            assert!((mean[ch] as f64 - m).abs() < 1e-3, "{} vs {m}", mean[ch]);
            assert!((var[ch] as f64 - v).abs() < 1e-3 * v, "{} vs {v}", var[ch]);
        }
    }

    /// Moments gathered plane by plane (any split of the planes across parts) give the batch statistics, also
    /// far from zero; the plane-wise backward sums give the same coefficients as the whole-batch pass.
    #[test]
    fn plane_by_plane_statistics_and_sums_match_the_batch_passes() {
        let d = Dims { n: 3, c: 2, hw: 37 };
        for offset in [0.0f32, 1000.0] {
            let x = data(3 * 2 * 37, 1, offset);
            let (mean, var) = batch_stats(&d, &x);
            let mut parts = vec![MomentSums::new(2), MomentSums::new(2)];
            for img in 0..d.n {
                for ch in 0..d.c {
                    parts[img % 2].add_plane(ch, &x[d.plane(img, ch)]);
                }
            }
            let (m2, v2) = MomentSums::merge(parts).mean_var();
            for ch in 0..2 {
                assert!((mean[ch] - m2[ch]).abs() < 1e-4 * (1.0 + offset), "{} vs {}", mean[ch], m2[ch]);
                assert!((var[ch] - v2[ch]).abs() < 1e-3 * var[ch], "offset {offset}: {} vs {}", var[ch], v2[ch]);
            }
        }
        let x = data(3 * 2 * 37, 2, 0.3);
        let dy = data(3 * 2 * 37, 5, 0.0);
        let (gamma, beta) = (vec![1.3f32, -0.4], vec![0.2f32, 1.0]);
        let (mean, var) = batch_stats(&d, &x);
        let norm = TrainNorm::new(mean.clone(), &var, gamma.clone(), beta.clone(), Act::HardSwish, 1e-5);
        let (mut dg, mut db) = ([0f32; 2], [0f32; 2]);
        let whole = backward_sums(&d, &x, &dy, &gamma, &beta, &mean, &norm.inv_std, Act::HardSwish, &mut dg, &mut db);
        let mut sums = vec![(0f64, 0f64); 2];
        for img in 0..d.n {
            for (ch, s) in sums.iter_mut().enumerate() {
                let (a, b) = norm.backward_plane_sums(ch, &x[d.plane(img, ch)], &dy[d.plane(img, ch)]);
                s.0 += a as f64;
                s.1 += b as f64;
            }
        }
        let (mut dg2, mut db2) = ([0f32; 2], [0f32; 2]);
        let planes = norm.coeffs(&sums, d.count(), &mut dg2, &mut db2);
        for ch in 0..2 {
            assert!((dg[ch] - dg2[ch]).abs() < 1e-4 && (db[ch] - db2[ch]).abs() < 1e-4);
            let r = d.plane(1, ch);
            let (mut a, mut b) = (vec![0f32; d.hw], vec![0f32; d.hw]);
            whole.plane_grad(ch, &x[r.clone()], &dy[r.clone()], &mut a);
            planes.plane_grad(ch, &x[r.clone()], &dy[r], &mut b);
            assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5), "{a:?} vs {b:?}");
        }
        // And the plane-wise forward is the whole-batch one.
        let mut y = vec![0f32; x.len()];
        affine_act(&d, &x, &norm.scale, &norm.shift, Act::HardSwish, &mut y);
        let mut yp = vec![0f32; d.hw];
        norm.apply_plane(1, &x[d.plane(2, 1)], &mut yp);
        assert_eq!(&y[d.plane(2, 1)], &yp[..]);
    }

    /// Finite differences of L = sum(w * y) against the analytic gradients, for each activation.
    #[test]
    fn backward_matches_finite_differences() {
        let d = Dims { n: 2, c: 3, hw: 7 };
        let len = d.n * d.c * d.hw;
        let x: Vec<f32> = data(len, 3, 0.3);
        let wts: Vec<f32> = data(len, 9, 0.0);
        let gamma = [1.3f32, 0.7, -0.4];
        let beta = [0.2f32, -0.5, 1.0];
        for act in [Act::None, Act::Relu, Act::HardSwish] {
            let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
                let mut y = vec![0f32; len];
                let mut is = vec![0f32; 3];
                train_forward(&d, x, gamma, beta, act, 1e-5, &mut y, &mut is);
                y.iter().zip(&wts).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
            };
            let mut y = vec![0f32; len];
            let mut is = vec![0f32; 3];
            let (mean, _) = train_forward(&d, &x, &gamma, &beta, act, 1e-5, &mut y, &mut is);
            let (mut dx, mut dg, mut db) = (vec![0f32; len], [0f32; 3], [0f32; 3]);
            train_backward(&d, &x, &wts, &gamma, &beta, &mean, &is, act, &mut dx, &mut dg, &mut db);
            let h = 1e-2f32;
            for i in [0usize, 5, 13, 22, 41] {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += h;
                xm[i] -= h;
                let num = (loss(&xp, &gamma, &beta) - loss(&xm, &gamma, &beta)) / (2.0 * h as f64);
                assert!((num - dx[i] as f64).abs() < 2e-2 * (1.0 + num.abs()), "{act:?} dx[{i}]: {num} vs {}", dx[i]);
            }
            for ch in 0..3 {
                let (mut gp, mut gm) = (gamma, gamma);
                gp[ch] += h;
                gm[ch] -= h;
                let num = (loss(&x, &gp, &beta) - loss(&x, &gm, &beta)) / (2.0 * h as f64);
                assert!((num - dg[ch] as f64).abs() < 2e-2 * (1.0 + num.abs()), "{act:?} dgamma: {num} vs {}", dg[ch]);
                let (mut bp, mut bm) = (beta, beta);
                bp[ch] += h;
                bm[ch] -= h;
                let num = (loss(&x, &gamma, &bp) - loss(&x, &gamma, &bm)) / (2.0 * h as f64);
                assert!((num - db[ch] as f64).abs() < 2e-2 * (1.0 + num.abs()), "{act:?} dbeta: {num} vs {}", db[ch]);
            }
        }
    }
}
