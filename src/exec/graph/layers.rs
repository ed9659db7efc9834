//! The building blocks of MobileNetV3 as small modules over the parameters of a [`ParamStore`].
//!
//! Each block runs in one of two modes: evaluation (BatchNorm uses running statistics) or training (batch
//! statistics, running statistics updated with momentum 0.1 as PyTorch does).

use crate::exec::graph::ops;
use crate::kernels::Act;
use crate::model::arch::{Activation, BottleneckSpec};
use crate::model::params::ParamStore;
use candle_core::{DType, Result, Tensor, Var, D};

/// PyTorch's BatchNorm2d defaults.
pub const BN_EPS: f64 = 1e-5;
pub const BN_MOMENTUM: f64 = 0.1;

/// How a forward pass runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Eval,
    /// Batch statistics, running-statistics updates, and dropout with masks drawn from `seed`.
    Train {
        seed: u64,
    },
}

impl Mode {
    pub fn is_train(self) -> bool {
        matches!(self, Mode::Train { .. })
    }
}

pub struct BatchNorm {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    batches_tracked: Var,
}

impl BatchNorm {
    pub fn new(p: &ParamStore, prefix: &str) -> Self {
        BatchNorm {
            weight: p.var(&format!("{prefix}.weight")).clone(),
            bias: p.var(&format!("{prefix}.bias")).clone(),
            running_mean: p.var(&format!("{prefix}.running_mean")).clone(),
            running_var: p.var(&format!("{prefix}.running_var")).clone(),
            batches_tracked: p.var(&format!("{prefix}.num_batches_tracked")).clone(),
        }
    }

    /// Per-channel scale and shift that the running statistics give: y = x * scale + shift.
    pub fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = (self.weight.as_tensor() / (self.running_var.as_tensor() + BN_EPS)?.sqrt()?)?;
        let shift = (self.bias.as_tensor() - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// act(BN(x)): batch statistics (and a running-statistics update) in training, running ones in evaluation.
    pub fn forward(&self, x: &Tensor, mode: Mode, act: Act) -> Result<Tensor> {
        if !mode.is_train() {
            let (scale, shift) = self.eval_affine()?;
            return ops::affine_act(x, &scale, &shift, act);
        }
        let (n, _, h, w) = x.dims4()?;
        let (y, mean, var) = ops::batch_norm_act_train(x, self.weight.as_tensor(), self.bias.as_tensor(), act, BN_EPS)?;
        self.update_running(&mean, &var, (n * h * w) as f64)?;
        Ok(y)
    }

    /// running = (1 - m) running + m batch, with the unbiased batch variance (as PyTorch).
    pub fn update_running(&self, mean: &Tensor, biased_var: &Tensor, count: f64) -> Result<()> {
        let m = BN_MOMENTUM;
        let unbiased = if count > 1.0 { (biased_var * (count / (count - 1.0)))? } else { biased_var.clone() };
        self.running_mean.set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var.set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
        let one = Tensor::ones((), DType::I64, self.batches_tracked.device())?;
        self.batches_tracked.set(&(self.batches_tracked.as_tensor() + one)?)?;
        Ok(())
    }
}

/// The kernel activation for a table activation (None: no activation).
pub fn kernel_act(act: Option<Activation>) -> Act {
    act.map(Act::from).unwrap_or(Act::None)
}

/// Convolution (no bias) + BatchNorm + optional activation: the stem, the bottlenecks' three convolutions and
/// the last 1x1 convolution.
pub struct ConvBn {
    weight: Var,
    bn: BatchNorm,
    stride: usize,
    padding: usize,
    groups: usize,
    act: Option<Activation>,
}

impl ConvBn {
    pub fn new(p: &ParamStore, prefix: &str, stride: usize, groups: usize, act: Option<Activation>) -> Self {
        let weight = p.var(&format!("{prefix}.0.weight")).clone();
        let k = weight.dims()[2];
        ConvBn { weight, bn: BatchNorm::new(p, &format!("{prefix}.1")), stride, padding: (k - 1) / 2, groups, act }
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let y = if self.groups > 1 {
            ops::depthwise_conv2d(x, w, self.stride, self.padding)?
        } else if w.dims()[2] == 1 && self.stride == 1 {
            ops::pointwise_conv2d(x, w)?
        } else {
            x.conv2d(w, self.padding, self.stride, 1, 1)?
        };
        self.bn.forward(&y, mode, kernel_act(self.act))
    }
}

/// Squeeze-and-excite: global average pool, 1x1 C->C/4 + ReLU, 1x1 C/4->C + hard-sigmoid, scale the input.
pub struct SqueezeExcite {
    reduce_w: Tensor,
    reduce_b: Tensor,
    expand_w: Tensor,
    expand_b: Tensor,
}

impl SqueezeExcite {
    pub fn new(p: &ParamStore, prefix: &str) -> Self {
        SqueezeExcite {
            reduce_w: p.tensor(&format!("{prefix}.conv_0.1.weight")),
            reduce_b: p.tensor(&format!("{prefix}.conv_0.1.bias")),
            expand_w: p.tensor(&format!("{prefix}.conv_1.0.weight")),
            expand_b: p.tensor(&format!("{prefix}.conv_1.0.bias")),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let pooled = x.mean(D::Minus1)?.mean(D::Minus1)?; // (n, c)
        let s = ops::linear(&pooled, &self.reduce_w, &self.reduce_b)?.relu()?;
        let gate = ops::hard_sigmoid(&ops::linear(&s, &self.expand_w, &self.expand_b)?)?;
        x.broadcast_mul(&gate.reshape((n, c, 1, 1))?)
    }
}

/// The inverted-residual bottleneck of MobileNetV3.
pub struct Bottleneck {
    pub spec: BottleneckSpec,
    expand: ConvBn,
    depthwise: ConvBn,
    se: Option<SqueezeExcite>,
    project: ConvBn,
}

impl Bottleneck {
    pub fn new(p: &ParamStore, prefix: &str, spec: &BottleneckSpec) -> Self {
        Bottleneck {
            spec: spec.clone(),
            expand: ConvBn::new(p, &format!("{prefix}.pointwise_0"), 1, 1, Some(spec.act)),
            depthwise: ConvBn::new(p, &format!("{prefix}.depthwise_1"), spec.stride, spec.expanded, Some(spec.act)),
            se: spec.squeeze_excite.then(|| SqueezeExcite::new(p, &format!("{prefix}.se_block"))),
            project: ConvBn::new(p, &format!("{prefix}.pointwise_2"), 1, 1, None),
        }
    }

    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut y = self.depthwise.forward(&self.expand.forward(x, mode)?, mode)?;
        if let Some(se) = &self.se {
            y = se.forward(&y)?;
        }
        let y = self.project.forward(&y, mode)?;
        if self.spec.residual() {
            y + x
        } else {
            Ok(y)
        }
    }
}
