//! The CPU training step without a tensor graph: forward in train mode, softmax cross-entropy, and a
//! hand-written backward pass over the fused kernels.
//!
//! candle's autograd allocates a zeroed gradient and adds into it for every input of every op, and keeps each
//! op's output apart from its activation; on this network that doubled the memory traffic of a step. Here each
//! layer keeps exactly what its backward needs (its input and the convolution output before BatchNorm),
//! gradients flow as plain buffers, and the stem computes no input gradient. The bottlenecks, where the wide
//! activations live, run image by image between their BatchNorm reductions (`bottleneck.rs`). The result is
//! checked against PyTorch by the same parity fixtures as the graph path (tests/parity.rs).

mod bottleneck;

use crate::kernels::batchnorm::{self as bn, Dims};
use crate::kernels::dense::{add_bias_rows, column_sums, im2col, matmul, pointwise_backward_fused, pointwise_forward};
use crate::kernels::depthwise::Geometry;
use crate::kernels::loss::{dropout_mask, softmax_cross_entropy};
use crate::kernels::profile::timed;
use crate::kernels::{lane_sum, output_buffer, recycle, simd, Act};
use crate::model::arch::{ArchSpec, BN_EPS};
use crate::model::names::{self, BnNames, ConvBnNames};
use crate::model::params::ParamStore;
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
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
    store: &'a ParamStore,
    grads: HashMap<String, Vec<f32>>,
}

impl Params<'_> {
    fn get(&self, name: &str) -> Result<Vec<f32>> {
        self.store.values(name)
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
    names: BnNames,
}

/// y = act(BN(z)) in training mode; updates the running statistics; keeps z for the backward pass.
fn bn_forward(p: &Params, names: &BnNames, z: Vec<f32>, dims: Dims, act: Act) -> Result<(Vec<f32>, BnCache)> {
    let gamma = p.get(&names.weight)?;
    let beta = p.get(&names.bias)?;
    let mut y = output_buffer(z.len());
    let mut inv_std = vec![0f32; dims.c];
    let (mean, var) = timed("engine.bn_forward", || {
        bn::train_forward(&dims, &z, &gamma, &beta, act, BN_EPS as f32, &mut y, &mut inv_std)
    });
    p.store.update_running(names, &mean, &var, dims.count())?;
    Ok((y, BnCache { z, mean, inv_std, gamma, beta, dims, act, names: names.clone() }))
}

/// dz from dy; writes the gradients of gamma and beta.
fn bn_backward(p: &mut Params, c: &BnCache, dy: &[f32]) -> Vec<f32> {
    let mut dz = output_buffer(dy.len());
    let (mut dg, mut db) = (vec![0f32; c.dims.c], vec![0f32; c.dims.c]);
    timed("engine.bn_backward", || {
        bn::train_backward(&c.dims, &c.z, dy, &c.gamma, &c.beta, &c.mean, &c.inv_std, c.act, &mut dz, &mut dg, &mut db)
    });
    p.grad(&c.names.weight, dg);
    p.grad(&c.names.bias, db);
    dz
}

/// The first pass of the BatchNorm backward (writes the gradients of gamma and beta); the second pass is left
/// to the convolution that consumes it.
fn bn_backward_coeffs(p: &mut Params, c: &BnCache, dy: &[f32]) -> bn::BackwardCoeffs {
    let (mut dg, mut db) = (vec![0f32; c.dims.c], vec![0f32; c.dims.c]);
    let coeffs = timed("engine.bn_backward_sums", || {
        bn::backward_sums(&c.dims, &c.z, dy, &c.gamma, &c.beta, &c.mean, &c.inv_std, c.act, &mut dg, &mut db)
    });
    p.grad(&c.names.weight, dg);
    p.grad(&c.names.bias, db);
    coeffs
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

/// The training step of the network `spec` over the parameters in `store` (whose running statistics it
/// updates). `x` holds n normalised images of `side` x `side`; labels are class indices.
pub fn train_step(
    spec: &ArchSpec,
    store: &ParamStore,
    x: Vec<f32>,
    side: usize,
    labels: &[u32],
    smoothing: f32,
    dropout_seed: u64,
) -> Result<StepOutput> {
    crate::kernels::on_pool(|| train_step_on_pool(spec, store, x, side, labels, smoothing, dropout_seed))
}

fn train_step_on_pool(
    spec: &ArchSpec,
    store: &ParamStore,
    x: Vec<f32>,
    side: usize,
    labels: &[u32],
    smoothing: f32,
    dropout_seed: u64,
) -> Result<StepOutput> {
    let n = labels.len();
    let mut p = Params { store, grads: HashMap::new() };
    let (stem, last_names, hidden, classifier) =
        (names::stem(), names::last_conv(), names::hidden(), names::classifier());
    // The activation tape: tape[i] is the input of a later layer.
    let mut tape: Vec<Vec<f32>> = Vec::new();

    // Stem: 3x3 conv (im2col + matmul), BN, hswish.
    let si = spec.initial_stride;
    let stem_geo = Geometry { n, c: 3, h: side, w: side, k: 3, stride: si, pad: 1 };
    let (oh, ow) = (stem_geo.out_h(), stem_geo.out_w());
    let c0 = spec.stem_out;
    let cols = timed("engine.stem_im2col", || im2col(&x, &stem_geo));
    drop(x);
    let w_stem = p.get(&stem.weight)?;
    let mut z = output_buffer(n * c0 * oh * ow);
    timed("engine.stem_conv", || {
        z.par_chunks_mut(c0 * oh * ow)
            .zip(cols.par_chunks(27 * oh * ow))
            .for_each(|(zi, ci)| matmul(c0, oh * ow, 27, zi, &w_stem, (27, 1), ci, (oh * ow, 1), false, false))
    });
    let (y, stem_bn) = bn_forward(&p, &stem.bn, z, Dims { n, c: c0, hw: oh * ow }, Act::HardSwish)?;
    tape.push(y);
    let mut side = oh;

    let mut blocks = Vec::with_capacity(spec.blocks.len());
    for (i, b) in spec.blocks.iter().enumerate() {
        let (cache, out_side) = bottleneck::forward(&p, &mut tape, names::block(i), b, n, side)?;
        blocks.push(cache);
        side = out_side;
    }

    // Last 1x1 conv + BN + hswish.
    let hw = side * side;
    let last = pointwise_fw(&mut p, &mut tape, &last_names, spec.last_in, spec.last_out, n, hw, Act::HardSwish)?;
    let feat = tape.len() - 1;

    // Head: global pool, 1x1 conv (bias) + hswish, dropout, classifier.
    let (cl, hid, classes) = (spec.last_out, spec.hidden, spec.num_classes);
    let pooled: Vec<f32> = tape[feat].chunks(hw).map(|pl| simd!(lane_sum(pl)) / hw as f32).collect();
    let w3 = p.get(&hidden.weight)?;
    let b3 = p.get(&hidden.bias)?;
    let mut pre_h = vec![0f32; n * hid];
    matmul(n, hid, cl, &mut pre_h, &pooled, (cl, 1), &w3, (1, cl), false, true);
    add_bias_rows(&mut pre_h, &b3);
    let mut h: Vec<f32> = pre_h.iter().map(|v| Act::HardSwish.apply(*v)).collect();
    let keep_mask = dropout_mask(n * hid, spec.dropout, dropout_seed);
    if let Some(m) = &keep_mask {
        h.iter_mut().zip(m).for_each(|(v, k)| *v *= k);
    }
    let w4 = p.get(&classifier.weight)?;
    let b4 = p.get(&classifier.bias)?;
    let mut logits = vec![0f32; n * classes];
    matmul(n, classes, hid, &mut logits, &h, (hid, 1), &w4, (1, hid), false, true);
    add_bias_rows(&mut logits, &b4);

    // Softmax cross-entropy (with label smoothing) and its gradient.
    let (loss, dlogits) = softmax_cross_entropy(&logits, labels, classes, smoothing);

    // ---- backward ----
    let mut dw4 = vec![0f32; classes * hid];
    matmul(classes, hid, n, &mut dw4, &dlogits, (1, classes), &h, (hid, 1), false, true);
    p.grad(&classifier.weight, dw4);
    p.grad(&classifier.bias, column_sums(&dlogits, classes));
    let mut dh = vec![0f32; n * hid];
    matmul(n, hid, classes, &mut dh, &dlogits, (classes, 1), &w4, (hid, 1), false, true);
    if let Some(m) = &keep_mask {
        dh.iter_mut().zip(m).for_each(|(v, k)| *v *= k);
    }
    dh.iter_mut().zip(&pre_h).for_each(|(d, z)| *d *= Act::HardSwish.derivative(*z));
    let mut dw3 = vec![0f32; hid * cl];
    matmul(hid, cl, n, &mut dw3, &dh, (1, hid), &pooled, (cl, 1), false, true);
    p.grad(&hidden.weight, dw3);
    p.grad(&hidden.bias, column_sums(&dh, hid));
    let mut dpooled = vec![0f32; n * cl];
    matmul(n, cl, hid, &mut dpooled, &dh, (hid, 1), &w3, (cl, 1), false, true);
    // The pool's gradient spreads evenly over each plane.
    let mut dfeat = output_buffer(n * cl * hw);
    dfeat.par_chunks_mut(hw).zip(dpooled.par_iter()).for_each(|(pl, g)| pl.fill(g / hw as f32));

    let mut d = pointwise_bw(&mut p, &tape, &last, &dfeat, true)?.unwrap_or_default();
    recycle(dfeat);
    for cache in blocks.iter().rev() {
        d = bottleneck::backward(&mut p, &tape, cache, d)?;
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
    p.grad(&stem.weight, dws);
    // Every large buffer of this step goes back for the next one (see `kernels::output_buffer`).
    [dz, d, stem_bn.z, last.bn.z].into_iter().chain(tape).for_each(recycle);
    blocks.into_iter().for_each(bottleneck::BottleneckCache::recycle);

    // Gradients as tensors keyed by the parameters' Vars.
    let mut grads = GradStore::default();
    for (name, var) in store.trainable() {
        if let Some(g) = p.grads.remove(&name) {
            grads.insert(var.as_tensor(), Tensor::from_vec(g, var.shape(), var.device())?);
        }
    }
    Ok(StepOutput { loss, logits, grads })
}

#[allow(clippy::too_many_arguments)]
fn pointwise_fw(
    p: &mut Params,
    tape: &mut Vec<Vec<f32>>,
    names: &ConvBnNames,
    c: usize,
    o: usize,
    n: usize,
    hw: usize,
    act: Act,
) -> Result<PointwiseCache> {
    let name = names.weight.clone();
    let w = p.get(&name)?;
    let x_index = tape.len() - 1;
    let mut z = output_buffer(n * o * hw);
    timed("engine.pw_forward", || pointwise_forward(&tape[x_index], &w, c, o, hw, &mut z));
    let (y, bn) = bn_forward(p, &names.bn, z, Dims { n, c: o, hw }, act)?;
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
    let mut dx = if want_dx { Some(output_buffer(x.len())) } else { None };
    timed("engine.pw_backward", || {
        pointwise_backward_fused(x, &c.w, c.c, c.o, c.hw, grad_of, dx.as_deref_mut(), &mut dwt)
    });
    p.grad(&c.name, dwt);
    Ok(dx)
}
