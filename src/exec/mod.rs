//! The three ways the network runs, over the same [`crate::model`] description and the same
//! [`crate::kernels`]:
//!
//! - [`graph`]: candle modules with autograd. Runs on every device (CUDA included); the parity tests run it
//!   against PyTorch. Slow on the CPU: each op is a separate pass over memory.
//! - [`train_step`]: the hand-written CPU training step (forward, loss, backward, in per-image phases that keep
//!   a block's activations in cache), 3-4x PyTorch's speed. Same numbers as the graph (tests/parity.rs).
//! - [`inference`]: the CPU inference plan: BatchNorm folded into the convolutions, activations fused.
//!
//! Why three: the graph is the portable, obviously-correct reference; the other two are what make the CPU fast.

pub mod graph;
pub mod inference;
pub mod train_step;

use crate::exec::graph::layers::Mode;
use crate::exec::graph::MobileNetV3;
use crate::exec::inference::InferencePlan;
use crate::kernels::Act;
use crate::model::arch::Activation;
use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, D};
use std::borrow::Borrow;

/// What the network is run for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Train,
    Infer,
}

/// One of the three executors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    Graph,
    TrainStep,
    InferencePlan,
}

/// The one place that decides which executor runs a purpose on a device: the hand-written paths on the CPU,
/// the graph everywhere else.
pub(crate) fn choose(device: &Device, purpose: Purpose) -> Executor {
    match (device.is_cpu(), purpose) {
        (true, Purpose::Train) => Executor::TrainStep,
        (true, Purpose::Infer) => Executor::InferencePlan,
        (false, _) => Executor::Graph,
    }
}

/// A network ready for inference with the executor [`choose`] picks for its device. `M` is the model, owned
/// ([`crate::classify::Classifier`]) or borrowed (evaluation of a model in training).
pub enum Inference<M: Borrow<MobileNetV3>> {
    Plan { plan: Box<InferencePlan>, classes: usize },
    Graph(M),
}

impl Inference<MobileNetV3> {
    /// Inference for a model that will do nothing else: off the CPU its BatchNorms are frozen
    /// ([`MobileNetV3::freeze_batch_norm`]), so an evaluation forward does no per-layer BatchNorm arithmetic.
    pub fn only(mut model: MobileNetV3) -> Result<Self> {
        if choose(model.device(), Purpose::Infer) == Executor::Graph {
            model.freeze_batch_norm()?;
        }
        Self::new(model)
    }
}

impl<M: Borrow<MobileNetV3>> Inference<M> {
    pub fn new(model: M) -> Result<Self> {
        let m = model.borrow();
        Ok(match choose(m.device(), Purpose::Infer) {
            Executor::InferencePlan => Inference::Plan {
                plan: Box::new(InferencePlan::new(m.spec(), m.params())?),
                classes: m.spec().num_classes,
            },
            _ => Inference::Graph(model),
        })
    }

    /// Logits (n x classes, row-major) for n normalised images of `side` x `side` on the host.
    pub fn logits(&self, x: &[f32], n: usize, side: usize) -> Result<Vec<f32>> {
        match self {
            Inference::Plan { plan, .. } => Ok(plan.forward(x, n, side)),
            Inference::Graph(model) => {
                let model = model.borrow();
                let t = Tensor::from_slice(x, (n, 3, side, side), model.device())?;
                model.forward(&t, Mode::Eval)?.flatten_all()?.to_vec1::<f32>()
            }
        }
    }

    /// Logits (n, classes) for normalised images (n, 3, h, h) on the model's device.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Inference::Plan { plan, classes } => {
                let (n, _, h, _) = x.dims4()?;
                let data = x.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(plan.forward(&data, n, h), (n, *classes), x.device())
            }
            Inference::Graph(model) => model.borrow().forward(x, Mode::Eval),
        }
    }
}

/// What one training step produced, whichever executor ran it.
pub struct Step {
    pub loss: f32,
    /// The arg-max class of each image.
    pub predictions: Vec<u32>,
    /// Gradients of the trainable parameters, keyed by their `Var`s (ready for the optimizer).
    pub grads: GradStore,
}

/// One training step of `model` (forward in train mode, cross-entropy with label smoothing, backward) on n
/// normalised images of `side` x `side`, with `executor` (normally [`choose`]`(device, Purpose::Train)`; the
/// benchmarks pick the graph on the CPU to compare). Running statistics are updated in the model's store.
pub fn train_step(
    model: &MobileNetV3,
    executor: Executor,
    images: Vec<f32>,
    side: usize,
    labels: &[u32],
    smoothing: f32,
    dropout_seed: u64,
) -> Result<Step> {
    if executor == Executor::TrainStep && model.device().is_cpu() {
        let out = train_step::train_step(model.spec(), model.params(), images, side, labels, smoothing, dropout_seed)?;
        let classes = model.spec().num_classes;
        let predictions = out.logits.chunks(classes).map(|r| argmax(r) as u32).collect();
        return Ok(Step { loss: out.loss, predictions, grads: out.grads });
    }
    let dev = model.device();
    let x = Tensor::from_vec(images, (labels.len(), 3, side, side), dev)?;
    let y = Tensor::new(labels, dev)?;
    let logits = model.forward(&x, Mode::Train { seed: dropout_seed })?;
    let loss = graph::cross_entropy(&logits, &y, smoothing as f64)?;
    let predictions = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    Ok(Step { loss: loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?, predictions, grads: loss.backward()? })
}

/// The kernel activation for an architecture's: the conversion lives here, where the two meet, so that the
/// kernels know nothing of the model.
impl From<Activation> for Act {
    fn from(a: Activation) -> Act {
        match a {
            Activation::Relu => Act::Relu,
            Activation::HardSwish => Act::HardSwish,
        }
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::{ModelConfig, Variant};
    use crate::model::params::{Init, ParamStore};

    /// Output buffers are reused from one step to the next (`kernels::output_buffer`), so they hold the last
    /// step's numbers when a kernel gets them: every kernel must overwrite them in full. Two identical steps,
    /// the second on reused buffers, must agree to the bit, and so must two forward passes.
    #[test]
    fn reused_buffers_change_no_result() {
        let config = ModelConfig::new(Variant::Small, 0.25);
        let spec = config.spec();
        let store = |seed| ParamStore::init_with(&spec, &Device::Cpu, seed, Init::Torch).unwrap();
        let (n, side) = (4, 32);
        let x: Vec<f32> = (0..n * 3 * side * side).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
        let labels = [3u32, 14, 15, 92];
        // Something else first, so that the pool holds other numbers.
        let other = store(9);
        train_step::train_step(&spec, &other, x.iter().map(|v| -v).collect(), side, &labels, 0.1, 5).unwrap();
        let (a, b) = (store(1), store(1));
        let first = train_step::train_step(&spec, &a, x.clone(), side, &labels, 0.1, 7).unwrap();
        let second = train_step::train_step(&spec, &b, x.clone(), side, &labels, 0.1, 7).unwrap();
        assert_eq!(first.loss.to_bits(), second.loss.to_bits());
        assert_eq!(first.logits, second.logits);
        for ((name, va), (_, vb)) in a.trainable().iter().zip(b.trainable().iter()) {
            let ga = first.grads.get(va.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gb = second.grads.get(vb.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(ga, gb, "gradient of {name}");
        }
        let plan = inference::InferencePlan::new(&spec, &a).unwrap();
        let (p1, p2) = (plan.forward(&x, n, side), plan.forward(&x, n, side));
        assert_eq!(p1, p2);
        assert_eq!(plan.forward_in_groups(&x, n, side, 1), plan.forward_in_groups(&x, n, side, 1));
    }
}
