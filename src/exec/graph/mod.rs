//! MobileNetV3 as a candle module, built from an [`ArchSpec`] over the tensors of a [`ParamStore`]: the
//! graph executor. Its layers are in [`layers`], the custom ops that give them our CPU kernels in [`ops`].

pub mod layers;
pub mod ops;

use crate::model::arch::{Activation, ArchSpec, ModelConfig};
use crate::model::names;
use crate::model::params::ParamStore;
use crate::model::weights::LoadedModel;
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
    ops: ops::Ops,
}

impl MobileNetV3 {
    /// A freshly initialised network.
    pub fn new(config: &ModelConfig, device: &Device, seed: u64) -> Result<Self> {
        Self::new_with(config, device, seed, crate::model::params::Init::default())
    }

    /// A freshly initialised network, weights drawn as `init` says.
    pub(crate) fn new_with(
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
        let params_device = params.device().clone();
        let stem = ConvBn::new(&params, &names::stem(), spec.initial_stride, 1, Some(Activation::HardSwish));
        let blocks =
            spec.blocks.iter().enumerate().map(|(i, b)| Bottleneck::new(&params, &names::block(i), b)).collect();
        let last = ConvBn::new(&params, &names::last_conv(), 1, 1, Some(Activation::HardSwish));
        let (hidden, classifier) = (names::hidden(), names::classifier());
        MobileNetV3 {
            config: config.clone(),
            hidden_w: params.tensor(&hidden.weight),
            hidden_b: params.tensor(&hidden.bias),
            classifier_w: params.tensor(&classifier.weight),
            classifier_b: params.tensor(&classifier.bias),
            spec,
            params,
            stem,
            blocks,
            last,
            ops: ops::Ops::default_for(&params_device),
        }
    }

    /// Builds the network over the parameters of a model file ([`crate::model::weights::load_model`]); a caller
    /// that keeps the file's metadata calls `from_params(&loaded.meta.config, loaded.params)` instead.
    pub fn from_loaded(loaded: LoadedModel) -> Self {
        Self::from_params(&loaded.meta.config, loaded.params)
    }

    /// Chooses the implementation of the graph's ops (by default [`ops::Ops::default_for`] the device: our
    /// kernels on the CPU, candle's stock ops elsewhere).
    pub fn set_ops(&mut self, ops: ops::Ops) {
        self.ops = ops;
    }

    /// Readies a model that will only infer from now on: every BatchNorm's evaluation scale and shift is
    /// computed once here (the graph's counterpart of the CPU plan's folding; each layer then runs as its
    /// convolution and one fused scale + shift + activation). Training it afterwards is refused.
    pub fn freeze_batch_norm(&mut self) -> Result<()> {
        self.stem.freeze()?;
        for b in &mut self.blocks {
            b.freeze()?;
        }
        self.last.freeze()
    }

    /// Changes the dropout probability used in training (0 turns it off; the parity tests compare without it).
    pub fn set_dropout(&mut self, p: f32) {
        self.config.dropout = p;
        self.spec.dropout = p;
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
        self.classify_embeddings(&self.embed(x, mode)?, mode)
    }

    /// The classifier's input (n, hidden): everything but dropout and the last layer.
    pub(crate) fn embed(&self, x: &Tensor, mode: Mode) -> Result<Tensor> {
        let o = self.ops;
        let mut x = self.stem.forward(x, mode, o)?;
        for b in &self.blocks {
            x = b.forward(&x, mode, o)?;
        }
        let x = self.last.forward(&x, mode, o)?;
        let pooled = x.mean(D::Minus1)?.mean(D::Minus1)?;
        ops::hard_swish(&ops::linear(&pooled, &self.hidden_w, &self.hidden_b)?)
    }

    /// The last layer (after dropout, in training) on embeddings (n, hidden): logits (n, classes).
    pub(crate) fn classify_embeddings(&self, h: &Tensor, mode: Mode) -> Result<Tensor> {
        let h = match mode {
            Mode::Train { seed } => dropout(h, self.config.dropout, seed)?,
            Mode::Eval => h.clone(),
        };
        ops::linear(&h, &self.classifier_w, &self.classifier_b)
    }
}

/// Inverted dropout with a mask drawn from `seed`, so that a training run is reproducible.
fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    match crate::kernels::loss::dropout_mask(x.elem_count(), p, seed) {
        Some(mask) => x * Tensor::from_vec(mask, x.shape(), x.device())?,
        None => Ok(x.clone()),
    }
}

/// Cross-entropy with optional label smoothing: (1 - e) * nll + e * mean over classes of -log p.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor, smoothing: f64) -> Result<Tensor> {
    let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = log_p.gather(&labels.unsqueeze(1)?, 1)?.neg()?.mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = log_p.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}
