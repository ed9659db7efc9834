//! One bottleneck (1x1 expand, depthwise, squeeze-excite, 1x1 project, each with BatchNorm) in a training step,
//! run image by image between the BatchNorm reductions.
//!
//! A BatchNorm in training mode needs the whole batch's statistics before it can normalise anything, so a layer
//! cannot simply stream into the next. What can be fused is everything between two reductions: each phase below
//! runs one image at a time on each thread, with that image's planes in cache:
//!
//! - forward A: expand product, and the per-plane moments of its output z1;
//! - forward B: BN1 + activation of a z1 plane, depthwise, and the moments of its output z2;
//! - forward C: BN2 + activation of an image's z2, squeeze-excite, project product, the moments of its output z3.
//!
//! So the wide (expanded) activations are stored once, as z1 and z2 before BatchNorm, and read once more in the
//! forward; their normalised forms are never stored but recomputed in cache where the backward needs them. The
//! backward mirrors it: phase C' makes the gradient of BN2's output and its batch sums in one go, B' the gradient
//! of BN1's output and its sums, A' the expand's gradients. The narrow block input and output stay whole.

use super::Params;
use crate::kernels::batchnorm::{self as bn, BackwardCoeffs, Dims, MomentSums, TrainNorm};
use crate::kernels::dense::{matmul, pointwise_backward_fused};
use crate::kernels::depthwise::{dot, Geometry, PlaneConv, Prologue};
use crate::kernels::profile::timed;
use crate::kernels::{add_assign, image_ranges, lane_sum, output_buffer, recycle, simd, Act, SharedMut};
use crate::model::arch::{BottleneckSpec, BN_EPS};
use crate::model::names::{BnNames, BottleneckNames};
use candle_core::Result;
use rayon::prelude::*;

/// Squeeze-and-excite weights: w1 (mid x c) and w2 (c x mid), with biases.
struct SeWeights {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    mid: usize,
}

/// What the squeeze-and-excite forward keeps per image (all tiny): pooled input, hidden layer, gate before and
/// after the hard-sigmoid.
struct SeTape {
    pooled: Vec<f32>,
    hidden: Vec<f32>,
    pre_gate: Vec<f32>,
    gate: Vec<f32>,
}

/// What the backward of one bottleneck needs.
pub(super) struct BottleneckCache {
    names: BottleneckNames,
    /// The block input's index in the activation tape.
    input: usize,
    g: Geometry,
    in_c: usize,
    out_c: usize,
    w1: Vec<f32>,
    wd: Vec<f32>,
    w3: Vec<f32>,
    z1: Vec<f32>,
    z2: Vec<f32>,
    z3: Vec<f32>,
    bn1: TrainNorm,
    bn2: TrainNorm,
    bn3: TrainNorm,
    se: Option<(SeWeights, SeTape)>,
    residual: bool,
}

impl BottleneckCache {
    /// Hands the block's stored activations back for the next step.
    pub(super) fn recycle(self) {
        [self.z1, self.z2, self.z3].into_iter().for_each(recycle);
    }
}

/// The layer's BatchNorm from its batch moments; updates the running statistics.
fn batch_norm(p: &Params, names: &BnNames, moments: &MomentSums, act: Act, count: usize) -> Result<TrainNorm> {
    let (mean, var) = moments.mean_var();
    p.store.update_running(names, &mean, &var, count)?;
    let gamma = p.get(&names.weight)?;
    let beta = p.get(&names.bias)?;
    Ok(TrainNorm::new(mean, &var, gamma, beta, act, BN_EPS as f32))
}

/// Forward of bottleneck `i`; its input is the last entry of the tape, its output is pushed onto it.
pub(super) fn forward(
    p: &Params,
    tape: &mut Vec<Vec<f32>>,
    names: BottleneckNames,
    b: &BottleneckSpec,
    n: usize,
    side: usize,
) -> Result<(BottleneckCache, usize)> {
    let act = Act::from(b.act);
    let input = tape.len() - 1;
    let (cin, ce, cout, hw) = (b.in_c, b.expanded, b.out_c, side * side);
    let g = Geometry { n, c: ce, h: side, w: side, k: b.kernel, stride: b.stride, pad: b.padding() };
    let ohw = g.out_h() * g.out_w();
    let w1 = p.get(&names.expand.weight)?;
    let wd = p.get(&names.depthwise.weight)?;
    let w3 = p.get(&names.project.weight)?;
    let se_w = if b.squeeze_excite {
        let se = &names.squeeze_excite;
        Some(SeWeights {
            w1: p.get(&se.reduce.weight)?,
            b1: p.get(&se.reduce.bias)?,
            w2: p.get(&se.expand.weight)?,
            b2: p.get(&se.expand.bias)?,
            mid: b.se_hidden,
        })
    } else {
        None
    };
    let x = &tape[input];

    let mut z1 = output_buffer(n * ce * hw);
    let m1 = timed("block.expand_fw", || expand_forward(x, &w1, cin, ce, hw, &mut z1));
    let bn1 = batch_norm(p, &names.expand.bn, &m1, act, n * hw)?;

    let mut z2 = output_buffer(n * ce * ohw);
    let m2 = timed("block.depthwise_fw", || depthwise_forward(&g, &z1, &bn1, &wd, &mut z2));
    let bn2 = batch_norm(p, &names.depthwise.bn, &m2, act, n * ohw)?;

    let mut z3 = output_buffer(n * cout * ohw);
    let (m3, se_tape) =
        timed("block.project_fw", || project_forward(&z2, &bn2, se_w.as_ref(), &w3, ce, cout, ohw, &mut z3));
    let bn3 = batch_norm(p, &names.project.bn, &m3, Act::None, n * ohw)?;

    let mut out = output_buffer(z3.len());
    let residual = b.residual();
    timed("block.output", || {
        bn::affine_act(&Dims { n, c: cout, hw: ohw }, &z3, &bn3.scale, &bn3.shift, Act::None, &mut out);
        if residual {
            add_assign(&mut out, x);
        }
    });
    tape.push(out);
    let se = se_w.zip(se_tape);
    let cache = BottleneckCache {
        names,
        input,
        g,
        in_c: cin,
        out_c: cout,
        w1,
        wd,
        w3,
        z1,
        z2,
        z3,
        bn1,
        bn2,
        bn3,
        se,
        residual,
    };
    Ok((cache, g.out_h()))
}

/// Backward of one bottleneck: the gradient of its input from that of its output; writes its parameters'
/// gradients.
pub(super) fn backward(p: &mut Params, tape: &[Vec<f32>], c: &BottleneckCache, d_out: Vec<f32>) -> Result<Vec<f32>> {
    let g = &c.g;
    let (n, ce, hw, ohw) = (g.n, g.c, g.h * g.w, g.out_h() * g.out_w());

    // BN3 has no activation and a narrow output: its sums in one plain pass.
    let (mut dg, mut db) = (vec![0f32; c.out_c], vec![0f32; c.out_c]);
    let b3 = &c.bn3;
    let coeffs3 = timed("block.bn3_sums", || {
        let d = Dims { n, c: c.out_c, hw: ohw };
        bn::backward_sums(&d, &c.z3, &d_out, &b3.gamma, &b3.beta, &b3.mean, &b3.inv_std, Act::None, &mut dg, &mut db)
    });
    p.grad(&c.names.project.bn.weight, dg);
    p.grad(&c.names.project.bn.bias, db);

    let mut dy2 = output_buffer(n * ce * ohw);
    let part = timed("block.project_bw", || project_backward(c, &coeffs3, &d_out, &mut dy2));
    p.grad(&c.names.project.weight, part.dw3);
    if let Some(sg) = part.se {
        let se = &c.names.squeeze_excite;
        p.grad(&se.reduce.weight, sg.dw1);
        p.grad(&se.reduce.bias, sg.db1);
        p.grad(&se.expand.weight, sg.dw2);
        p.grad(&se.expand.bias, sg.db2);
    }
    let (mut dg, mut db) = (vec![0f32; ce], vec![0f32; ce]);
    let coeffs2 = c.bn2.coeffs(&part.sums, n * ohw, &mut dg, &mut db);
    p.grad(&c.names.depthwise.bn.weight, dg);
    p.grad(&c.names.depthwise.bn.bias, db);

    let mut dy1 = output_buffer(n * ce * hw);
    let (dwd, sums1) = timed("block.depthwise_bw", || depthwise_backward(c, &coeffs2, &dy2, &mut dy1));
    recycle(dy2);
    p.grad(&c.names.depthwise.weight, dwd);
    let (mut dg, mut db) = (vec![0f32; ce], vec![0f32; ce]);
    let coeffs1 = c.bn1.coeffs(&sums1, n * hw, &mut dg, &mut db);
    p.grad(&c.names.expand.bn.weight, dg);
    p.grad(&c.names.expand.bn.bias, db);

    let x = &tape[c.input];
    let mut dx = output_buffer(x.len());
    let mut dw1 = vec![0f32; ce * c.in_c];
    let grad_of = |img: usize, out: &mut [f32]| {
        for ch in 0..ce {
            let r = (img * ce + ch) * hw..(img * ce + ch + 1) * hw;
            coeffs1.plane_grad(ch, &c.z1[r.clone()], &dy1[r], &mut out[ch * hw..(ch + 1) * hw]);
        }
    };
    timed("block.expand_bw", || pointwise_backward_fused(x, &c.w1, c.in_c, ce, hw, grad_of, Some(&mut dx), &mut dw1));
    p.grad(&c.names.expand.weight, dw1);
    if c.residual {
        add_assign(&mut dx, &d_out);
    }
    recycle(dy1);
    recycle(d_out);
    Ok(dx)
}

/// Sums per-thread parts of the batch: `f(range)` runs on one contiguous range of images per thread.
fn per_thread<T: Send>(n: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync + Send) -> Vec<T> {
    image_ranges(n).into_par_iter().map(f).collect()
}

/// Phase A: z1[img] = w1 x[img], with the moments of each plane of z1.
fn expand_forward(x: &[f32], w: &[f32], c: usize, o: usize, hw: usize, z: &mut [f32]) -> MomentSums {
    let n = x.len() / (c * hw);
    assert!(z.len() >= n * o * hw);
    let out = SharedMut::new(z);
    MomentSums::merge(per_thread(n, |range| {
        let mut m = MomentSums::new(o);
        for img in range {
            // SAFETY: image `img`'s slice of z is written by this thread only (length asserted above).
            let zi = unsafe { out.slice(img * o * hw, o * hw) };
            matmul(o, hw, c, zi, w, (c, 1), &x[img * c * hw..(img + 1) * c * hw], (hw, 1), false, false);
            for ch in 0..o {
                m.add_plane(ch, &zi[ch * hw..(ch + 1) * hw]);
            }
        }
        m
    }))
}

/// Phase B: each plane of z1 through BN1 + activation (in cache), the depthwise filter, and the moments of z2.
fn depthwise_forward(g: &Geometry, z1: &[f32], bn1: &TrainNorm, wd: &[f32], z2: &mut [f32]) -> MomentSums {
    let conv = PlaneConv::new(g);
    let (hw, ohw, kk) = (g.h * g.w, g.out_h() * g.out_w(), g.k * g.k);
    assert!(z2.len() >= g.n * g.c * ohw && z1.len() >= g.n * g.c * hw);
    let out = SharedMut::new(z2);
    MomentSums::merge(per_thread(g.n, |range| {
        let mut m = MomentSums::new(g.c);
        let mut s = conv.scratch();
        for img in range {
            for ch in 0..g.c {
                let plane = img * g.c + ch;
                // SAFETY: plane `plane` of z2 is written by this thread only (length asserted above).
                let zo = unsafe { out.slice(plane * ohw, ohw) };
                let zi = &z1[plane * hw..(plane + 1) * hw];
                conv.forward(zi, Some(prologue(bn1, ch)), &wd[ch * kk..(ch + 1) * kk], zo, &mut s);
                m.add_plane(ch, zo);
            }
        }
        m
    }))
}

/// BN1 + activation of channel `ch`, applied by the depthwise kernel as it reads each plane of z1.
fn prologue(bn: &TrainNorm, ch: usize) -> Prologue {
    Prologue { scale: bn.scale[ch], shift: bn.shift[ch], act: bn.act }
}

/// Phase C: each image's z2 through BN2 + activation (in cache), squeeze-excite, the project product, and the
/// moments of z3.
#[allow(clippy::too_many_arguments)]
fn project_forward(
    z2: &[f32],
    bn2: &TrainNorm,
    se: Option<&SeWeights>,
    w3: &[f32],
    c: usize,
    o: usize,
    hw: usize,
    z3: &mut [f32],
) -> (MomentSums, Option<SeTape>) {
    let n = z2.len() / (c * hw);
    assert!(z3.len() >= n * o * hw);
    let mid = se.map_or(0, |s| s.mid);
    let mut tape = SeTape {
        pooled: vec![0f32; n * c],
        hidden: vec![0f32; n * mid],
        pre_gate: vec![0f32; n * c],
        gate: vec![0f32; n * c],
    };
    let out = SharedMut::new(z3);
    let t = (
        SharedMut::new(&mut tape.pooled),
        SharedMut::new(&mut tape.hidden),
        SharedMut::new(&mut tape.pre_gate),
        SharedMut::new(&mut tape.gate),
    );
    let moments = MomentSums::merge(per_thread(n, |range| {
        let mut m = MomentSums::new(o);
        let mut y = vec![0f32; c * hw];
        for img in range {
            for ch in 0..c {
                bn2.apply_plane(ch, &z2[(img * c + ch) * hw..(img * c + ch + 1) * hw], &mut y[ch * hw..(ch + 1) * hw]);
            }
            if let Some(se) = se {
                // SAFETY: image `img`'s rows of the SE tape are written by this thread only.
                let (pooled, hidden, pre_gate, gate) = unsafe {
                    (t.0.slice(img * c, c), t.1.slice(img * mid, mid), t.2.slice(img * c, c), t.3.slice(img * c, c))
                };
                se_gate(se, &y, c, hw, pooled, hidden, pre_gate, gate);
                for ch in 0..c {
                    let gv = gate[ch];
                    simd!(y[ch * hw..(ch + 1) * hw].iter_mut().for_each(|v| *v *= gv));
                }
            }
            // SAFETY: image `img`'s slice of z3 is written by this thread only (length asserted above).
            let zi = unsafe { out.slice(img * o * hw, o * hw) };
            matmul(o, hw, c, zi, w3, (c, 1), &y, (hw, 1), false, false);
            for ch in 0..o {
                m.add_plane(ch, &zi[ch * hw..(ch + 1) * hw]);
            }
        }
        m
    }));
    (moments, se.map(|_| tape))
}

#[inline(always)]
fn hsigmoid(u: f32) -> f32 {
    (u + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0)
}

/// The squeeze-excite gate of one image `y` (c planes of hw): pool, 1x1 + ReLU, 1x1 + hard-sigmoid.
#[allow(clippy::too_many_arguments)]
fn se_gate(
    se: &SeWeights,
    y: &[f32],
    c: usize,
    hw: usize,
    pooled: &mut [f32],
    hidden: &mut [f32],
    pre_gate: &mut [f32],
    gate: &mut [f32],
) {
    for ch in 0..c {
        pooled[ch] = simd!(lane_sum(&y[ch * hw..(ch + 1) * hw])) / hw as f32;
    }
    for (j, h) in hidden.iter_mut().enumerate() {
        *h = (se.b1[j] + simd!(dot(&se.w1[j * c..(j + 1) * c], pooled))).max(0.0);
    }
    for ch in 0..c {
        pre_gate[ch] = se.b2[ch] + simd!(dot(&se.w2[ch * se.mid..(ch + 1) * se.mid], hidden));
        gate[ch] = hsigmoid(pre_gate[ch]);
    }
}

/// Gradients of the squeeze-excite weights.
struct SeGrads {
    dw1: Vec<f32>,
    db1: Vec<f32>,
    dw2: Vec<f32>,
    db2: Vec<f32>,
}

impl SeGrads {
    fn zeros(c: usize, mid: usize) -> Self {
        SeGrads { dw1: vec![0.0; mid * c], db1: vec![0.0; mid], dw2: vec![0.0; c * mid], db2: vec![0.0; c] }
    }
    fn add(&mut self, o: &SeGrads) {
        add_into(&mut self.dw1, &o.dw1);
        add_into(&mut self.db1, &o.db1);
        add_into(&mut self.dw2, &o.dw2);
        add_into(&mut self.db2, &o.db2);
    }
}

/// What phase C' produces besides the gradient of BN2's output (per thread, then summed).
struct ProjectGrads {
    dw3: Vec<f32>,
    se: Option<SeGrads>,
    /// BN2's backward sums per channel.
    sums: Vec<(f64, f64)>,
}

/// Phase C': per image, the gradient of z3 (BN3's second pass), the project's weight gradient and input gradient,
/// back through squeeze-excite to dy2 (the gradient of BN2's output, stored), and BN2's batch sums.
fn project_backward(c: &BottleneckCache, coeffs3: &BackwardCoeffs, d_out: &[f32], dy2: &mut [f32]) -> ProjectGrads {
    let g = &c.g;
    let (n, ce, o, hw) = (g.n, g.c, c.out_c, g.out_h() * g.out_w());
    assert!(dy2.len() >= n * ce * hw && d_out.len() >= n * o * hw);
    let out = SharedMut::new(dy2);
    let mid = c.se.as_ref().map_or(0, |(w, _)| w.mid);
    let parts = per_thread(n, |range| {
        let mut acc = ProjectGrads {
            dw3: vec![0f32; o * ce],
            se: c.se.as_ref().map(|_| SeGrads::zeros(ce, mid)),
            sums: vec![(0f64, 0f64); ce],
        };
        let mut dz3 = vec![0f32; o * hw];
        let mut y = vec![0f32; ce * hw];
        let mut yg = vec![0f32; if c.se.is_some() { ce * hw } else { 0 }];
        let (mut du, mut dh, mut dpooled) = (vec![0f32; ce], vec![0f32; mid], vec![0f32; ce]);
        for img in range {
            for ch in 0..o {
                let r = (img * o + ch) * hw..(img * o + ch + 1) * hw;
                coeffs3.plane_grad(ch, &c.z3[r.clone()], &d_out[r], &mut dz3[ch * hw..(ch + 1) * hw]);
            }
            for ch in 0..ce {
                let r = (img * ce + ch) * hw..(img * ce + ch + 1) * hw;
                c.bn2.apply_plane(ch, &c.z2[r], &mut y[ch * hw..(ch + 1) * hw]);
            }
            let se_in = if let Some((_, t)) = &c.se {
                for ch in 0..ce {
                    let gv = t.gate[img * ce + ch];
                    let r = ch * hw..(ch + 1) * hw;
                    simd!(yg[r.clone()].iter_mut().zip(&y[r]).for_each(|(o, v)| *o = v * gv));
                }
                &yg
            } else {
                &y
            };
            matmul(o, ce, hw, &mut acc.dw3, &dz3, (hw, 1), se_in, (1, hw), true, false);
            // SAFETY: image `img`'s slice of dy2 is written by this thread only (length asserted above).
            let d = unsafe { out.slice(img * ce * hw, ce * hw) };
            matmul(ce, hw, o, d, &c.w3, (1, ce), &dz3, (hw, 1), false, false);
            if let (Some((w, t)), Some(sg)) = (&c.se, acc.se.as_mut()) {
                se_backward(w, t, img, &y, d, hw, sg, &mut du, &mut dh, &mut dpooled);
            }
            for ch in 0..ce {
                let r = ch * hw..(ch + 1) * hw;
                add_plane_sums(
                    &mut acc.sums[ch],
                    c.bn2.backward_plane_sums(ch, &c.z2[(img * ce + ch) * hw..][..hw], &d[r]),
                );
            }
        }
        acc
    });
    let mut it = parts.into_iter();
    let mut total = it.next().expect("at least one part");
    for part in it {
        add_into(&mut total.dw3, &part.dw3);
        if let (Some(t), Some(p)) = (total.se.as_mut(), &part.se) {
            t.add(p);
        }
        add_sums(&mut total.sums, &part.sums);
    }
    total
}

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

/// One plane's BatchNorm backward sums added to its channel's, in f64.
fn add_plane_sums(acc: &mut (f64, f64), (s1, s2): (f32, f32)) {
    acc.0 += s1 as f64;
    acc.1 += s2 as f64;
}

/// One part's per-channel BatchNorm backward sums added to another's.
fn add_sums(dst: &mut [(f64, f64)], src: &[(f64, f64)]) {
    for (d, s) in dst.iter_mut().zip(src) {
        d.0 += s.0;
        d.1 += s.1;
    }
}

/// Squeeze-excite backward for one image, in place: `d` holds the gradient of the gated output and becomes the
/// gradient of the SE input `y`; the weight gradients add into `acc`.
#[allow(clippy::too_many_arguments)]
fn se_backward(
    w: &SeWeights,
    t: &SeTape,
    img: usize,
    y: &[f32],
    d: &mut [f32],
    hw: usize,
    acc: &mut SeGrads,
    du: &mut [f32],
    dh: &mut [f32],
    dpooled: &mut [f32],
) {
    let (c, mid) = (du.len(), w.mid);
    let pooled = &t.pooled[img * c..(img + 1) * c];
    let hidden = &t.hidden[img * mid..(img + 1) * mid];
    // One vectorised region, plain loops: a closure LLVM leaves out of line would lose `simd!`'s target.
    simd!({
        // Through the gate: d gate = sum over the plane of d * y, then the hard-sigmoid.
        for (ch, dv) in du.iter_mut().enumerate() {
            let r = ch * hw..(ch + 1) * hw;
            let dgate = dot(&d[r.clone()], &y[r]);
            let u = t.pre_gate[img * c + ch];
            *dv = if u > -3.0 && u < 3.0 { dgate / 6.0 } else { 0.0 };
        }
        // Second 1x1 (c x mid) and its bias.
        dh.fill(0.0);
        for (ch, &dv) in du.iter().enumerate() {
            let row = &mut acc.dw2[ch * mid..(ch + 1) * mid];
            for (a, h) in row.iter_mut().zip(hidden) {
                *a += dv * h;
            }
            acc.db2[ch] += dv;
            for (a, wv) in dh.iter_mut().zip(&w.w2[ch * mid..(ch + 1) * mid]) {
                *a += dv * wv;
            }
        }
        for (a, h) in dh.iter_mut().zip(hidden) {
            if *h <= 0.0 {
                *a = 0.0
            }
        }
        // First 1x1 (mid x c) and its bias.
        dpooled.fill(0.0);
        for (j, &dv) in dh.iter().enumerate() {
            for (a, p) in acc.dw1[j * c..(j + 1) * c].iter_mut().zip(pooled) {
                *a += dv * p;
            }
            acc.db1[j] += dv;
            for (a, wv) in dpooled.iter_mut().zip(&w.w1[j * c..(j + 1) * c]) {
                *a += dv * wv;
            }
        }
        // d y = d * gate + d pooled / hw.
        for ch in 0..c {
            let (gv, add) = (t.gate[img * c + ch], dpooled[ch] / hw as f32);
            for v in d[ch * hw..(ch + 1) * hw].iter_mut() {
                *v = *v * gv + add;
            }
        }
    })
}

/// Phase B': per plane, the gradient of z2 (BN2's second pass), BN1 + activation recomputed from z1, the
/// depthwise filter's gradient and input gradient dy1 (stored), and BN1's batch sums.
fn depthwise_backward(
    c: &BottleneckCache,
    coeffs2: &BackwardCoeffs,
    dy2: &[f32],
    dy1: &mut [f32],
) -> (Vec<f32>, Vec<(f64, f64)>) {
    let g = &c.g;
    let conv = PlaneConv::new(g);
    let (hw, ohw, kk) = (g.h * g.w, g.out_h() * g.out_w(), g.k * g.k);
    assert!(dy1.len() >= g.n * g.c * hw && dy2.len() >= g.n * g.c * ohw);
    let out = SharedMut::new(dy1);
    let parts = per_thread(g.n, |range| {
        let mut dw = vec![0f64; g.c * kk];
        let mut sums = vec![(0f64, 0f64); g.c];
        let mut s = conv.scratch();
        let mut dz = vec![0f32; ohw];
        for img in range {
            for ch in 0..g.c {
                let plane = img * g.c + ch;
                let (ri, ro) = (plane * hw..(plane + 1) * hw, plane * ohw..(plane + 1) * ohw);
                coeffs2.plane_grad(ch, &c.z2[ro.clone()], &dy2[ro], &mut dz);
                // SAFETY: plane `plane` of dy1 is written by this thread only (length asserted above).
                let dxp = unsafe { out.slice(plane * hw, hw) };
                let (zi, wk) = (&c.z1[ri.clone()], &c.wd[ch * kk..(ch + 1) * kk]);
                conv.backward(zi, Some(prologue(&c.bn1, ch)), &dz, wk, &mut dw[ch * kk..(ch + 1) * kk], dxp, &mut s);
                add_plane_sums(&mut sums[ch], c.bn1.backward_plane_sums(ch, &c.z1[ri], dxp));
            }
        }
        (dw, sums)
    });
    let mut dw = vec![0f64; g.c * kk];
    let mut sums = vec![(0f64, 0f64); g.c];
    for (pdw, psums) in parts {
        dw.iter_mut().zip(pdw).for_each(|(a, b)| *a += b);
        add_sums(&mut sums, &psums);
    }
    (dw.into_iter().map(|v| v as f32).collect(), sums)
}
