//! Depthwise convolution (one kxk filter per channel, no cross-channel sum): forward with an optional fused
//! bias and activation, and the two backward passes (input gradient, weight gradient).
//!
//! Each plane is first laid into zero-padded *source* buffers: the padded plane itself for stride 1, or its four
//! even/odd row/column phases for stride 2 (so that a stride-2 tap is a stride-1 shift of one phase). Every tap
//! (ky, kx) is then one long contiguous multiply-add over the whole plane, `out[i] += w * src[i + offset]`,
//! with rows `row` floats apart; the columns past the output width are scratch and are dropped. Short rows
//! (8x8 planes) therefore still run in long vector loops.

use super::depthwise_rows::{Lane16, RowPlan};
pub use super::plane::{Geometry, Prologue};
use super::{hsum, Act};
use rayon::prelude::*;
use std::cell::RefCell;

/// How a plane is laid into source buffers and where each tap reads.
struct Plan {
    g: Geometry,
    /// 1 (stride 1) or 4 phases (stride 2); other strides use `stride * stride` phases the same way.
    phases: usize,
    /// Floats per source buffer, and per row of it.
    src_len: usize,
    row: usize,
    /// For each tap ky * k + kx: (phase, offset into it).
    taps: Vec<(usize, usize)>,
    /// Length of the flat output span: (oh - 1) * row + ow.
    span: usize,
    /// For each tap, where its reads start in the concatenated source buffers: phase * src_len + offset.
    starts: Vec<usize>,
    /// The largest start, and each tap's start mirrored (margin - start): the input gradient is the correlation
    /// of the gradient span, placed after `margin` zeros, with the mirrored taps.
    margin: usize,
    mirrored: Vec<usize>,
}

impl Plan {
    fn new(g: &Geometry) -> Plan {
        let s = g.stride;
        let (hp, wp) = (g.h + 2 * g.pad, g.w + 2 * g.pad);
        let (rows, row) = (hp.div_ceil(s), wp.div_ceil(s));
        let taps: Vec<(usize, usize)> = (0..g.k * g.k)
            .map(|t| {
                let (ky, kx) = (t / g.k, t % g.k);
                ((ky % s) * s + kx % s, (ky / s) * row + kx / s)
            })
            .collect();
        let src_len = rows * row;
        let starts: Vec<usize> = taps.iter().map(|&(ph, off)| ph * src_len + off).collect();
        let margin = starts.iter().copied().max().unwrap_or(0);
        let mirrored = starts.iter().map(|st| margin - st).collect();
        let span = (g.out_h() - 1) * row + g.out_w();
        Plan { g: *g, phases: s * s, src_len, row, taps, span, starts, margin, mirrored }
    }

    /// Source phase and index of input pixel (y, x).
    #[inline(always)]
    fn locate(&self, y: usize, x: usize) -> (usize, usize) {
        let (s, p) = (self.g.stride, self.g.pad);
        let (r, c) = (y + p, x + p);
        ((r % s) * s + c % s, (r / s) * self.row + c / s)
    }

    /// Lays an h x w plane into zeroed source buffers.
    #[inline(always)]
    fn fill_sources(&self, plane: &[f32], src: &mut [f32]) {
        src.fill(0.0);
        self.copy_sources(plane, src);
    }

    /// Writes an h x w plane's pixels into source buffers, leaving the padding as it is: a buffer that only
    /// ever holds planes of this plan keeps the zeros it was made with (see [`PlaneScratch`]).
    #[inline(always)]
    fn copy_sources(&self, plane: &[f32], src: &mut [f32]) {
        let g = &self.g;
        if self.phases == 1 {
            for y in 0..g.h {
                let (_, at) = self.locate(y, 0);
                src[at..at + g.w].copy_from_slice(&plane[y * g.w..(y + 1) * g.w]);
            }
        } else {
            for y in 0..g.h {
                let row = &plane[y * g.w..(y + 1) * g.w];
                self.each_column_phase(y, |x0, at| {
                    for (d, v) in src[at..].iter_mut().zip(row[x0..].iter().step_by(g.stride)) {
                        *d = *v;
                    }
                });
            }
        }
    }

    /// For input row `y` and each column phase: the first column `x0` in that phase and where it lands in the
    /// concatenated sources; the row's later columns of the phase follow one float apart, `stride` columns apart
    /// in the input.
    #[inline(always)]
    fn each_column_phase(&self, y: usize, mut f: impl FnMut(usize, usize)) {
        let (s, p) = (self.g.stride, self.g.pad);
        let r = y + p;
        for px in 0..s {
            let x0 = (px + s - p % s) % s;
            if x0 >= self.g.w {
                continue;
            }
            let ph = (r % s) * s + px;
            f(x0, ph * self.src_len + (r / s) * self.row + (x0 + p) / s);
        }
    }

    /// Reads an h x w plane back out of source buffers (the input gradient).
    #[inline(always)]
    fn gather_sources(&self, src: &[f32], plane: &mut [f32]) {
        let g = &self.g;
        if self.phases == 1 {
            for y in 0..g.h {
                let (_, at) = self.locate(y, 0);
                plane[y * g.w..(y + 1) * g.w].copy_from_slice(&src[at..at + g.w]);
            }
        } else {
            for y in 0..g.h {
                let row = &mut plane[y * g.w..(y + 1) * g.w];
                self.each_column_phase(y, |x0, at| {
                    for (d, v) in row[x0..].iter_mut().step_by(g.stride).zip(&src[at..]) {
                        *d = *v;
                    }
                });
            }
        }
    }

    /// Length of the padded gradient buffer of [`Plan::transpose`].
    fn padded_span_len(&self) -> usize {
        self.margin + self.phases * self.src_len
    }

    /// Lays a gradient plane into `padded` (margin zeros, the span, zeros) and returns the span's range in it.
    #[inline(always)]
    fn fill_padded_span(&self, grad: &[f32], padded: &mut [f32]) -> std::ops::Range<usize> {
        padded.fill(0.0);
        self.copy_padded_span(grad, padded)
    }

    /// [`Plan::fill_padded_span`] into a buffer whose zeros are already in place (see [`Plan::copy_sources`]).
    #[inline(always)]
    fn copy_padded_span(&self, grad: &[f32], padded: &mut [f32]) -> std::ops::Range<usize> {
        let r = self.margin..self.margin + self.span;
        self.copy_span(grad, &mut padded[r.clone()]);
        r
    }

    /// dsrc[j] = sum over taps t of w[t] * span[j - start[t]] (zero outside the span): the scatter of each
    /// output gradient back onto the sources, written as a gather so that it runs in registers.
    #[inline(always)]
    fn transpose(&self, padded: &[f32], w: &[f32], dsrc: &mut [f32]) {
        correlate(dsrc, padded, &self.mirrored, w, 0.0);
    }

    /// Lays an oh x ow gradient plane into a zeroed span with the source row stride.
    #[inline(always)]
    fn fill_span(&self, grad: &[f32], span: &mut [f32]) {
        span.fill(0.0);
        self.copy_span(grad, span);
    }

    /// The rows of an oh x ow gradient plane into a span, leaving the columns between them as they are.
    #[inline(always)]
    fn copy_span(&self, grad: &[f32], span: &mut [f32]) {
        let ow = self.g.out_w();
        for oy in 0..self.g.out_h() {
            span[oy * self.row..oy * self.row + ow].copy_from_slice(&grad[oy * ow..(oy + 1) * ow]);
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    static ROWS: RefCell<(Vec<Lane16>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` with a thread-local shifted-row buffer for `rows` and k*k floats of scratch.
fn with_rows<R>(rows: &RowPlan, kk: usize, f: impl FnOnce(&mut [Lane16], &mut [f32]) -> R) -> R {
    ROWS.with(|s| {
        let mut s = s.borrow_mut();
        let (b, w) = &mut *s;
        if b.len() < rows.buffer_len() {
            b.resize(rows.buffer_len(), Lane16::default());
        }
        if w.len() < kk {
            w.resize(kk, 0.0);
        }
        f(&mut b[..rows.buffer_len()], &mut w[..kk])
    })
}

/// Runs `f` with two thread-local buffers of the given lengths (contents unspecified).
fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (x, y) = &mut *s;
        if x.len() < a {
            x.resize(a, 0.0);
        }
        if y.len() < b {
            y.resize(b, 0.0);
        }
        f(&mut x[..a], &mut y[..b])
    })
}

/// acc[i] = bias + sum over taps t of w[t] * src[starts[t] + i]. Each block of outputs is summed over all taps
/// in registers and stored once; tap by tap, the whole span would be loaded and stored k*k times.
#[inline(always)]
fn correlate(acc: &mut [f32], src: &[f32], starts: &[usize], w: &[f32], bias: f32) {
    if super::has_fma() {
        correlate_with::<true>(acc, src, starts, w, bias)
    } else {
        correlate_with::<false>(acc, src, starts, w, bias)
    }
}

/// [`correlate`] with fused multiply-adds or without (where the CPU has none, `mul_add` is a slow library call).
///
/// The span runs as blocks of 128 outputs, and what is left as one block that overlaps the one before (the
/// overlap is written twice with the same values): a scalar or narrow tail would cost as much as all the wide
/// blocks on an 8x8 plane. The block width is about latency: each vector of sums is a chain of k*k dependent
/// multiply-adds, and the CPU needs about eight chains in flight to keep its FMA units busy.
#[inline(always)]
fn correlate_with<const FMA: bool>(acc: &mut [f32], src: &[f32], starts: &[usize], w: &[f32], bias: f32) {
    let span = acc.len();
    let mut i = 0;
    while i + 128 <= span {
        correlate_block::<128, FMA>(acc, src, starts, w, bias, i);
        i += 128;
    }
    let left = span - i;
    if left == 0 {
        return;
    }
    if left > 64 && span >= 128 {
        correlate_block::<128, FMA>(acc, src, starts, w, bias, span - 128);
    } else if span >= 64 {
        if left > 64 {
            correlate_block::<64, FMA>(acc, src, starts, w, bias, i);
        }
        correlate_block::<64, FMA>(acc, src, starts, w, bias, span - 64);
    } else if span >= 16 {
        while i + 16 <= span {
            correlate_block::<16, FMA>(acc, src, starts, w, bias, i);
            i += 16;
        }
        if i < span {
            correlate_block::<16, FMA>(acc, src, starts, w, bias, span - 16);
        }
    } else {
        for (j, out) in acc.iter_mut().enumerate() {
            *out = starts.iter().zip(w).fold(bias, |v, (&st, &wt)| v + wt * src[st + j]);
        }
    }
}

/// The B outputs from `at` on. Blocks narrower than 128 sum the even and the odd taps in two sets of vectors,
/// added at the end, so that they too keep enough independent chains of multiply-adds in flight.
#[inline(always)]
fn correlate_block<const B: usize, const FMA: bool>(
    acc: &mut [f32],
    src: &[f32],
    starts: &[usize],
    w: &[f32],
    bias: f32,
    at: usize,
) {
    #[inline(always)]
    fn madd<const B: usize, const FMA: bool>(a: &mut [f32; B], wt: f32, s: &[f32]) {
        let s = &s[..B];
        for l in 0..B {
            a[l] = if FMA { wt.mul_add(s[l], a[l]) } else { a[l] + wt * s[l] };
        }
    }
    let mut a = [bias; B];
    if B >= 128 {
        for (&st, &wt) in starts.iter().zip(w) {
            madd::<B, FMA>(&mut a, wt, &src[st + at..]);
        }
    } else {
        let mut b = [0f32; B];
        let (pairs, odd) = (starts.len() / 2, starts.len() % 2 == 1);
        for p in 0..pairs {
            madd::<B, FMA>(&mut a, w[2 * p], &src[starts[2 * p] + at..]);
            madd::<B, FMA>(&mut b, w[2 * p + 1], &src[starts[2 * p + 1] + at..]);
        }
        if odd {
            madd::<B, FMA>(&mut a, w[2 * pairs], &src[starts[2 * pairs] + at..]);
        }
        for l in 0..B {
            a[l] += b[l];
        }
    }
    acc[at..at + B].copy_from_slice(&a);
}

/// y = act(depthwise(x, w) + bias). x: n*c*h*w, w: c*k*k, y: n*c*oh*ow.
pub fn forward(g: &Geometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, act: Act, y: &mut [f32]) {
    forward_with(g, x, None, w, bias, act, y)
}

/// [`forward`] of act_in(x + bias_in), per channel, without writing that input out: the inference plan passes
/// the expand layer's folded bias and activation here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward_with(
    g: &Geometry,
    x: &[f32],
    input: Option<(&[f32], Act)>,
    w: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    y: &mut [f32],
) {
    let (oh, ow, kk) = (g.out_h(), g.out_w(), g.k * g.k);
    let pre = |ch: usize| input.map(|(b, a)| Prologue { scale: 1.0, shift: b[ch], act: a });
    if let Some(rows) = RowPlan::new(g) {
        y.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, out)| {
            let ch = plane % g.c;
            let inp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            with_rows(&rows, kk, |buf, _| {
                rows.shift(inp, pre(ch), buf);
                rows.correlate(buf, &w[ch * kk..(ch + 1) * kk], bias.map(|b| b[ch]).unwrap_or(0.0), act, out);
            })
        });
        return;
    }
    let plan = Plan::new(g);
    y.par_chunks_mut(oh * ow).enumerate().for_each(|(plane, out)| {
        let ch = plane % g.c;
        let wk = &w[ch * kk..(ch + 1) * kk];
        let b = bias.map(|b| b[ch]).unwrap_or(0.0);
        let inp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
        with_scratch(plan.phases * plan.src_len, plan.span.max(g.h * g.w), |src, acc| {
            simd!({
                // The prologue's output goes into the span buffer, which `correlate` only writes later.
                plan.fill_sources(Prologue::input(pre(ch), inp, &mut acc[..g.h * g.w]), src);
                let acc = &mut acc[..plan.span];
                correlate(acc, src, &plan.starts, wk, b);
                for oy in 0..oh {
                    let o = &mut out[oy * ow..(oy + 1) * ow];
                    let a = &acc[oy * plan.row..oy * plan.row + ow];
                    match act {
                        Act::None => o.copy_from_slice(a),
                        Act::Relu => o.iter_mut().zip(a).for_each(|(o, v)| *o = v.max(0.0)),
                        Act::HardSwish => o.iter_mut().zip(a).for_each(|(o, v)| *o = Act::HardSwish.apply(*v)),
                    }
                }
            })
        });
    });
}

/// dx = depthwise_transpose(dy, w). dy: n*c*oh*ow, dx: n*c*h*w.
pub(crate) fn backward_input(g: &Geometry, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let (oh, ow, kk) = (g.out_h(), g.out_w(), g.k * g.k);
    if let Some(rows) = RowPlan::new(g) {
        dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(plane, out)| {
            let ch = plane % g.c;
            let grad = &dy[plane * oh * ow..(plane + 1) * oh * ow];
            with_rows(&rows, kk, |buf, rotated| rows.input_grad(grad, &w[ch * kk..(ch + 1) * kk], buf, rotated, out))
        });
        return;
    }
    let plan = Plan::new(g);
    dx.par_chunks_mut(g.h * g.w).enumerate().for_each(|(plane, out)| {
        let ch = plane % g.c;
        let wk = &w[ch * kk..(ch + 1) * kk];
        let grad = &dy[plane * oh * ow..(plane + 1) * oh * ow];
        with_scratch(plan.phases * plan.src_len, plan.padded_span_len(), |src, padded| {
            simd!({
                plan.fill_padded_span(grad, padded);
                plan.transpose(padded, wk, src);
                plan.gather_sources(src, out);
            })
        });
    });
}

/// dw[c] = sum over the batch of correlate(x[., c], dy[., c]); per-plane sums in f32, across planes in f64.
pub(crate) fn backward_weight(g: &Geometry, x: &[f32], dy: &[f32], dw: &mut [f32]) {
    let (oh, ow, kk) = (g.out_h(), g.out_w(), g.k * g.k);
    if let Some(rows) = RowPlan::new(g) {
        dw.par_chunks_mut(kk).enumerate().for_each(|(ch, out)| {
            let mut acc = vec![0f64; kk];
            with_rows(&rows, kk, |buf, _| {
                for img in 0..g.n {
                    let plane = img * g.c + ch;
                    rows.shift(&x[plane * g.h * g.w..(plane + 1) * g.h * g.w], None, buf);
                    rows.weight_grad(buf, &dy[plane * oh * ow..(plane + 1) * oh * ow], &mut acc);
                }
            });
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a as f32;
            }
        });
        return;
    }
    let plan = Plan::new(g);
    dw.par_chunks_mut(kk).enumerate().for_each(|(ch, out)| {
        let mut acc = vec![0f64; kk];
        with_scratch(plan.phases * plan.src_len, plan.span, |src, span| {
            for img in 0..g.n {
                let plane = img * g.c + ch;
                let inp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
                let grad = &dy[plane * oh * ow..(plane + 1) * oh * ow];
                simd!({
                    plan.fill_sources(inp, src);
                    plan.fill_span(grad, span);
                    for (t, &(ph, off)) in plan.taps.iter().enumerate() {
                        let s = &src[ph * plan.src_len + off..];
                        acc[t] += dot(span, &s[..plan.span]) as f64;
                    }
                })
            }
        });
        for (o, a) in out.iter_mut().zip(acc) {
            *o = a as f32;
        }
    });
}

/// One plane at a time, for callers that run a whole layer image by image (the training step's fused phases):
/// the caller prepares each input plane (e.g. BatchNorm + activation applied in cache) and owns the scratch.
pub struct PlaneConv {
    plan: Plan,
    /// The row kernel where the shape has one.
    rows: Option<RowPlan>,
}

/// Per-thread buffers of a [`PlaneConv`]. They only ever hold planes of that convolution, so their padding stays
/// zero from when they were made and each plane writes its pixels only, never zero-filling the whole buffer.
pub struct PlaneScratch {
    src: Vec<f32>,
    acc: Vec<f32>,
    padded: Vec<f32>,
    dsrc: Vec<f32>,
    shifted: Vec<Lane16>,
    rotated: Vec<f32>,
    /// The input plane through the prologue, for the general kernel.
    input: Vec<f32>,
}

impl PlaneConv {
    pub fn new(g: &Geometry) -> Self {
        PlaneConv { plan: Plan::new(g), rows: RowPlan::new(g) }
    }

    pub(crate) fn scratch(&self) -> PlaneScratch {
        let p = &self.plan;
        let src_len = p.phases * p.src_len;
        // Sixteen floats of zeros past the sources and the padded gradient let the weight gradient's sums run
        // whole blocks of 16 to the end of the span.
        PlaneScratch {
            src: vec![0.0; src_len + 16],
            acc: vec![0.0; p.span],
            padded: vec![0.0; p.padded_span_len() + 16],
            dsrc: vec![0.0; src_len],
            shifted: vec![Lane16::default(); self.rows.map_or(0, |r| r.buffer_len())],
            rotated: vec![0.0; p.g.k * p.g.k],
            input: vec![0.0; if self.rows.is_some() { 0 } else { p.g.h * p.g.w }],
        }
    }

    /// out (oh*ow) = the correlation of one h*w input plane, through `pre`, with its k*k filter `wk`.
    #[inline]
    pub fn forward(&self, inp: &[f32], pre: Option<Prologue>, wk: &[f32], out: &mut [f32], s: &mut PlaneScratch) {
        if let Some(rows) = &self.rows {
            rows.shift(inp, pre, &mut s.shifted);
            rows.correlate(&s.shifted, wk, 0.0, Act::None, out);
            return;
        }
        let p = &self.plan;
        let (oh, ow) = (p.g.out_h(), p.g.out_w());
        simd!({
            let inp = Prologue::input(pre, inp, &mut s.input);
            p.copy_sources(inp, &mut s.src);
            correlate(&mut s.acc, &s.src, &p.starts, wk, 0.0);
            for oy in 0..oh {
                out[oy * ow..(oy + 1) * ow].copy_from_slice(&s.acc[oy * p.row..oy * p.row + ow]);
            }
        })
    }

    /// From one plane's output gradient `grad` (oh*ow) and its input (through `pre`, as in the forward): adds
    /// the filter's gradient into `dw_acc` (k*k) and writes the input gradient `dx` (h*w).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn backward(
        &self,
        inp: &[f32],
        pre: Option<Prologue>,
        grad: &[f32],
        wk: &[f32],
        dw_acc: &mut [f64],
        dx: &mut [f32],
        s: &mut PlaneScratch,
    ) {
        let p = &self.plan;
        if let Some(rows) = &self.rows {
            rows.shift(inp, pre, &mut s.shifted);
            rows.weight_grad(&s.shifted, grad, dw_acc);
            rows.input_grad(grad, wk, &mut s.shifted, &mut s.rotated, dx);
            return;
        }
        simd!({
            let inp = Prologue::input(pre, inp, &mut s.input);
            p.copy_sources(inp, &mut s.src);
            let span = p.copy_padded_span(grad, &mut s.padded);
            // Rounded up to whole blocks: the floats past the span are zeros (see `scratch`).
            let g = &s.padded[span.start..span.start + span.len().div_ceil(16) * 16];
            match p.starts.len() {
                9 => tap_dots::<3>(g, &s.src, &p.starts, dw_acc),
                25 => tap_dots::<5>(g, &s.src, &p.starts, dw_acc),
                _ => {
                    for (a, &st) in dw_acc.iter_mut().zip(&p.starts) {
                        *a += dot(g, &s.src[st..st + g.len()]) as f64;
                    }
                }
            }
            p.transpose(&s.padded, wk, &mut s.dsrc);
            p.gather_sources(&s.dsrc, dx);
        })
    }
}

/// out[t] += sum over i of grad[i] * src[starts[t] + i], for each tap t, in passes of G taps (one row of the
/// filter): each block of the gradient is loaded once per pass and the G partial sums stay in registers (a dot
/// product per tap would load it once per tap).
#[inline(always)]
fn tap_dots<const G: usize>(grad: &[f32], src: &[f32], starts: &[usize], out: &mut [f64]) {
    let n = grad.len();
    for (sts, outs) in starts.chunks_exact(G).zip(out.chunks_exact_mut(G)) {
        let srcs: [&[f32]; G] = std::array::from_fn(|j| &src[sts[j]..sts[j] + n]);
        let mut acc = [[0f32; 16]; G];
        let mut i = 0;
        while i + 16 <= n {
            let g = &grad[i..i + 16];
            for j in 0..G {
                let s = &srcs[j][i..i + 16];
                for l in 0..16 {
                    acc[j][l] += g[l] * s[l];
                }
            }
            i += 16;
        }
        for j in 0..G {
            let tail: f32 = (i..n).map(|x| grad[x] * srcs[j][x]).sum();
            outs[j] += (hsum(acc[j]) + tail) as f64;
        }
    }
}

/// A dot product in 64 independent lanes (four vectors of sums, so that the adds do not wait on each other),
/// which the compiler can vectorise.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0f32; 64];
    let mut i = 0;
    while i + 64 <= n {
        let (ca, cb) = (&a[i..i + 64], &b[i..i + 64]);
        for l in 0..64 {
            lanes[l] += ca[l] * cb[l];
        }
        i += 64;
    }
    while i + 16 <= n {
        let (ca, cb) = (&a[i..i + 16], &b[i..i + 16]);
        for l in 0..16 {
            lanes[l] += ca[l] * cb[l];
        }
        i += 16;
    }
    let mut s = hsum(lanes);
    for j in i..n {
        s += a[j] * b[j];
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Direct definitions, no layout tricks: the oracles for the fast kernels.
    fn tap(g: &Geometry, oy: usize, ox: usize, ky: usize, kx: usize) -> Option<usize> {
        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
        let ix = (ox * g.stride + kx) as isize - g.pad as isize;
        (iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w).then(|| iy as usize * g.w + ix as usize)
    }

    fn naive_forward(g: &Geometry, x: &[f32], w: &[f32]) -> Vec<f32> {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut y = vec![0f32; g.out_len()];
        for p in 0..g.n * g.c {
            let ch = p % g.c;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = 0f32;
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            if let Some(i) = tap(g, oy, ox, ky, kx) {
                                s += w[ch * g.k * g.k + ky * g.k + kx] * x[p * g.h * g.w + i];
                            }
                        }
                    }
                    y[p * oh * ow + oy * ow + ox] = s;
                }
            }
        }
        y
    }

    fn naive_backward(g: &Geometry, x: &[f32], w: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut dx = vec![0f32; x.len()];
        // f64 sums: a 224-pixel plane's weight gradient adds up 50,000 products per batch of four.
        let mut dw = vec![0f64; w.len()];
        for p in 0..g.n * g.c {
            let ch = p % g.c;
            for oy in 0..oh {
                for ox in 0..ow {
                    let gv = dy[p * oh * ow + oy * ow + ox];
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            if let Some(i) = tap(g, oy, ox, ky, kx) {
                                let wi = ch * g.k * g.k + ky * g.k + kx;
                                dx[p * g.h * g.w + i] += w[wi] * gv;
                                dw[wi] += (x[p * g.h * g.w + i] * gv) as f64;
                            }
                        }
                    }
                }
            }
        }
        (dx, dw.into_iter().map(|v| v as f32).collect())
    }

    /// n values in [-1, 1), a fixed pseudo-random pattern per seed (the kernels' tests' inputs).
    pub(crate) fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    fn close(a: &[f32], b: &[f32], what: &str, g: &Geometry) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what} {g:?} at {i}: {x} vs {y}");
        }
    }

    /// Odd shapes: stride 2, 5x5, channels not a multiple of the vector width, batch 1, odd sides, 1x1 input;
    /// then every plane shape of the CIFAR layout.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 17] = [
        (1, 3, 7, 5, 3, 1),
        (2, 5, 9, 9, 5, 2),
        (3, 17, 8, 6, 3, 2),
        (1, 1, 1, 1, 3, 1),
        (2, 3, 2, 2, 5, 2),
        (1, 2, 32, 32, 5, 1),
        (2, 9, 11, 16, 3, 2),
        (2, 3, 8, 8, 3, 1),
        (2, 3, 8, 8, 5, 1),
        (2, 3, 16, 16, 3, 1),
        (1, 3, 16, 16, 5, 1),
        (2, 3, 32, 32, 3, 1),
        (1, 3, 32, 32, 5, 1),
        (2, 3, 16, 16, 3, 2),
        (2, 3, 16, 16, 5, 2),
        (1, 3, 32, 32, 3, 2),
        (2, 3, 32, 32, 5, 2),
    ];

    /// The row kernel takes every 3x3 and 5x5 plane from 7 to 256 pixels wide at stride 1, and those of even
    /// sides at stride 2, where the CPU has AVX2 or AVX-512 (so the tests here check it); the other shapes take
    /// the general kernel (which `MBV3_SIMD=none` runs for all of them).
    #[test]
    fn row_kernel_takes_every_plane_of_7_to_256_pixels_but_odd_sides_at_stride_2() {
        use super::super::depthwise_rows::{MAX_WIDTH, MIN_WIDTH};
        let row_kernel = |n, c, h, w, k, s| {
            let g = Geometry { n, c, h, w, k, stride: s, pad: (k - 1) / 2 };
            RowPlan::new(&g).is_some()
        };
        for &(n, c, h, w, k, s) in &SHAPES {
            let takes = (s == 1 || (h % 2 == 0 && w % 2 == 0)) && w / s >= MIN_WIDTH;
            assert_eq!(row_kernel(n, c, h, w, k, s), takes && crate::kernels::has_fma(), "{:?}", (h, w, k, s));
        }
        for side in [7, 14, 28, 56, 112, 224] {
            assert_eq!(row_kernel(1, 1, side, side, 3, 1), crate::kernels::has_fma(), "{side}");
        }
        assert!(!row_kernel(1, 1, 4, MAX_WIDTH + 2, 3, 2) && !row_kernel(1, 1, 4, MAX_WIDTH + 1, 5, 1));
        assert!(!row_kernel(1, 1, 8, 8, 7, 1), "7x7 filters");
        assert!(!row_kernel(1, 1, 4, 4, 3, 1) && !row_kernel(1, 1, 12, 12, 5, 2), "rows under 7 pixels");
    }

    #[test]
    fn forward_matches_the_definition_on_odd_shapes() {
        for &(n, c, h, w, k, s) in &SHAPES {
            let g = Geometry { n, c, h, w, k, stride: s, pad: (k - 1) / 2 };
            let (x, wt) = (data(n * c * h * w, 1), data(c * k * k, 2));
            let mut y = vec![0f32; g.out_len()];
            forward(&g, &x, &wt, None, Act::None, &mut y);
            close(&y, &naive_forward(&g, &x, &wt), "forward", &g);
        }
    }

    #[test]
    fn backward_passes_match_the_definition_on_odd_shapes() {
        for &(n, c, h, w, k, s) in &SHAPES {
            let g = Geometry { n, c, h, w, k, stride: s, pad: (k - 1) / 2 };
            let (x, wt, dy) = (data(n * c * h * w, 1), data(c * k * k, 2), data(g.out_len(), 3));
            let (rdx, rdw) = naive_backward(&g, &x, &wt, &dy);
            let mut dx = vec![0f32; x.len()];
            backward_input(&g, &dy, &wt, &mut dx);
            close(&dx, &rdx, "input grad", &g);
            let mut dw = vec![0f32; wt.len()];
            backward_weight(&g, &x, &dy, &mut dw);
            close(&dw, &rdw, "weight grad", &g);
        }
    }

    /// The planes of photo-sized inputs (a folder of images trains at 32 to 224 pixels): every side from 4 to
    /// 56, 112 and 224, both kernels, both strides, through whichever kernel (row or general) takes the plane.
    #[test]
    fn forward_and_backward_match_the_definition_at_photo_sizes() {
        let mut sides: Vec<usize> = (4..=56).collect();
        sides.extend([112, 224]);
        for side in sides {
            for (k, s, n, c) in [(3, 1, 1, 2), (3, 2, 1, 2), (5, 1, 1, 2), (5, 2, 1, 2), (5, 2, 4, 72), (3, 2, 3, 17)] {
                let g = Geometry { n, c, h: side, w: side, k, stride: s, pad: (k - 1) / 2 };
                let (x, wt, dy) = (data(n * c * side * side, 1), data(c * k * k, 2), data(g.out_len(), 3));
                let mut y = vec![0f32; g.out_len()];
                forward(&g, &x, &wt, None, Act::None, &mut y);
                close(&y, &naive_forward(&g, &x, &wt), "forward", &g);
                let (rdx, rdw) = naive_backward(&g, &x, &wt, &dy);
                let mut dx = vec![0f32; x.len()];
                backward_input(&g, &dy, &wt, &mut dx);
                close(&dx, &rdx, "input grad", &g);
                let mut dw = vec![0f32; wt.len()];
                backward_weight(&g, &x, &dy, &mut dw);
                close(&dw, &rdw, "weight grad", &g);
                // The plane form (the training step's).
                let (py, pdx, pdw) = plane_form(&g, &x, &wt, &dy);
                close(&py, &y, "plane forward", &g);
                close(&pdx, &rdx, "plane input grad", &g);
                close(&pdw.iter().map(|v| *v as f32).collect::<Vec<_>>(), &rdw, "plane weight grad", &g);
            }
        }
    }

    /// Output, input gradient and weight gradient (f64) of the plane-at-a-time form, plane by plane.
    fn plane_form(g: &Geometry, x: &[f32], wt: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f64>) {
        let conv = PlaneConv::new(g);
        let mut sc = conv.scratch();
        let (c, hw, ohw, kk) = (g.c, g.h * g.w, g.out_h() * g.out_w(), g.k * g.k);
        let (mut y, mut dx, mut dw) = (vec![0f32; g.out_len()], vec![0f32; x.len()], vec![0f64; wt.len()]);
        for plane in 0..g.n * c {
            let (ch, ri, ro) = (plane % c, plane * hw..(plane + 1) * hw, plane * ohw..(plane + 1) * ohw);
            let wk = &wt[ch * kk..(ch + 1) * kk];
            conv.forward(&x[ri.clone()], None, wk, &mut y[ro.clone()], &mut sc);
            conv.backward(&x[ri.clone()], None, &dy[ro], wk, &mut dw[ch * kk..(ch + 1) * kk], &mut dx[ri], &mut sc);
        }
        (y, dx, dw)
    }

    /// The plane-at-a-time form (used by the training step's fused phases) gives the same three results.
    #[test]
    fn plane_conv_matches_the_definition_on_odd_shapes() {
        for &(n, c, h, w, k, s) in &SHAPES {
            let g = Geometry { n, c, h, w, k, stride: s, pad: (k - 1) / 2 };
            let (x, wt, dy) = (data(n * c * h * w, 1), data(c * k * k, 2), data(g.out_len(), 3));
            let (rdx, rdw) = naive_backward(&g, &x, &wt, &dy);
            let (y, dx, dw) = plane_form(&g, &x, &wt, &dy);
            close(&y, &naive_forward(&g, &x, &wt), "plane forward", &g);
            close(&dx, &rdx, "plane input grad", &g);
            close(&dw.iter().map(|v| *v as f32).collect::<Vec<_>>(), &rdw, "plane weight grad", &g);
        }
    }

    /// A prologue gives exactly what normalising the input first and convolving it gives (same operations in
    /// the same order), in the plane form (training) and the batch form (inference), for every shape.
    #[test]
    fn prologue_equals_normalising_first() {
        for &(n, c, h, w, k, s) in &SHAPES {
            let g = Geometry { n, c, h, w, k, stride: s, pad: (k - 1) / 2 };
            let (x, wt, dy) = (data(n * c * h * w, 1), data(c * k * k, 2), data(g.out_len(), 3));
            let (scale, shift) = (data(c, 4), data(c, 5));
            let (hw, ohw, kk) = (h * w, g.out_h() * g.out_w(), k * k);
            for act in [Act::HardSwish, Act::Relu] {
                let pre = |ch: usize| Prologue { scale: scale[ch] * 3.0, shift: shift[ch], act };
                let mut normalised = vec![0f32; x.len()];
                for plane in 0..n * c {
                    pre(plane % c)
                        .apply(&x[plane * hw..(plane + 1) * hw], &mut normalised[plane * hw..(plane + 1) * hw]);
                }
                let conv = PlaneConv::new(&g);
                let mut sc = conv.scratch();
                for plane in 0..n * c {
                    let (ch, ri, ro) = (plane % c, plane * hw..(plane + 1) * hw, plane * ohw..(plane + 1) * ohw);
                    let wk = &wt[ch * kk..(ch + 1) * kk];
                    let (mut y1, mut y2) = (vec![0f32; ohw], vec![0f32; ohw]);
                    conv.forward(&x[ri.clone()], Some(pre(ch)), wk, &mut y1, &mut sc);
                    conv.forward(&normalised[ri.clone()], None, wk, &mut y2, &mut sc);
                    assert_eq!(y1, y2, "plane forward {g:?} {act:?}");
                    let (mut dx1, mut dx2, mut dw1, mut dw2) =
                        (vec![0f32; hw], vec![0f32; hw], vec![0f64; kk], vec![0f64; kk]);
                    conv.backward(&x[ri.clone()], Some(pre(ch)), &dy[ro.clone()], wk, &mut dw1, &mut dx1, &mut sc);
                    conv.backward(&normalised[ri], None, &dy[ro], wk, &mut dw2, &mut dx2, &mut sc);
                    assert_eq!((dx1, dw1), (dx2, dw2), "plane backward {g:?} {act:?}");
                }
                // The batch form takes a bias (scale 1).
                let bias_in: Vec<f32> = shift.clone();
                let mut biased = vec![0f32; x.len()];
                for plane in 0..n * c {
                    let p = Prologue { scale: 1.0, shift: bias_in[plane % c], act };
                    p.apply(&x[plane * hw..(plane + 1) * hw], &mut biased[plane * hw..(plane + 1) * hw]);
                }
                let (mut y1, mut y2) = (vec![0f32; g.out_len()], vec![0f32; g.out_len()]);
                forward_with(&g, &x, Some((&bias_in, act)), &wt, Some(&scale), Act::HardSwish, &mut y1);
                forward(&g, &biased, &wt, Some(&scale), Act::HardSwish, &mut y2);
                assert_eq!(y1, y2, "batch forward {g:?} {act:?}");
            }
        }
    }

    #[test]
    fn fused_bias_and_activation() {
        // A 5x5 plane (general kernel) and 16x16 and 8x8 ones (the row kernel, with AVX2 or AVX-512).
        for (side, act) in [(5, Act::HardSwish), (16, Act::HardSwish), (16, Act::Relu), (8, Act::HardSwish)] {
            let g = Geometry { n: 1, c: 2, h: side, w: side, k: 3, stride: 1, pad: 1 };
            let (x, wt) = (data(2 * side * side, 4), data(18, 5));
            let bias = [0.5f32, -0.25];
            let mut y = vec![0f32; g.out_len()];
            forward(&g, &x, &wt, Some(&bias), act, &mut y);
            let r = naive_forward(&g, &x, &wt);
            for (i, (a, b)) in y.iter().zip(&r).enumerate() {
                let e = act.apply(b + bias[i / (side * side)]);
                assert!((a - e).abs() < 1e-5, "{side} {act:?} at {i}: {a} vs {e}");
            }
        }
    }
}
