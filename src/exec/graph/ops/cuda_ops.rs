//! The graph's BatchNorm ops over our CUDA kernels (`crate::kernels::cuda`). Unlike the CPU op, which keeps
//! the batch statistics on the host, everything stays on the device: the statistics are a (3, c) tensor
//! (mean, biased variance, 1/sqrt(var + eps)) that the apply op and its backward read.

use crate::kernels::cuda::{self as k, BnDims};
use crate::kernels::Act;
use candle_core::{
    bail, CpuStorage, CudaStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor,
};

/// Training BatchNorm + activation: (output, batch mean, biased batch variance), as the CPU op returns.
pub(crate) fn batch_norm_act_train(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    act: Act,
    eps: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let x = x.contiguous()?;
    let (n, c, h, w) = x.dims4()?;
    let d = BnDims { n, c, hw: h * w };
    let stats = x.apply_op1_no_bwd(&BnStats { d, eps })?;
    let y = x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, BnApply { d, act, stats: stats.clone() })?;
    Ok((y, stats.get(0)?, stats.get(1)?))
}

/// Evaluation BatchNorm + activation: act(x * scale[c] + shift[c]), no gradient.
pub(crate) fn affine_act(x: &Tensor, scale: &Tensor, shift: &Tensor, act: Act) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (n, c, h, w) = x.dims4()?;
    let op = AffineAct { d: BnDims { n, c, hw: h * w }, scale: scale.contiguous()?, shift: shift.contiguous()?, act };
    x.apply_op1_no_bwd(&op)
}

/// Runs `f` on the CUDA storage of a tensor the op holds (statistics, scale, ...).
fn on_cuda<R>(t: &Tensor, f: impl FnOnce((&CudaStorage, &Layout)) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cuda(s) => f((s, layout)),
        _ => bail!("expected a CUDA tensor"),
    }
}

fn cuda_only(op: &str) -> Result<(CpuStorage, Shape)> {
    bail!("{op} runs on CUDA only (the CPU has its own BatchNorm kernels)")
}

struct BnStats {
    d: BnDims,
    eps: f32,
}

impl CustomOp1 for BnStats {
    fn name(&self) -> &'static str {
        "cuda-batch-norm-stats"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        Ok((k::bn_stats(self.d, (s, l), self.eps)?, Shape::from((3, self.d.c))))
    }
}

/// y = act(BN(x)) with the batch statistics; its backward is the two passes of the BatchNorm backward.
struct BnApply {
    d: BnDims,
    act: Act,
    stats: Tensor,
}

impl CustomOp3 for BnApply {
    fn name(&self) -> &'static str {
        "cuda-batch-norm-act-train"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        g: &CudaStorage,
        lg: &Layout,
        b: &CudaStorage,
        lb: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let y = on_cuda(&self.stats, |stats| k::bn_apply(self.d, (x, lx), stats, (g, lg), (b, lb), self.act))?;
        Ok((y, lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (gamma, beta) = (gamma.contiguous()?, beta.contiguous()?);
        let sums = x.apply_op2_no_bwd(
            &grad,
            &BnBackwardSums {
                d: self.d,
                act: self.act,
                stats: self.stats.clone(),
                gamma: gamma.clone(),
                beta: beta.clone(),
            },
        )?;
        let dx = x.apply_op2_no_bwd(
            &grad,
            &BnInputGrad { d: self.d, act: self.act, stats: self.stats.clone(), gamma, beta, sums: sums.clone() },
        )?;
        Ok((Some(dx), Some(sums.get(1)?), Some(sums.get(0)?)))
    }
}

/// (x, dy) -> (2, c): sum of dz (the gradient of beta), sum of dz * x_hat (the gradient of gamma).
struct BnBackwardSums {
    d: BnDims,
    act: Act,
    stats: Tensor,
    gamma: Tensor,
    beta: Tensor,
}

impl CustomOp2 for BnBackwardSums {
    fn name(&self) -> &'static str {
        "cuda-batch-norm-backward-sums"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(&self, x: &CudaStorage, lx: &Layout, dy: &CudaStorage, ldy: &Layout) -> Result<(CudaStorage, Shape)> {
        let sums = on_cuda(&self.stats, |stats| {
            on_cuda(&self.gamma, |gamma| {
                on_cuda(&self.beta, |beta| {
                    k::bn_backward_sums(self.d, (x, lx), (dy, ldy), stats, gamma, beta, self.act)
                })
            })
        })?;
        Ok((sums, Shape::from((2, self.d.c))))
    }
}

/// (x, dy) -> dx, from the backward sums.
struct BnInputGrad {
    d: BnDims,
    act: Act,
    stats: Tensor,
    gamma: Tensor,
    beta: Tensor,
    sums: Tensor,
}

impl CustomOp2 for BnInputGrad {
    fn name(&self) -> &'static str {
        "cuda-batch-norm-input-grad"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(&self, x: &CudaStorage, lx: &Layout, dy: &CudaStorage, ldy: &Layout) -> Result<(CudaStorage, Shape)> {
        let dx = on_cuda(&self.stats, |stats| {
            on_cuda(&self.gamma, |gamma| {
                on_cuda(&self.beta, |beta| {
                    on_cuda(&self.sums, |sums| {
                        k::bn_input_grad(self.d, (x, lx), (dy, ldy), stats, gamma, beta, sums, self.act)
                    })
                })
            })
        })?;
        Ok((dx, lx.shape().clone()))
    }
}

struct AffineAct {
    d: BnDims,
    scale: Tensor,
    shift: Tensor,
    act: Act,
}

impl CustomOp1 for AffineAct {
    fn name(&self) -> &'static str {
        "cuda-affine-act"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(&self, x: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
        let y = on_cuda(&self.scale, |scale| {
            on_cuda(&self.shift, |shift| k::affine_act(self.d, (x, l), scale, shift, self.act))
        })?;
        Ok((y, l.shape().clone()))
    }
}
