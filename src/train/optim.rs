//! SGD with momentum, weight decay and Nesterov, with PyTorch's update rule so that recipes carry over:
//! g = grad + wd * p; buf = momentum * buf + g (buf = g on the first step); p -= lr * (nesterov ? g + momentum * buf : buf).

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, InplaceOp3, Layout, Result, Tensor, Var};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SgdConfig {
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: 0.0, nesterov: false }
    }
}

pub struct Sgd {
    pub config: SgdConfig,
    params: Vec<(String, Var)>,
    /// Each parameter's learning rate as a multiple of `config.lr` (1 unless [`Sgd::scale_lr`] said otherwise).
    lr_factor: Vec<f64>,
    /// Momentum buffers, created on the first step of each parameter.
    momentum: Vec<Option<Var>>,
    /// Update CUDA parameters in place with our kernels (off until they have passed on a GPU).
    cuda_kernels: bool,
}

impl Sgd {
    pub fn new(params: Vec<(String, Var)>, config: SgdConfig) -> Self {
        let momentum = vec![None; params.len()];
        let lr_factor = vec![1.0; params.len()];
        Sgd { config, params, lr_factor, momentum, cuda_kernels: false }
    }

    /// Gives the parameters whose names `which` picks `factor` times the learning rate (fine-tuning trains the
    /// backbone more gently than the new classifier).
    pub(crate) fn scale_lr(&mut self, which: impl Fn(&str) -> bool, factor: f64) {
        for ((name, _), f) in self.params.iter().zip(self.lr_factor.iter_mut()) {
            if which(name) {
                *f = factor;
            }
        }
    }

    /// Updates parameters on CUDA in place with our two kernels instead of five tensor operations.
    pub(crate) fn use_cuda_kernels(&mut self, on: bool) {
        self.cuda_kernels = on;
    }

    pub(crate) fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Applies one update from the gradients of a backward pass. Parameters without a gradient are skipped.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.step_with(grads, true)
    }

    /// [`step`](Self::step); `in_place`: update CPU parameters and momentum buffers in place, two passes over
    /// each (otherwise five tensor operations, each allocating its result).
    fn step_with(&mut self, grads: &GradStore, in_place: bool) -> Result<()> {
        let c = self.config.clone();
        for (((_, p), buf), &factor) in self.params.iter().zip(self.momentum.iter_mut()).zip(&self.lr_factor) {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
            let c = SgdConfig { lr: self.config.lr * factor, ..c.clone() };
            let kernels = p.device().is_cpu() || (self.cuda_kernels && p.device().is_cuda());
            if let (true, Some(b)) = (in_place && c.momentum != 0.0 && kernels, buf.as_ref()) {
                let (m, wd, lr) = (c.momentum as f32, c.weight_decay as f32, c.lr as f32);
                b.as_tensor().inplace_op3(g, p.as_tensor(), &MomentumUpdate { momentum: m, weight_decay: wd })?;
                let update = ParamUpdate { lr, momentum: m, weight_decay: wd, nesterov: c.nesterov };
                p.as_tensor().inplace_op3(b.as_tensor(), g, &update)?;
                continue;
            }
            let mut g = g.clone();
            if c.weight_decay != 0.0 {
                g = (g + (p.as_tensor() * c.weight_decay)?)?;
            }
            let update = if c.momentum != 0.0 {
                let b = match buf {
                    Some(b) => {
                        let next = ((b.as_tensor() * c.momentum)? + &g)?;
                        b.set(&next)?;
                        b.as_tensor().clone()
                    }
                    None => {
                        let v = Var::from_tensor(&g.copy()?)?;
                        let t = v.as_tensor().clone();
                        *buf = Some(v);
                        t
                    }
                };
                if c.nesterov {
                    (g + (b * c.momentum)?)?
                } else {
                    b
                }
            } else {
                g
            };
            p.set(&(p.as_tensor() - (update * c.lr)?)?)?;
        }
        Ok(())
    }

    /// Momentum buffers by parameter name (for checkpoints that resume).
    pub fn state(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .zip(&self.momentum)
            .filter_map(|((n, _), b)| b.as_ref().map(|b| (format!("momentum.{n}"), b.as_tensor().clone())))
            .collect()
    }

    /// Restores momentum buffers saved by [`Sgd::state`].
    pub(crate) fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for ((n, p), buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            if let Some(t) = state.get(&format!("momentum.{n}")) {
                let t = t.to_device(p.device())?.to_dtype(p.dtype())?.reshape(p.shape())?;
                *buf = Some(Var::from_tensor(&t.copy()?)?);
            }
        }
        Ok(())
    }
}

/// The elements of a contiguous f32 CPU tensor.
fn f32s<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expects contiguous f32 tensors"),
    }
}

/// The three operands of an in-place SGD op as slices of one length: the one updated, then the two read.
fn operands<'a>(
    op: &str,
    (s1, l1): (&'a mut CpuStorage, &Layout),
    (s2, l2): (&'a CpuStorage, &Layout),
    (s3, l3): (&'a CpuStorage, &Layout),
) -> Result<(&'a mut [f32], &'a [f32], &'a [f32])> {
    let (x, y) = (f32s(s2, l2, op)?, f32s(s3, l3, op)?);
    let (CpuStorage::F32(v), Some((a, b))) = (s1, l1.contiguous_offsets()) else {
        candle_core::bail!("{op}: expects contiguous f32 tensors")
    };
    let dst = &mut v[a..b];
    if dst.len() != x.len() || dst.len() != y.len() {
        candle_core::bail!("{op}: shapes differ");
    }
    Ok((dst, x, y))
}

/// In place on the momentum buffer: buf = momentum * buf + (g + weight_decay * p).
struct MomentumUpdate {
    momentum: f32,
    weight_decay: f32,
}

impl InplaceOp3 for MomentumUpdate {
    fn name(&self) -> &'static str {
        "sgd-momentum"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (buf, g, p) = operands(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let (m, wd) = (self.momentum, self.weight_decay);
        for ((b, g), p) in buf.iter_mut().zip(g).zip(p) {
            *b = *b * m + (g + p * wd);
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<()> {
        let k = crate::kernels::cuda::SgdKernel::Momentum { momentum: self.momentum, weight_decay: self.weight_decay };
        crate::kernels::cuda::sgd_in_place(&k, (s1, l1), (s2, l2), (s3, l3))
    }
}

/// In place on the parameter: p -= lr * (nesterov ? (g + weight_decay * p) + momentum * buf : buf).
struct ParamUpdate {
    lr: f32,
    momentum: f32,
    weight_decay: f32,
    nesterov: bool,
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "sgd-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<()> {
        let (p, buf, g) = operands(self.name(), (s1, l1), (s2, l2), (s3, l3))?;
        let (lr, m, wd) = (self.lr, self.momentum, self.weight_decay);
        for ((p, b), g) in p.iter_mut().zip(buf).zip(g) {
            let update = if self.nesterov { (g + *p * wd) + b * m } else { *b };
            *p -= update * lr;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &mut candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<()> {
        let k = crate::kernels::cuda::SgdKernel::Update {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        };
        crate::kernels::cuda::sgd_in_place(&k, (s1, l1), (s2, l2), (s3, l3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// The in-place update follows the tensor-operation one (PyTorch's rule) over several steps.
    #[test]
    fn in_place_step_matches_the_tensor_operations() -> Result<()> {
        for (wd, nesterov) in [(0.0, false), (5e-4, false), (5e-4, true)] {
            let config = SgdConfig { lr: 0.1, momentum: 0.9, weight_decay: wd, nesterov };
            let init = Tensor::randn(0f32, 1.0, (7, 5), &Device::Cpu)?;
            let (a, b) = (Var::from_tensor(&init.copy()?)?, Var::from_tensor(&init.copy()?)?);
            let mut fast = Sgd::new(vec![("w".into(), a.clone())], config.clone());
            let mut slow = Sgd::new(vec![("w".into(), b.clone())], config);
            for step in 0..4 {
                let g = Tensor::randn(0f32, 1.0, (7, 5), &Device::Cpu)?;
                let (la, lb) = ((a.as_tensor() * &g)?.sum_all()?, (b.as_tensor() * &g)?.sum_all()?);
                fast.step_with(&la.backward()?, true)?;
                slow.step_with(&lb.backward()?, false)?;
                let diff = (a.as_tensor() - b.as_tensor())?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert!(diff < 1e-6, "step {step} wd {wd} nesterov {nesterov}: {diff}");
            }
        }
        Ok(())
    }

    /// A parameter given a learning-rate factor moves by that fraction of what its neighbour moves.
    #[test]
    fn a_scaled_parameter_takes_that_share_of_the_step() -> Result<()> {
        let config = SgdConfig { lr: 0.5, momentum: 0.9, weight_decay: 0.0, nesterov: false };
        let (head, body) = (Var::new(&[1f32, 2.0], &Device::Cpu)?, Var::new(&[1f32, 2.0], &Device::Cpu)?);
        let mut sgd = Sgd::new(vec![("head".into(), head.clone()), ("body".into(), body.clone())], config);
        sgd.scale_lr(|n| n == "body", 0.1);
        let loss = (head.as_tensor().sum_all()? + body.as_tensor().sum_all()?)?;
        sgd.step(&loss.backward()?)?;
        assert_eq!(head.as_tensor().to_vec1::<f32>()?, vec![0.5, 1.5]);
        let moved: Vec<f32> = body.as_tensor().to_vec1::<f32>()?;
        assert!((moved[0] - 0.95).abs() < 1e-6 && (moved[1] - 1.95).abs() < 1e-6, "{moved:?}");
        Ok(())
    }
}
