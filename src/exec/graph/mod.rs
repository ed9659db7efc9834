//! MobileNetV3 as a candle module, built from an [`ArchSpec`] over the tensors of a [`ParamStore`]: the
//! graph executor. Its layers are in [`layers`], the custom ops that give them our CPU kernels in [`ops`].

pub mod layers;
pub mod ops;

use crate::exec::inference::InferencePlan;
use crate::model::arch::{Activation, ArchSpec, ModelConfig};
use crate::model::params::ParamStore;
use candle_core::{Device, Result, Tensor, D};
use layers::{Bottleneck, ConvBn, Mode};

pub struct MobileNetV3 {
    config: ModelConfig,
    spec: ArchSpec,
    params: ParamStore,
    stem: ConvBn,
    blocks: Vec<Bottleneck>,
    last: ConvBn,
    hidden_w: Tensor,
    hidden_b: Tensor,
    classifier_w: Tensor,
    classifier_b: Tensor,
}

impl MobileNetV3 {
    /// A freshly initialised network.
    pub fn new(config: &ModelConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new_with(config, device, seed, crate::model::params::Init::default())
    }

    /// A freshly initialised network, weights drawn as `init` says.
    pub fn new_with(
        config: &ModelConfig,
        device: &Device,
        seed: u64,
        init: crate::model::params::Init,
    ) -> Result<Self> {
        let spec = config.spec();
        let params = ParamStore::init_with(&spec, device, seed, init)?;
        Ok(Self::from_params(config, params))
    }

    /// Builds the network over existing parameters (from a weight file).
    pub fn from_params(config: &ModelConfig, params: ParamStore) -> Self {
        let spec = config.spec();
        let stem = ConvBn::new(&params, "conv_0", spec.initial_stride, 1, Some(Activation::HardSwish));
        let blocks = spec
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| Bottleneck::new(&params, &format!("bottlenecks_1.{i}"), b))
            .collect();
        let last = ConvBn::new(&params, "conv_2", 1, 1, Some(Activation::HardSwish));
        MobileNetV3 {
            config: config.clone(),
            hidden_w: params.tensor("conv_3.1.weight"),
            hidden_b: params.tensor("conv_3.1.bias"),
            classifier_w: params.tensor("conv_4.weight"),
            classifier_b: params.tensor("conv_4.bias"),
            spec,
            params,
            stem,
            blocks,
            last,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn spec(&self) -> &ArchSpec {
        &self.spec
    }

    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    pub fn device(&self) -> &Device {
        self.params.device()
    }

    /// Logits (n, classes) for normalised images (n, 3, h, w).
    pub fn forward(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let mut x = self.stem.forward(x, mode)?;
        for b in &self.blocks {
            x = b.forward(&x, mode)?;
        }
        let x = self.last.forward(&x, mode)?;
        let pooled = x.mean(D::Minus1)?.mean(D::Minus1)?;
        let mut h = ops::hard_swish(&ops::linear(&pooled, &self.hidden_w, &self.hidden_b)?)?;
        if let Mode::Train { seed } = mode {
            h = dropout(&h, self.config.dropout, seed)?;
        }
        ops::linear(&h, &self.classifier_w, &self.classifier_b)
    }
}

/// Inverted dropout with a mask drawn from `seed`, so that a training run is reproducible.
fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    match crate::exec::train_step::dropout_mask(x.elem_count(), p, seed) {
        Some(mask) => x * Tensor::from_vec(mask, x.shape(), x.device())?,
        None => Ok(x.clone()),
    }
}

impl MobileNetV3 {
    /// Changes the dropout probability used in training mode (0 turns it off).
    pub fn set_dropout(&mut self, p: f32) {
        self.config.dropout = p;
    }
}

/// The network prepared for inference: on the CPU a folded, fused [`InferencePlan`]; elsewhere the eval-mode
/// graph.
pub struct InferenceModel<'a> {
    model: &'a MobileNetV3,
    plan: Option<InferencePlan>,
}

impl MobileNetV3 {
    pub fn inference(&self) -> Result<InferenceModel<'_>> {
        let plan = if self.device().is_cpu() { Some(InferencePlan::new(self)?) } else { None };
        Ok(InferenceModel { model: self, plan })
    }
}

impl InferenceModel<'_> {
    /// Logits (n, classes) for normalised images (n, 3, h, h).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.plan {
            Some(plan) => {
                let (n, _, h, _) = x.dims4()?;
                let data = x.flatten_all()?.to_vec1::<f32>()?;
                let logits = plan.forward(&data, n, h);
                Tensor::from_vec(logits, (n, self.model.config().num_classes), x.device())
            }
            None => self.model.forward(x, Mode::Eval),
        }
    }
}
