//! Depthwise convolution (one kxk filter per channel, no cross-channel sum): forward with an optional fused
//! bias and activation, and the two backward passes (input gradient, weight gradient).
//!
//! Each plane is copied into a zero-padded scratch buffer first, so the inner loops run without bounds checks
//! and, for stride 1, over contiguous memory that the compiler vectorises.

use super::Act;
use rayon::prelude::*;
use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    fn padded(&self) -> (usize, usize) {
        (self.h + 2 * self.pad, self.w + 2 * self.pad)
    }
    pub fn out_len(&self) -> usize {
        self.n * self.c * self.out_h() * self.out_w()
    }
}

thread_local! {
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a zeroed thread-local buffer of `len` floats.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        let buf = &mut s[..len];
        buf.fill(0.0);
        f(buf)
    })
}

/// Copies an h x w plane into the centre of a zeroed (h+2p) x (w+2p) buffer.
fn pad_plane(src: &[f32], g: &Geometry, dst: &mut [f32]) {
    let (_, wp) = g.padded();
    for y in 0..g.h {
        let row = &src[y * g.w..(y + 1) * g.w];
        dst[(y + g.pad) * wp + g.pad..(y + g.pad) * wp + g.pad + g.w].copy_from_slice(row);
    }
}

/// y = act(depthwise(x, w) + bias). x: n*c*h*w, w: c*k*k, y: n*c*oh*ow.
pub fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, act: Act, y: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (hp, wp) = g.padded();
    let (k, s) = (g.k, g.stride);
    y.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, out)| {
        let ch = plane % g.c;
        let wk = &w[ch * k * k..(ch + 1) * k * k];
        let b = bias.map(|b| b[ch]).unwrap_or(0.0);
        let src = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
        with_scratch(hp * wp, |padded| {
            pad_plane(src, g, padded);
            for oy in 0..oh {
                let orow = &mut out[oy * ow..(oy + 1) * ow];
                orow.fill(b);
                for ky in 0..k {
                    let irow = &padded[(oy * s + ky) * wp..(oy * s + ky + 1) * wp];
                    for kx in 0..k {
                        let wv = wk[ky * k + kx];
                        if s == 1 {
                            for (o, i) in orow.iter_mut().zip(&irow[kx..kx + ow]) {
                                *o += wv * i;
                            }
                        } else {
                            for (ox, o) in orow.iter_mut().enumerate() {
                                *o += wv * irow[ox * s + kx];
                            }
                        }
                    }
                }
                if act != Act::None {
                    for o in orow.iter_mut() {
                        *o = act.apply(*o);
                    }
                }
            }
        });
    });
}

/// dx = depthwise_transpose(dy, w). dy: n*c*oh*ow, dx: n*c*h*w.
pub fn backward_input(g: &Geometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (hp, wp) = g.padded();
    let (k, s) = (g.k, g.stride);
    dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(plane, out)| {
        let ch = plane % g.c;
        let wk = &w[ch * k * k..(ch + 1) * k * k];
        let grad = &dy[plane * oh * ow..(plane + 1) * oh * ow];
        with_scratch(hp * wp, |padded| {
            for oy in 0..oh {
                let grow = &grad[oy * ow..(oy + 1) * ow];
                for ky in 0..k {
                    let prow = &mut padded[(oy * s + ky) * wp..(oy * s + ky + 1) * wp];
                    for kx in 0..k {
                        let wv = wk[ky * k + kx];
                        if s == 1 {
                            for (p, gv) in prow[kx..kx + ow].iter_mut().zip(grow) {
                                *p += wv * gv;
                            }
                        } else {
                            for (ox, gv) in grow.iter().enumerate() {
                                prow[ox * s + kx] += wv * gv;
                            }
                        }
                    }
                }
            }
            for y in 0..g.h {
                out[y * g.w..(y + 1) * g.w]
                    .copy_from_slice(&padded[(y + g.pad) * wp + g.pad..(y + g.pad) * wp + g.pad + g.w]);
            }
        });
    });
}

/// dw[c] = sum over the batch of correlate(x[., c], dy[., c]). Sums per plane in f32, across planes in f64.
pub fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (oh, ow) = (g.out_h(), g.out_w());
    let (hp, wp) = g.padded();
    let (k, s) = (g.k, g.stride);
    dw.par_chunks_mut(k * k).enumerate().for_each(|(ch, out)| {
        let mut acc = vec![0f64; k * k];
        with_scratch(hp * wp, |padded| {
            for img in 0..g.n {
                let plane = img * g.c + ch;
                pad_plane(&x[plane * g.h * g.w..(plane + 1) * g.h * g.w], g, padded);
                let grad = &dy[plane * oh * ow..(plane + 1) * oh * ow];
                for ky in 0..k {
                    for kx in 0..k {
                        let mut sum = 0f32;
                        for oy in 0..oh {
                            let grow = &grad[oy * ow..(oy + 1) * ow];
                            let prow = &padded[(oy * s + ky) * wp..(oy * s + ky + 1) * wp];
                            if s == 1 {
                                sum += dot(grow, &prow[kx..kx + ow]);
                            } else {
                                for (ox, gv) in grow.iter().enumerate() {
                                    sum += gv * prow[ox * s + kx];
                                }
                            }
                        }
                        acc[ky * k + kx] += sum as f64;
                    }
                }
            }
        });
        for (o, a) in out.iter_mut().zip(acc) {
            *o = a as f32;
        }
    });
}

/// A dot product in 8 independent lanes, so the compiler can vectorise it.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            lanes[l] += a[i * 8 + l] * b[i * 8 + l];
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition, no padding tricks: the oracle for the fast kernels.
    fn naive(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut y = vec![0f32; g.out_len()];
        for p in 0..g.n * g.c {
            let ch = p % g.c;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0f32;
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                s += w[ch * g.k * g.k + ky * g.k + kx]
                                    * x[p * g.h * g.w + iy as usize * g.w + ix as usize];
                            }
                        }
                    }
                    y[p * oh * ow + oy * ow + ox] = s;
                }
            }
        }
        y
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn forward_matches_the_definition_on_odd_shapes() {
        for &(n, c, h, w, k, s) in &[(1, 3, 7, 5, 3, 1), (2, 5, 9, 9, 5, 2), (3, 17, 8, 6, 3, 2), (1, 1, 1, 1, 3, 1)] {
            let g = Geometry { n, c, h, w, k, stride: s, pad: (k - 1) / 2 };
            let x = data(n * c * h * w, 1);
            let wt = data(c * k * k, 2);
            let mut y = vec![0f32; g.out_len()];
            forward(&g, &x, &wt, None, Act::None, &mut y);
            let r = naive(&g, &x, &wt);
            for (a, b) in y.iter().zip(&r) {
                assert!((a - b).abs() < 1e-5, "{g:?}: {a} vs {b}");
            }
        }
    }
}
