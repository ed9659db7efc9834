//! The stem of the inference plan: the full 3x3 convolution of an image's three colour planes into the first
//! layer's planes, with bias and activation, computed straight from the row kernel's shifted rows
//! ([`super::depthwise_rows`]): each output vector is 27 multiply-adds of aligned vectors, as many as the
//! convolution has, and each band of eight output rows is computed for every output plane while its input
//! rows are in cache.
//!
//! It replaces im2col + a matrix product there, which at 224 pixels copied the image into a 27 x 12,544 matrix
//! on one thread per image and then ran products only 27 deep (the measured cost: a fifth of an inference of
//! MobileNetV3-Small at batch 1). The training step keeps im2col, whose matrix its weight gradient reuses.

use super::depthwise_rows::{Lane16, RowPlan};
use super::plane::Geometry;
use super::{Act, SharedMut};
use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    /// The three planes' shifted rows. Taken out of the cell for the duration of a call (and put back after),
    /// so that a call that runs while another on this thread waits (rayon's work stealing) gets a buffer of its
    /// own instead of a borrow conflict.
    static SHIFTED: Cell<Vec<Lane16>> = const { Cell::new(Vec::new()) };
}

/// Output rows per task: one tile of the row kernel.
const BAND: usize = 8;

/// y (n x c_out x oh x ow) = act(conv3x3(x) + bias) for x of n x 3 x h x w (`g`, with c = 3) and `w`
/// c_out x 3 x 3 x 3 as PyTorch lays it out (c_out = bias.len()). Returns false, writing nothing, where the row
/// kernel does not take the shape (a CPU without AVX2, an odd side at stride 2, a side over its widest): the
/// caller then uses im2col.
pub(crate) fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: &[f32], act: Act, y: &mut [f32]) -> bool {
    let Some(plan) = RowPlan::new(&Geometry { n: 1, c: 1, ..*g }) else {
        return false;
    };
    let (oh, ow, c_out) = (g.out_h(), g.out_w(), bias.len());
    let (hw, ohw, len) = (g.h * g.w, oh * ow, plan.buffer_len());
    assert!(g.c == 3 && g.k == 3, "the stem is a 3x3 convolution of three colour planes");
    assert!(x.len() >= g.n * 3 * hw && w.len() >= c_out * 27 && y.len() >= g.n * c_out * ohw);
    let bands = oh.div_ceil(BAND);
    let band_rows = |band: usize| band * BAND..((band + 1) * BAND).min(oh);
    if g.n == 1 {
        // One image: its three planes are shifted side by side, then the bands are shared out.
        with_buffer(3 * len, |bufs| {
            bufs.par_chunks_mut(len).enumerate().for_each(|(c, b)| plan.shift(&x[c * hw..(c + 1) * hw], None, b));
            let planes = planes(bufs, len);
            let out = SharedMut::new(&mut y[..c_out * ohw]);
            (0..bands).into_par_iter().for_each(|band| {
                let rows = band_rows(band);
                // SAFETY: each band writes its own rows of each output plane, and no one else writes `y`.
                let mut outs: Vec<&mut [f32]> =
                    (0..c_out).map(|o| unsafe { out.slice(o * ohw + rows.start * ow, rows.len() * ow) }).collect();
                plan.correlate_planes(planes, w, bias, act, rows, &mut outs);
            });
        });
        return true;
    }
    // A batch: an image per task.
    y[..g.n * c_out * ohw].par_chunks_mut(c_out * ohw).enumerate().for_each(|(img, y)| {
        with_buffer(3 * len, |bufs| {
            for (c, b) in bufs.chunks_mut(len).enumerate() {
                plan.shift(&x[(img * 3 + c) * hw..(img * 3 + c + 1) * hw], None, b);
            }
            let planes = planes(bufs, len);
            for band in 0..bands {
                let rows = band_rows(band);
                let mut outs: Vec<&mut [f32]> =
                    y.chunks_mut(ohw).map(|plane| &mut plane[rows.start * ow..rows.end * ow]).collect();
                plan.correlate_planes(planes, w, bias, act, rows, &mut outs);
            }
        })
    });
    true
}

/// The three planes' shifted rows, `len` each.
fn planes(bufs: &[Lane16], len: usize) -> [&[Lane16]; 3] {
    [&bufs[..len], &bufs[len..2 * len], &bufs[2 * len..3 * len]]
}

/// Runs `f` with this thread's buffer of at least `len` vectors (contents unspecified).
fn with_buffer<R>(len: usize, f: impl FnOnce(&mut [Lane16]) -> R) -> R {
    let mut buf = SHIFTED.take();
    if buf.len() < len {
        buf.resize(len, Lane16::default());
    }
    let r = f(&mut buf[..len]);
    SHIFTED.set(buf);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::depthwise::tests::data;

    /// The definition: every output pixel the sum of its 27 taps inside the image, plus the bias.
    fn naive(g: &Geometry, x: &[f32], w: &[f32], bias: &[f32], act: Act) -> Vec<f32> {
        let (oh, ow, c_out) = (g.out_h(), g.out_w(), bias.len());
        let mut y = vec![0f32; g.n * c_out * oh * ow];
        for img in 0..g.n {
            for o in 0..c_out {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = 0f64;
                        for c in 0..3 {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let iy = (oy * g.stride + ky) as isize - 1;
                                    let ix = (ox * g.stride + kx) as isize - 1;
                                    if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                        continue;
                                    }
                                    let v = x[((img * 3 + c) * g.h + iy as usize) * g.w + ix as usize];
                                    s += (w[((o * 3 + c) * 3 + ky) * 3 + kx] * v) as f64;
                                }
                            }
                        }
                        y[((img * c_out + o) * oh + oy) * ow + ox] = act.apply(s as f32 + bias[o]);
                    }
                }
            }
        }
        y
    }

    /// Every side the app trains or classifies at (odd ones at stride 1), both strides, one image and a
    /// batch, where the row kernel takes the shape; elsewhere `forward` declines and writes nothing.
    #[test]
    fn the_stem_matches_the_definition_or_declines() {
        for (side, stride) in
            [(32, 1), (33, 1), (7, 1), (32, 2), (64, 2), (96, 1), (96, 2), (224, 2), (224, 1), (47, 2)]
        {
            for n in [1, 3] {
                let g = Geometry { n, c: 3, h: side, w: side, k: 3, stride, pad: 1 };
                let c_out = 16;
                let (x, w, b) = (data(n * 3 * side * side, 1), data(c_out * 27, 2), data(c_out, 3));
                let mut y = vec![f32::NAN; n * c_out * g.out_h() * g.out_w()];
                if !forward(&g, &x, &w, &b, Act::HardSwish, &mut y) {
                    assert!(RowPlan::new(&Geometry { n: 1, c: 1, ..g }).is_none(), "{g:?}");
                    assert!(y.iter().all(|v| v.is_nan()), "a declined call wrote");
                    continue;
                }
                let r = naive(&g, &x, &w, &b, Act::HardSwish);
                for (i, (a, e)) in y.iter().zip(&r).enumerate() {
                    assert!((a - e).abs() <= 1e-5 * (1.0 + e.abs()), "{g:?} at {i}: {a} vs {e}");
                }
            }
        }
    }
}
