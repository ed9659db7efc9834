//! The CPU training step without a tensor graph: forward in train mode, softmax cross-entropy, and a
//! hand-written backward pass over the fused kernels.
//!
//! candle's autograd allocates a zeroed gradient and adds into it for every input of every op, and keeps each
//! op's output apart from its activation; on this network that doubled the memory traffic of a step. Here each
//! layer keeps exactly what its backward needs (its input and the convolution output before BatchNorm),
//! gradients flow as plain buffers, and the stem computes no input gradient. The result is checked against
//! PyTorch by the same parity fixtures as the graph path (tests/parity.rs).

use crate::arch::{ArchSpec, BottleneckSpec};
use crate::kernels::batchnorm::{self as bn, Dims};
use crate::kernels::dense::{matmul, pointwise_backward_fused, pointwise_forward};
use crate::kernels::depthwise::{self as dw, Geometry};
use crate::kernels::profile::timed;
use crate::kernels::{add_assign, uninit_buffer, with_simd, Act};
use crate::layers::BN_EPS;
use crate::model::MobileNetV3;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::collections::HashMap;

/// What one training step produced.
pub struct StepOutput {
    pub loss: f32,
    /// Logits (n x classes), row-major.
    pub logits: Vec<f32>,
    /// Gradients of the trainable parameters, keyed by their `Var`s (ready for the optimizer).
    pub grads: GradStore,
}

/// Parameter values read from the store for one step, and the gradients written for them.
struct Params<'a> {
    model: &'a MobileNetV3,
    grads: HashMap<String, Vec<f32>>,
}

impl Params<'_> {
    fn get(&self, name: &str) -> Result<Vec<f32>> {
        self.model.params().tensor(name).flatten_all()?.to_vec1::<f32>()
    }
    fn grad(&mut self, name: &str, g: Vec<f32>) {
        self.grads.insert(name.to_string(), g);
    }
}

/// A convolution's output before BatchNorm, with the batch statistics its backward needs.
struct BnCache {
    z: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    dims: Dims,
    act: Act,
    prefix: String,
}

/// y = act(BN(z)) in training mode; updates the running statistics; keeps z for the backward pass.
fn bn_forward(p: &Params, prefix: &str, z: Vec<f32>, dims: Dims, act: Act) -> Result<(Vec<f32>, BnCache)> {
    let gamma = p.get(&format!("{prefix}.weight"))?;
    let beta = p.get(&format!("{prefix}.bias"))?;
    let mut y = uninit_buffer(z.len());
    let mut inv_std = vec![0f32; dims.c];
    let (mean, var) = timed("engine.bn_forward", || {
        bn::train_forward(&dims, &z, &gamma, &beta, act, BN_EPS as f32, &mut y, &mut inv_std)
    });
    update_running(p.model, prefix, &mean, &var, dims.count())?;
    Ok((y, BnCache { z, mean, inv_std, gamma, beta, dims, act, prefix: prefix.to_string() }))
}

/// dz from dy; writes the gradients of gamma and beta.
fn bn_backward(p: &mut Params, c: &BnCache, dy: &[f32]) -> Vec<f32> {
    let mut dz = uninit_buffer(dy.len());
    let (mut dg, mut db) = (vec![0f32; c.dims.c], vec![0f32; c.dims.c]);
    timed("engine.bn_backward", || {
        bn::train_backward(&c.dims, &c.z, dy, &c.gamma, &c.beta, &c.mean, &c.inv_std, c.act, &mut dz, &mut dg, &mut db)
    });
    p.grad(&format!("{}.weight", c.prefix), dg);
    p.grad(&format!("{}.bias", c.prefix), db);
    dz
}

/// The first pass of the BatchNorm backward (writes the gradients of gamma and beta); the second pass is left
/// to the convolution that consumes it.
fn bn_backward_coeffs(p: &mut Params, c: &BnCache, dy: &[f32]) -> bn::BackwardCoeffs {
    let (mut dg, mut db) = (vec![0f32; c.dims.c], vec![0f32; c.dims.c]);
    let coeffs = timed("engine.bn_backward_sums", || {
        bn::backward_sums(&c.dims, &c.z, dy, &c.gamma, &c.beta, &c.mean, &c.inv_std, c.act, &mut dg, &mut db)
    });
    p.grad(&format!("{}.weight", c.prefix), dg);
    p.grad(&format!("{}.bias", c.prefix), db);
    coeffs
}

fn update_running(model: &MobileNetV3, prefix: &str, mean: &[f32], var: &[f32], count: usize) -> Result<()> {
    let dev = model.device();
    let c = mean.len();
    crate::layers::BatchNorm::new(model.params(), prefix).update_running(
        &Tensor::from_slice(mean, c, dev)?,
        &Tensor::from_slice(var, c, dev)?,
        count as f64,
    )
}

/// 1x1 convolution + BN + activation.
struct PointwiseCache {
    x_index: usize,
    name: String,
    w: Vec<f32>,
    c: usize,
    o: usize,
    hw: usize,
    bn: BnCache,
}

struct BlockCache {
    input: usize,
    expand: PointwiseCache,
    depthwise: (Geometry, Vec<f32>, String, BnCache, usize),
    se: Option<SeCache>,
    project: PointwiseCache,
    residual: bool,
}

struct SeCache {
    prefix: String,
    /// Input of the SE block (the depthwise output), index into the activation tape.
    x_index: usize,
    pooled: Vec<f32>,
    hidden: Vec<f32>,
    pre_gate: Vec<f32>,
    gate: Vec<f32>,
    w1: Vec<f32>,
    w2: Vec<f32>,
    c: usize,
    mid: usize,
    hw: usize,
}

/// The training step. `x` holds n normalised images of `side` x `side`; labels are class indices.
pub fn train_step(
    model: &MobileNetV3,
    x: Vec<f32>,
    side: usize,
    labels: &[u32],
    smoothing: f32,
    dropout_seed: u64,
) -> Result<StepOutput> {
    let spec: &ArchSpec = model.spec();
    let n = labels.len();
    let mut p = Params { model, grads: HashMap::new() };
    // The activation tape: tape[i] is the input of a later layer.
    let mut tape: Vec<Vec<f32>> = Vec::new();

    // Stem: 3x3 conv (im2col + matmul), BN, hswish.
    let si = spec.initial_stride;
    let stem_geo = Geometry { n, c: 3, h: side, w: side, k: 3, stride: si, pad: 1 };
    let (oh, ow) = (stem_geo.out_h(), stem_geo.out_w());
    let c0 = spec.stem_out;
    let cols = timed("engine.stem_im2col", || im2col(&x, &stem_geo));
    drop(x);
    let w_stem = p.get("conv_0.0.weight")?;
    let mut z = uninit_buffer(n * c0 * oh * ow);
    timed("engine.stem_conv", || {
        z.par_chunks_mut(c0 * oh * ow)
            .zip(cols.par_chunks(27 * oh * ow))
            .for_each(|(zi, ci)| matmul(c0, oh * ow, 27, zi, &w_stem, (27, 1), ci, (oh * ow, 1), false, false))
    });
    let (y, stem_bn) = bn_forward(&p, "conv_0.1", z, Dims { n, c: c0, hw: oh * ow }, Act::HardSwish)?;
    tape.push(y);
    let mut side = oh;

    let mut blocks = Vec::with_capacity(spec.blocks.len());
    for (i, b) in spec.blocks.iter().enumerate() {
        let (cache, out_side) = block_forward(&mut p, &mut tape, i, b, n, side)?;
        blocks.push(cache);
        side = out_side;
    }

    // Last 1x1 conv + BN + hswish.
    let hw = side * side;
    let last = pointwise_fw(&mut p, &mut tape, "conv_2", spec.last_in, spec.last_out, n, hw, Act::HardSwish)?;
    let feat = tape.len() - 1;

    // Head: global pool, 1x1 conv (bias) + hswish, dropout, classifier.
    let (cl, hid, classes) = (spec.last_out, spec.hidden, spec.num_classes);
    let pooled: Vec<f32> = tape[feat].chunks(hw).map(|pl| pl.iter().sum::<f32>() / hw as f32).collect();
    let w3 = p.get("conv_3.1.weight")?;
    let b3 = p.get("conv_3.1.bias")?;
    let mut pre_h = vec![0f32; n * hid];
    matmul(n, hid, cl, &mut pre_h, &pooled, (cl, 1), &w3, (1, cl), false, true);
    add_bias_rows(&mut pre_h, &b3);
    let mut h: Vec<f32> = pre_h.iter().map(|v| Act::HardSwish.apply(*v)).collect();
    let keep_mask = dropout_mask(n * hid, model.config().dropout, dropout_seed);
    if let Some(m) = &keep_mask {
        h.iter_mut().zip(m).for_each(|(v, k)| *v *= k);
    }
    let w4 = p.get("conv_4.weight")?;
    let b4 = p.get("conv_4.bias")?;
    let mut logits = vec![0f32; n * classes];
    matmul(n, classes, hid, &mut logits, &h, (hid, 1), &w4, (1, hid), false, true);
    add_bias_rows(&mut logits, &b4);

    // Softmax cross-entropy (with label smoothing) and its gradient.
    let (loss, dlogits) = softmax_cross_entropy(&logits, labels, classes, smoothing);

    // ---- backward ----
    let mut dw4 = vec![0f32; classes * hid];
    matmul(classes, hid, n, &mut dw4, &dlogits, (1, classes), &h, (hid, 1), false, true);
    p.grad("conv_4.weight", dw4);
    p.grad("conv_4.bias", column_sums(&dlogits, classes));
    let mut dh = vec![0f32; n * hid];
    matmul(n, hid, classes, &mut dh, &dlogits, (classes, 1), &w4, (hid, 1), false, true);
    if let Some(m) = &keep_mask {
        dh.iter_mut().zip(m).for_each(|(v, k)| *v *= k);
    }
    dh.iter_mut().zip(&pre_h).for_each(|(d, z)| *d *= Act::HardSwish.derivative(*z));
    let mut dw3 = vec![0f32; hid * cl];
    matmul(hid, cl, n, &mut dw3, &dh, (1, hid), &pooled, (cl, 1), false, true);
    p.grad("conv_3.1.weight", dw3);
    p.grad("conv_3.1.bias", column_sums(&dh, hid));
    let mut dpooled = vec![0f32; n * cl];
    matmul(n, cl, hid, &mut dpooled, &dh, (hid, 1), &w3, (cl, 1), false, true);
    // The pool's gradient spreads evenly over each plane.
    let mut dfeat = uninit_buffer(n * cl * hw);
    dfeat.par_chunks_mut(hw).zip(dpooled.par_iter()).for_each(|(pl, g)| pl.fill(g / hw as f32));

    let mut d = pointwise_bw(&mut p, &tape, &last, &dfeat, true)?.unwrap_or_default();
    drop(dfeat);
    for cache in blocks.iter().rev() {
        d = block_backward(&mut p, &tape, cache, d)?;
    }
    // Stem: only the weight gradient (the input image needs none).
    let dz = bn_backward(&mut p, &stem_bn, &d);
    let mut dws = vec![0f32; c0 * 27];
    timed("engine.stem_grad", || {
        let parts: Vec<Vec<f32>> = dz
            .par_chunks(c0 * oh * ow)
            .zip(cols.par_chunks(27 * oh * ow))
            .fold(
                || vec![0f32; c0 * 27],
                |mut acc, (dzi, ci)| {
                    matmul(c0, 27, oh * ow, &mut acc, dzi, (oh * ow, 1), ci, (1, oh * ow), true, false);
                    acc
                },
            )
            .collect();
        for part in parts {
            dws.iter_mut().zip(part).for_each(|(a, b)| *a += b);
        }
    });
    p.grad("conv_0.0.weight", dws);

    // Gradients as tensors keyed by the parameters' Vars.
    let mut grads = GradStore::default();
    for (name, var) in model.params().trainable() {
        if let Some(g) = p.grads.remove(&name) {
            grads.insert(var.as_tensor(), Tensor::from_vec(g, var.shape(), var.device())?);
        }
    }
    Ok(StepOutput { loss, logits, grads })
}

fn block_forward(
    p: &mut Params,
    tape: &mut Vec<Vec<f32>>,
    i: usize,
    b: &BottleneckSpec,
    n: usize,
    side: usize,
) -> Result<(BlockCache, usize)> {
    let prefix = format!("bottlenecks_1.{i}");
    let input = tape.len() - 1;
    let act = Act::from(b.act);
    let hw = side * side;
    let expand = pointwise_fw(p, tape, &format!("{prefix}.pointwise_0"), b.in_c, b.expanded, n, hw, act)?;
    // Depthwise + BN + act.
    let g = Geometry { n, c: b.expanded, h: side, w: side, k: b.kernel, stride: b.stride, pad: b.padding() };
    let wname = format!("{prefix}.depthwise_1.0.weight");
    let wd = p.get(&wname)?;
    let mut z = uninit_buffer(g.out_len());
    timed("engine.dw_forward", || dw::forward(&g, &tape[tape.len() - 1], &wd, None, Act::None, &mut z));
    let out_side = g.out_h();
    let ohw = out_side * out_side;
    let (y, dbn) = bn_forward(p, &format!("{prefix}.depthwise_1.1"), z, Dims { n, c: b.expanded, hw: ohw }, act)?;
    let dw_in = tape.len() - 1;
    tape.push(y);
    let se = if b.squeeze_excite {
        let c = se_forward(p, tape, &format!("{prefix}.se_block"), b.expanded, b.se_hidden, n, ohw)?;
        Some(c)
    } else {
        None
    };
    let project = pointwise_fw(p, tape, &format!("{prefix}.pointwise_2"), b.expanded, b.out_c, n, ohw, Act::None)?;
    let residual = b.residual();
    if residual {
        let (last, earlier) = tape.split_last_mut().expect("tape has the block input");
        let inp = &earlier[input];
        last.par_chunks_mut(4096)
            .zip(inp.par_chunks(4096))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, x)| *o += x));
    }
    Ok((BlockCache { input, expand, depthwise: (g, wd, wname, dbn, dw_in), se, project, residual }, out_side))
}

fn block_backward(p: &mut Params, tape: &[Vec<f32>], c: &BlockCache, d_out: Vec<f32>) -> Result<Vec<f32>> {
    let skip = if c.residual { Some(d_out.clone()) } else { None };
    let mut d = pointwise_bw(p, tape, &c.project, &d_out, true)?.unwrap_or_default();
    drop(d_out);
    if let Some(se) = &c.se {
        d = se_backward(p, tape, se, &d);
    }
    let (g, wd, wname, dbn, dw_in) = &c.depthwise;
    // BatchNorm's input gradient is made plane by plane inside the depthwise backward, never stored.
    let coeffs = bn_backward_coeffs(p, dbn, &d);
    let ohw = g.out_h() * g.out_w();
    let grad_of = |plane: usize, out: &mut [f32]| {
        let r = plane * ohw..(plane + 1) * ohw;
        coeffs.plane_grad(plane % g.c, &dbn.z[r.clone()], &d[r], out)
    };
    let mut dx = uninit_buffer(g.n * g.c * g.h * g.w);
    let mut dwt = vec![0f32; wd.len()];
    timed("engine.dw_backward", || dw::backward_fused(g, &tape[*dw_in], wd, grad_of, &mut dx, &mut dwt));
    p.grad(wname, dwt);
    drop(d);
    let mut d_in = pointwise_bw(p, tape, &c.expand, &dx, true)?.unwrap_or_default();
    debug_assert_eq!(c.expand.x_index, c.input);
    if let Some(s) = skip {
        add_assign(&mut d_in, &s);
    }
    Ok(d_in)
}

#[allow(clippy::too_many_arguments)]
fn pointwise_fw(
    p: &mut Params,
    tape: &mut Vec<Vec<f32>>,
    prefix: &str,
    c: usize,
    o: usize,
    n: usize,
    hw: usize,
    act: Act,
) -> Result<PointwiseCache> {
    let name = format!("{prefix}.0.weight");
    let w = p.get(&name)?;
    let x_index = tape.len() - 1;
    let mut z = uninit_buffer(n * o * hw);
    timed("engine.pw_forward", || pointwise_forward(&tape[x_index], &w, c, o, hw, &mut z));
    let (y, bn) = bn_forward(p, &format!("{prefix}.1"), z, Dims { n, c: o, hw }, act)?;
    tape.push(y);
    Ok(PointwiseCache { x_index, name, w, c, o, hw, bn })
}

fn pointwise_bw(
    p: &mut Params,
    tape: &[Vec<f32>],
    c: &PointwiseCache,
    dy: &[f32],
    want_dx: bool,
) -> Result<Option<Vec<f32>>> {
    // BatchNorm's input gradient is made image by image inside the 1x1 backward, never stored.
    let coeffs = bn_backward_coeffs(p, &c.bn, dy);
    let (z, o, hw) = (&c.bn.z, c.o, c.hw);
    let grad_of = |img: usize, out: &mut [f32]| {
        for ch in 0..o {
            let r = (img * o + ch) * hw..(img * o + ch + 1) * hw;
            coeffs.plane_grad(ch, &z[r.clone()], &dy[r], &mut out[ch * hw..(ch + 1) * hw]);
        }
    };
    let x = &tape[c.x_index];
    let mut dwt = vec![0f32; c.o * c.c];
    let mut dx = if want_dx { Some(uninit_buffer(x.len())) } else { None };
    timed("engine.pw_backward", || {
        pointwise_backward_fused(x, &c.w, c.c, c.o, c.hw, grad_of, dx.as_deref_mut(), &mut dwt)
    });
    p.grad(&c.name, dwt);
    Ok(dx)
}

#[inline(always)]
fn hsigmoid(u: f32) -> f32 {
    (u + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0)
}

fn se_forward(
    p: &mut Params,
    tape: &mut Vec<Vec<f32>>,
    prefix: &str,
    c: usize,
    mid: usize,
    n: usize,
    hw: usize,
) -> Result<SeCache> {
    let x_index = tape.len() - 1;
    let w1 = p.get(&format!("{prefix}.conv_0.1.weight"))?;
    let b1 = p.get(&format!("{prefix}.conv_0.1.bias"))?;
    let w2 = p.get(&format!("{prefix}.conv_1.0.weight"))?;
    let b2 = p.get(&format!("{prefix}.conv_1.0.bias"))?;
    let x = &tape[x_index];
    let pooled: Vec<f32> = x.par_chunks(hw).map(|pl| with_simd(|| pl.iter().sum::<f32>()) / hw as f32).collect();
    let mut hidden = vec![0f32; n * mid];
    matmul(n, mid, c, &mut hidden, &pooled, (c, 1), &w1, (1, c), false, false);
    add_bias_rows(&mut hidden, &b1);
    hidden.iter_mut().for_each(|v| *v = v.max(0.0));
    let mut pre_gate = vec![0f32; n * c];
    matmul(n, c, mid, &mut pre_gate, &hidden, (mid, 1), &w2, (1, mid), false, false);
    add_bias_rows(&mut pre_gate, &b2);
    let gate: Vec<f32> = pre_gate.iter().map(|u| hsigmoid(*u)).collect();
    let mut y = uninit_buffer(x.len());
    timed("engine.se_scale", || {
        y.par_chunks_mut(hw)
            .zip(x.par_chunks(hw))
            .zip(gate.par_iter())
            .for_each(|((o, i), g)| with_simd(|| o.iter_mut().zip(i).for_each(|(o, i)| *o = i * g)))
    });
    tape.push(y);
    Ok(SeCache { prefix: prefix.to_string(), x_index, pooled, hidden, pre_gate, gate, w1, w2, c, mid, hw })
}

fn se_backward(p: &mut Params, tape: &[Vec<f32>], s: &SeCache, dy: &[f32]) -> Vec<f32> {
    let x = &tape[s.x_index];
    let (c, mid, hw) = (s.c, s.mid, s.hw);
    let n = s.gate.len() / c;
    // d gate = sum over the plane of dy * x; through the hard-sigmoid.
    let dgate: Vec<f32> = timed("engine.se_backward", || {
        dy.par_chunks(hw)
            .zip(x.par_chunks(hw))
            .map(|(g, x)| with_simd(|| crate::kernels::depthwise::dot(g, x)))
            .collect()
    });
    let du: Vec<f32> =
        dgate.iter().zip(&s.pre_gate).map(|(d, u)| if *u > -3.0 && *u < 3.0 { d / 6.0 } else { 0.0 }).collect();
    let mut dw2 = vec![0f32; c * mid];
    matmul(c, mid, n, &mut dw2, &du, (1, c), &s.hidden, (mid, 1), false, false);
    let mut dhidden = vec![0f32; n * mid];
    matmul(n, mid, c, &mut dhidden, &du, (c, 1), &s.w2, (mid, 1), false, false);
    dhidden.iter_mut().zip(&s.hidden).for_each(|(d, h)| {
        if *h <= 0.0 {
            *d = 0.0
        }
    });
    let mut dw1 = vec![0f32; mid * c];
    matmul(mid, c, n, &mut dw1, &dhidden, (1, mid), &s.pooled, (c, 1), false, false);
    let mut dpooled = vec![0f32; n * c];
    matmul(n, c, mid, &mut dpooled, &dhidden, (mid, 1), &s.w1, (c, 1), false, false);
    p.grad(&format!("{}.conv_1.0.weight", s.prefix), dw2);
    p.grad(&format!("{}.conv_1.0.bias", s.prefix), column_sums(&du, c));
    p.grad(&format!("{}.conv_0.1.weight", s.prefix), dw1);
    p.grad(&format!("{}.conv_0.1.bias", s.prefix), column_sums(&dhidden, mid));
    // dx = dy * gate + d pooled / hw.
    let mut dx = uninit_buffer(x.len());
    timed("engine.se_backward", || {
        dx.par_chunks_mut(hw).zip(dy.par_chunks(hw)).zip(s.gate.par_iter().zip(dpooled.par_iter())).for_each(
            |((o, g), (gate, dp))| {
                let add = dp / hw as f32;
                with_simd(|| o.iter_mut().zip(g).for_each(|(o, g)| *o = g * gate + add))
            },
        )
    });
    dx
}

/// Columns of a 3x3 convolution's input, per image: (c * 9) x (oh * ow), for the stem's matrix product.
pub(crate) fn im2col(x: &[f32], g: &Geometry) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let rows = g.c * g.k * g.k;
    let mut cols = vec![0f32; g.n * rows * oh * ow];
    cols.par_chunks_mut(rows * oh * ow).enumerate().for_each(|(img, out)| {
        for ch in 0..g.c {
            let plane = &x[(img * g.c + ch) * g.h * g.w..(img * g.c + ch + 1) * g.h * g.w];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = &mut out[((ch * g.k + ky) * g.k + kx) * oh * ow..][..oh * ow];
                    for oy in 0..oh {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        for ox in 0..ow {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if ix >= 0 && ix < g.w as isize {
                                row[oy * ow + ox] = plane[iy as usize * g.w + ix as usize];
                            }
                        }
                    }
                }
            }
        }
    });
    cols
}

fn add_bias_rows(m: &mut [f32], bias: &[f32]) {
    for row in m.chunks_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut s = vec![0f32; cols];
    for row in m.chunks(cols) {
        s.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    s
}

/// The same masks as the graph path's dropout (same generator, same order), so both engines train alike.
pub(crate) fn dropout_mask(len: usize, p: f32, seed: u64) -> Option<Vec<f32>> {
    if p <= 0.0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    Some((0..len).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect())
}

/// Mean cross-entropy over the batch with label smoothing e: (1 - e) * nll + e * mean(-log p); and its
/// gradient with respect to the logits.
fn softmax_cross_entropy(logits: &[f32], labels: &[u32], classes: usize, e: f32) -> (f32, Vec<f32>) {
    let n = labels.len();
    let mut grad = vec![0f32; logits.len()];
    let mut loss = 0f64;
    for (i, (row, &label)) in logits.chunks(classes).zip(labels).enumerate() {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|v| ((v - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        let label = label as usize;
        let nll = log_z - row[label] as f64;
        let uniform = log_z - row.iter().map(|v| *v as f64).sum::<f64>() / classes as f64;
        loss += (1.0 - e as f64) * nll + e as f64 * uniform;
        let g = &mut grad[i * classes..(i + 1) * classes];
        for (j, v) in row.iter().enumerate() {
            let prob = ((*v as f64) - log_z).exp();
            let target = (1.0 - e as f64) * (j == label) as u8 as f64 + e as f64 / classes as f64;
            g[j] = ((prob - target) / n as f64) as f32;
        }
    }
    ((loss / n as f64) as f32, grad)
}
