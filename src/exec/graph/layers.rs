//! The building blocks of MobileNetV3 as small modules over the parameters of a [`ParamStore`].
//!
//! Each block runs in one of two modes: evaluation (BatchNorm uses running statistics) or training (batch
//! statistics, running statistics updated with momentum 0.1 as PyTorch does).

use crate::exec::graph::ops::{self, Ops};
use crate::kernels::Act;
use crate::model::arch::{Activation, BottleneckSpec, BN_EPS};
use crate::model::names::{BnNames, BottleneckNames, ConvBnNames, SqueezeExciteNames};
use crate::model::params::{update_running_stats, ParamStore};
use candle_core::{Result, Tensor, Var, D};

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
    pub(crate) fn is_train(self) -> bool {
        matches!(self, Mode::Train { .. })
    }
}

pub struct BatchNorm {
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    batches_tracked: Var,
    /// The evaluation scale and shift, computed once by [`BatchNorm::freeze`] for a model that only infers.
    frozen: Option<(Tensor, Tensor)>,
}

impl BatchNorm {
    pub fn new(p: &ParamStore, names: &BnNames) -> Self {
        BatchNorm {
            weight: p.var(&names.weight).clone(),
            bias: p.var(&names.bias).clone(),
            running_mean: p.var(&names.running_mean).clone(),
            running_var: p.var(&names.running_var).clone(),
            batches_tracked: p.var(&names.num_batches_tracked).clone(),
            frozen: None,
        }
    }

    /// Computes the evaluation scale and shift now, once, instead of at every evaluation forward (on a GPU
    /// each is a handful of tiny launches per layer). For models that only infer from now on: a training-mode
    /// forward afterwards is refused, since it would leave the frozen values stale.
    pub(crate) fn freeze(&mut self) -> Result<()> {
        self.frozen = Some(self.eval_affine()?);
        Ok(())
    }

    /// Per-channel scale and shift that the running statistics give: y = x * scale + shift.
    pub(crate) fn eval_affine(&self) -> Result<(Tensor, Tensor)> {
        let scale = (self.weight.as_tensor() / (self.running_var.as_tensor() + BN_EPS)?.sqrt()?)?;
        let shift = (self.bias.as_tensor() - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// act(BN(x)): batch statistics (and a running-statistics update) in training, running ones in evaluation.
    pub fn forward(&self, x: &Tensor, mode: Mode, act: Act, o: Ops) -> Result<Tensor> {
        if !mode.is_train() {
            if let Some((scale, shift)) = &self.frozen {
                return ops::affine_act(x, scale, shift, act, o);
            }
            let (scale, shift) = self.eval_affine()?;
            return ops::affine_act(x, &scale, &shift, act, o);
        }
        if self.frozen.is_some() {
            candle_core::bail!("this model was frozen for inference; it cannot run a training step");
        }
        let (n, _, h, w) = x.dims4()?;
        let (gamma, beta) = (self.weight.as_tensor(), self.bias.as_tensor());
        let (y, mean, var) = ops::batch_norm_act_train(x, gamma, beta, act, BN_EPS, o)?;
        update_running_stats(
            [&self.running_mean, &self.running_var, &self.batches_tracked],
            &mean,
            &var,
            (n * h * w) as f64,
        )?;
        Ok(y)
    }
}

/// The kernel activation for a table activation (None: no activation).
pub(crate) fn kernel_act(act: Option<Activation>) -> Act {
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
    pub fn new(p: &ParamStore, names: &ConvBnNames, stride: usize, groups: usize, act: Option<Activation>) -> Self {
        let weight = p.var(&names.weight).clone();
        let k = weight.dims()[2];
        ConvBn { weight, bn: BatchNorm::new(p, &names.bn), stride, padding: (k - 1) / 2, groups, act }
    }

    pub fn forward(&self, x: &Tensor, mode: Mode, o: Ops) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let y = if self.groups > 1 {
            ops::depthwise_conv2d(x, w, self.stride, self.padding, o)?
        } else if w.dims()[2] == 1 && self.stride == 1 {
            ops::pointwise_conv2d(x, w)?
        } else {
            x.conv2d(w, self.padding, self.stride, 1, 1)?
        };
        self.bn.forward(&y, mode, kernel_act(self.act), o)
    }

    pub(crate) fn freeze(&mut self) -> Result<()> {
        self.bn.freeze()
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
    pub fn new(p: &ParamStore, names: &SqueezeExciteNames) -> Self {
        SqueezeExcite {
            reduce_w: p.tensor(&names.reduce.weight),
            reduce_b: p.tensor(&names.reduce.bias),
            expand_w: p.tensor(&names.expand.weight),
            expand_b: p.tensor(&names.expand.bias),
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
    pub fn new(p: &ParamStore, names: &BottleneckNames, spec: &BottleneckSpec) -> Self {
        Bottleneck {
            spec: spec.clone(),
            expand: ConvBn::new(p, &names.expand, 1, 1, Some(spec.act)),
            depthwise: ConvBn::new(p, &names.depthwise, spec.stride, spec.expanded, Some(spec.act)),
            se: spec.squeeze_excite.then(|| SqueezeExcite::new(p, &names.squeeze_excite)),
            project: ConvBn::new(p, &names.project, 1, 1, None),
        }
    }

    pub fn forward(&self, x: &Tensor, mode: Mode, o: Ops) -> Result<Tensor> {
        let mut y = self.depthwise.forward(&self.expand.forward(x, mode, o)?, mode, o)?;
        if let Some(se) = &self.se {
            y = se.forward(&y)?;
        }
        let y = self.project.forward(&y, mode, o)?;
        if self.spec.residual() {
            y + x
        } else {
            Ok(y)
        }
    }

    pub(crate) fn freeze(&mut self) -> Result<()> {
        self.expand.freeze()?;
        self.depthwise.freeze()?;
        self.project.freeze()
    }
}
