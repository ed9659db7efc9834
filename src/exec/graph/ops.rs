//! The numeric operations the network is made of, in two implementations ([`Ops`]): on the CPU, the fused
//! kernels of [`crate::kernels`] as candle custom ops (with their own backward passes); everywhere, the
//! *portable* one, compositions of candle's stock ops that compute the same function with few, large
//! operations (a depthwise convolution is k*k shifted windows of the padded input, each times its per-channel
//! tap, summed: 9 or 25 whole-tensor products, where candle's grouped convolution launches one convolution per
//! channel). The parity tests run both against PyTorch on the CPU.

use crate::kernels::profile::timed;
use crate::kernels::{batchnorm as bn, depthwise as dw, Act};
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor, D};
use std::sync::{Arc, Mutex};

/// hswish(x) = x * relu6(x + 3) / 6
pub(crate) fn hard_swish(x: &Tensor) -> Result<Tensor> {
    x * hard_sigmoid(x)?
}

/// hsigmoid(x) = relu6(x + 3) / 6
pub(crate) fn hard_sigmoid(x: &Tensor) -> Result<Tensor> {
    (x + 3.0)?.clamp(0f32, 6f32)? / 6.0
}

pub(crate) fn activate(x: &Tensor, act: Act) -> Result<Tensor> {
    match act {
        Act::None => Ok(x.clone()),
        Act::Relu => x.relu(),
        Act::HardSwish => hard_swish(x),
    }
}

/// A 1x1 convolution with bias applied to pooled features: x (n, c), weight (o, c, 1, 1), bias (o).
pub(crate) fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (o, c, _, _) = weight.dims4()?;
    x.matmul(&weight.reshape((o, c))?.t()?)?.broadcast_add(bias)
}

/// A 1x1 convolution, stride 1, no bias, as one batched matrix product: (o, c) x (c, h*w) per image.
pub(crate) fn pointwise_conv2d(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let o = weight.dim(0)?;
    let y = weight.reshape((1, o, c))?.broadcast_matmul(&x.contiguous()?.reshape((n, c, h * w))?)?;
    y.reshape((n, o, h, w))
}

/// Which implementation the graph's ops use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Ops {
    /// Our kernels as custom ops: the CPU kernels on the CPU, the CUDA kernels (`kernels/cuda/`) on CUDA.
    #[default]
    Fused,
    /// Compositions of candle's stock ops: every device.
    Portable,
}

impl Ops {
    /// What a new model uses on `device`: our kernels on the CPU; on CUDA the portable ops, until our CUDA
    /// kernels have passed their tests on a GPU (`.ci/gpu-check.sh`; `bench train --engine graph` runs them).
    pub(crate) fn default_for(device: &candle_core::Device) -> Ops {
        if device.is_cpu() {
            Ops::Fused
        } else {
            Ops::Portable
        }
    }

    fn fused_on(self, x: &Tensor) -> bool {
        self == Ops::Fused && (x.device().is_cpu() || x.device().is_cuda())
    }
}

/// A depthwise kxk convolution (one filter per channel), no bias. weight: (c, 1, k, k).
pub(crate) fn depthwise_conv2d(x: &Tensor, weight: &Tensor, stride: usize, padding: usize, ops: Ops) -> Result<Tensor> {
    if ops.fused_on(x) {
        let (n, c, h, w) = x.dims4()?;
        let k = weight.dim(2)?;
        let g = dw::Geometry { n, c, h, w, k, stride, pad: padding };
        return x.contiguous()?.apply_op2(&weight.contiguous()?, DepthwiseConv(g));
    }
    depthwise_shifted_windows(x, weight, stride, padding)
}

/// The depthwise convolution from stock ops: sum over taps (ky, kx) of w[c, ky, kx] times the input window
/// that tap reads, i.e. the padded input from (ky, kx) on, every `stride`-th row and column.
///
/// Autograd keeps each tap's window and product, so a training step holds about k*k times the layer's
/// activations (measured: small_0.25 at batch 128 peaks at 6.3 GB against 0.64 GB for the fused ops). Unfolding
/// with one identity-filter convolution instead would be two operations, but candle's convolution backward
/// always computes the filter's gradient too, an (n*c)-channel convolution here, which made it twice as slow.
fn depthwise_shifted_windows(x: &Tensor, weight: &Tensor, stride: usize, pad: usize) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let k = weight.dim(2)?;
    let (oh, ow) = ((h + 2 * pad - k) / stride + 1, (w + 2 * pad - k) / stride + 1);
    // Padded so that every window spans stride * (oh or ow) rows and columns, which a reshape then subsamples.
    let extra = stride - 1;
    let xp = x.pad_with_zeros(2, pad, pad + extra)?.pad_with_zeros(3, pad, pad + extra)?;
    let taps = weight.reshape((c, k * k))?;
    let mut sum: Option<Tensor> = None;
    for ky in 0..k {
        let rows = every_nth(&xp.narrow(2, ky, stride * oh)?, 2, stride)?;
        for kx in 0..k {
            let window = every_nth(&rows.narrow(3, kx, stride * ow)?, 3, stride)?;
            let tap = taps.narrow(1, ky * k + kx, 1)?.reshape((1, c, 1, 1))?;
            let term = window.broadcast_mul(&tap)?;
            sum = Some(match sum {
                Some(s) => (s + term)?,
                None => term,
            });
        }
    }
    let y = sum.ok_or_else(|| candle_core::Error::Msg("depthwise filter with no taps".into()))?;
    debug_assert_eq!(y.dims4()?, (n, c, oh, ow));
    Ok(y)
}

/// Every `step`-th entry along `dim` (whose size is a multiple of `step`), from the first.
fn every_nth(x: &Tensor, dim: usize, step: usize) -> Result<Tensor> {
    if step == 1 {
        return Ok(x.clone());
    }
    let mut dims = x.dims().to_vec();
    let len = dims[dim] / step;
    dims[dim] = len;
    dims.insert(dim + 1, step);
    x.contiguous()?.reshape(dims)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// Training-mode BatchNorm fused with its activation. Returns the output, the batch mean and the biased batch
/// variance (for the running statistics).
pub(crate) fn batch_norm_act_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    act: Act,
    eps: f64,
    ops: Ops,
) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    #[cfg(feature = "cuda")]
    if ops.fused_on(x) && x.device().is_cuda() {
        return cuda_ops::batch_norm_act_train(x, gamma, beta, act, eps as f32);
    }
    if ops.fused_on(x) {
        let saved = Arc::new(Mutex::new(None));
        let op = BnActTrain { act, eps: eps as f32, saved: saved.clone() };
        let y = x.contiguous()?.apply_op3(gamma, beta, op)?;
        let s = saved
            .lock()
            .map_err(|_| candle_core::Error::Msg("poisoned".into()))?
            .as_ref()
            .map(|s| (s.mean.clone(), s.var.clone()));
        let Some((mean, var)) = s else { bail!("batch norm kernel produced no statistics") };
        let mean = Tensor::from_vec(mean, c, x.device())?;
        let var = Tensor::from_vec(var, c, x.device())?;
        return Ok((y, mean, var));
    }
    let mean = x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?.mean_keepdim(0)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)?.mean_keepdim(0)?;
    let inv_std = (var.clone() + eps)?.sqrt()?.recip()?;
    let z = centered
        .broadcast_mul(&inv_std.broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    Ok((activate(&z, act)?, mean.detach().flatten_all()?, var.detach().flatten_all()?))
}

/// act(x * scale[c] + shift[c]): evaluation-mode BatchNorm with its activation (no gradient).
pub(crate) fn affine_act(x: &Tensor, scale: &Tensor, shift: &Tensor, act: Act, ops: Ops) -> Result<Tensor> {
    let c = x.dim(1)?;
    #[cfg(feature = "cuda")]
    if ops.fused_on(x) && x.device().is_cuda() {
        return cuda_ops::affine_act(x, scale, shift, act);
    }
    if ops.fused_on(x) {
        let op = AffineAct { scale: scale.to_vec1()?, shift: shift.to_vec1()?, act };
        return x.contiguous()?.apply_op1_no_bwd(&op);
    }
    let z = x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?.broadcast_add(&shift.reshape((1, c, 1, 1))?)?;
    activate(&z, act)
}

#[cfg(feature = "cuda")]
mod cuda_ops;

// ---- candle glue -------------------------------------------------------------------------------------------

fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let v = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => bail!("kernel input must be contiguous"),
    }
}

/// Runs `f` on the f32 data of a CPU tensor (made contiguous first).
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(s) => Ok(f(slice(s, layout)?)),
        _ => bail!("kernel needs a CPU tensor"),
    }
}

fn dims4(l: &Layout) -> Result<(usize, usize, usize, usize)> {
    l.shape().dims4()
}

struct DepthwiseConv(dw::Geometry);

impl CustomOp2 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let mut y = vec![0f32; g.out_len()];
        let (x, w) = (slice(s1, l1)?, slice(s2, l2)?);
        timed("dw.forward", || dw::forward(&g, x, w, None, Act::None, &mut y));
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.c, g.out_h(), g.out_w()))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.0;
        let y = crate::kernels::cuda::depthwise_forward(&g, (s1, l1), (s2, l2))?;
        Ok((y, Shape::from((g.n, g.c, g.out_h(), g.out_w()))))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = grad.apply_op2_no_bwd(w, &DepthwiseInputGrad(self.0))?;
        let dw = x.apply_op2_no_bwd(&grad, &DepthwiseWeightGrad(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

struct DepthwiseInputGrad(dw::Geometry);

impl CustomOp2 for DepthwiseInputGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
        let (gy, w) = (slice(s1, l1)?, slice(s2, l2)?);
        timed("dw.backward_input", || dw::backward_input(&g, gy, w, &mut dx));
        Ok((CpuStorage::F32(dx), Shape::from((g.n, g.c, g.h, g.w))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.0;
        let dx = crate::kernels::cuda::depthwise_input_grad(&g, (s1, l1), (s2, l2))?;
        Ok((dx, Shape::from((g.n, g.c, g.h, g.w))))
    }
}

struct DepthwiseWeightGrad(dw::Geometry);

impl CustomOp2 for DepthwiseWeightGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-weight-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let mut dwt = vec![0f32; g.c * g.k * g.k];
        let (x, gy) = (slice(s1, l1)?, slice(s2, l2)?);
        timed("dw.backward_weight", || dw::backward_weight(&g, x, gy, &mut dwt));
        Ok((CpuStorage::F32(dwt), Shape::from((g.c, 1, g.k, g.k))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let g = self.0;
        let dw = crate::kernels::cuda::depthwise_weight_grad(&g, (s1, l1), (s2, l2))?;
        Ok((dw, Shape::from((g.c, 1, g.k, g.k))))
    }
}

struct BnSaved {
    mean: Vec<f32>,
    var: Vec<f32>,
    inv_std: Vec<f32>,
}

/// Training BatchNorm + activation over (x, gamma, beta). The forward stores the batch statistics in
/// `saved`, where the caller reads them for the running averages and the backward reads inv_std.
struct BnActTrain {
    act: Act,
    eps: f32,
    saved: Arc<Mutex<Option<BnSaved>>>,
}

impl CustomOp3 for BnActTrain {
    fn name(&self) -> &'static str {
        "batch-norm-act-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l1)?;
        let d = bn::Dims { n, c, hw: h * w };
        let mut y = vec![0f32; n * c * h * w];
        let mut inv_std = vec![0f32; c];
        let (x, g, b) = (slice(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        let (mean, var) =
            timed("bn.train_forward", || bn::train_forward(&d, x, g, b, self.act, self.eps, &mut y, &mut inv_std));
        let mut saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
        *saved = Some(BnSaved { mean, var, inv_std });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let d = bn::Dims { n, c, hw: h * w };
        let (mean, inv_std) = {
            let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned".into()))?;
            // The caller took the statistics after the forward; recompute them if so.
            match saved.as_ref() {
                Some(s) => (s.mean.clone(), s.inv_std.clone()),
                None => {
                    let (m, v) = with_data(x, |xs| bn::batch_stats(&d, xs))?;
                    (m, v.iter().map(|v| 1.0 / (v + self.eps).sqrt()).collect())
                }
            }
        };
        let g = gamma.to_vec1::<f32>()?;
        let b = beta.to_vec1::<f32>()?;
        let mut dx = vec![0f32; n * c * h * w];
        let mut dg = vec![0f32; c];
        let mut db = vec![0f32; c];
        with_data(x, |xs| {
            with_data(grad, |gs| {
                timed("bn.train_backward", || {
                    bn::train_backward(&d, xs, gs, &g, &b, &mean, &inv_std, self.act, &mut dx, &mut dg, &mut db)
                })
            })
        })??;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, (n, c, h, w), dev)?),
            Some(Tensor::from_vec(dg, c, dev)?),
            Some(Tensor::from_vec(db, c, dev)?),
        ))
    }
}

struct AffineAct {
    scale: Vec<f32>,
    shift: Vec<f32>,
    act: Act,
}

impl CustomOp1 for AffineAct {
    fn name(&self) -> &'static str {
        "affine-act"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = dims4(l)?;
        let mut y = vec![0f32; n * c * h * w];
        bn::affine_act(&bn::Dims { n, c, hw: h * w }, slice(s, l)?, &self.scale, &self.shift, self.act, &mut y);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}
