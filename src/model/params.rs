//! The model's state: every tensor of the PyTorch state_dict, held as candle [`Var`]s under its PyTorch name.
//!
//! Layers keep clones of these `Var`s (they share storage), so an optimizer step or a weight load through the
//! store is seen by the model at once.

use crate::model::arch::{ArchSpec, TensorRole, TensorSpec, BN_MOMENTUM};
use crate::model::names::BnNames;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};

/// How fresh weights are drawn.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Convolutions Kaiming-normal with fan-out (torchvision's MobileNetV3), biases zero.
    #[value(name = "kaiming")]
    KaimingFanOut,
    /// PyTorch's layer defaults: weights and biases uniform in +-1/sqrt(fan_in), what a plain `nn.Conv2d` gets.
    /// The default: the reference recipe, and every model in `trained_models/`, start from it.
    #[default]
    Torch,
}

impl Init {
    /// What runs recorded before the option existed used (and the default was then): Kaiming fan-out.
    pub(crate) fn before_the_option() -> Init {
        Init::KaimingFanOut
    }
}

pub struct ParamStore {
    specs: Vec<TensorSpec>,
    vars: BTreeMap<String, Var>,
    device: Device,
}

impl ParamStore {
    /// Fresh weights drawn as `init` says (BatchNorm always weight 1 / bias 0 / mean 0 / var 1).
    pub(crate) fn init_with(spec: &ArchSpec, device: &Device, seed: u64, init: Init) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for t in spec.tensors() {
            let n = t.numel();
            let tensor = match t.role {
                TensorRole::ConvWeight { fan_out } => {
                    let data: Vec<f32> = match init {
                        Init::KaimingFanOut => {
                            let std = (2.0 / fan_out as f64).sqrt();
                            (0..n).map(|_| (normal(&mut rng) * std) as f32).collect()
                        }
                        Init::Torch => {
                            let fan_in: usize = t.shape[1..].iter().product();
                            let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                            (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
                        }
                    };
                    Tensor::from_vec(data, t.shape.as_slice(), device)?
                }
                TensorRole::ConvBias { fan_in } if init == Init::Torch => {
                    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
                    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect();
                    Tensor::from_vec(data, t.shape.as_slice(), device)?
                }
                TensorRole::ConvBias { .. } | TensorRole::BnBias | TensorRole::BnRunningMean => {
                    Tensor::zeros(t.shape.as_slice(), DType::F32, device)?
                }
                TensorRole::BnWeight | TensorRole::BnRunningVar => {
                    Tensor::ones(t.shape.as_slice(), DType::F32, device)?
                }
                TensorRole::BnBatchCount => Tensor::zeros((), DType::I64, device)?,
            };
            tensors.insert(t.name.clone(), tensor);
        }
        Self::from_tensors(spec, tensors, device)
    }

    /// Wraps tensors that [`crate::model::weights::check_tensors`] accepted for this spec.
    pub(crate) fn from_tensors(spec: &ArchSpec, mut tensors: HashMap<String, Tensor>, device: &Device) -> Result<Self> {
        let specs = spec.tensors();
        let mut vars = BTreeMap::new();
        for t in &specs {
            let Some(src) = tensors.remove(&t.name) else { candle_core::bail!("missing tensor {}", t.name) };
            let dtype = if t.role == TensorRole::BnBatchCount { DType::I64 } else { DType::F32 };
            let src = src.to_device(device)?.to_dtype(dtype)?.reshape(t.shape.as_slice())?;
            // A fresh contiguous copy: the Var must own its storage to be updated in place.
            vars.insert(t.name.clone(), Var::from_tensor(&src.copy()?)?);
        }
        Ok(ParamStore { specs, vars, device: device.clone() })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The variable named as in the PyTorch state_dict. Panics on a name the architecture does not have: names
    /// come from [`ArchSpec::tensors`], never from user input.
    pub fn var(&self, name: &str) -> &Var {
        self.vars.get(name).unwrap_or_else(|| panic!("no parameter named {name}"))
    }

    pub fn tensor(&self, name: &str) -> Tensor {
        self.var(name).as_tensor().clone()
    }

    /// The parameters that training updates: trainable and used by the forward pass, in state_dict order.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        self.specs
            .iter()
            .filter(|t| t.used && t.role.trainable())
            .map(|t| (t.name.clone(), self.vars[&t.name].clone()))
            .collect()
    }

    /// The classifier's weight and bias: what last-layer-only training updates.
    pub(crate) fn classifier(&self) -> Vec<(String, Var)> {
        let names = crate::model::names::classifier();
        [names.weight, names.bias].into_iter().map(|n| (n.clone(), self.var(&n).clone())).collect()
    }

    /// A copy with every float tensor in `dtype` (the tests run the stock-op graph in f64 as a reference).
    #[cfg(test)]
    pub(crate) fn to_dtype(&self, dtype: DType) -> Result<ParamStore> {
        let mut vars = BTreeMap::new();
        for (name, var) in &self.vars {
            let t = var.as_tensor();
            let t = if t.dtype() == DType::I64 { t.copy()? } else { t.to_dtype(dtype)? };
            vars.insert(name.clone(), Var::from_tensor(&t)?);
        }
        Ok(ParamStore { specs: self.specs.clone(), vars, device: self.device.clone() })
    }

    /// A snapshot of every tensor, in state_dict order (what a weight file holds).
    pub fn snapshot(&self) -> Result<Vec<(String, Tensor)>> {
        self.specs.iter().map(|t| Ok((t.name.clone(), self.vars[&t.name].as_tensor().copy()?))).collect()
    }

    /// Overwrites every tensor from `other` (same architecture): used to restore a checkpoint in place.
    pub(crate) fn copy_from(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for t in &self.specs {
            let Some(src) = tensors.get(&t.name) else { candle_core::bail!("missing tensor {}", t.name) };
            let var = &self.vars[&t.name];
            var.set(&src.to_device(&self.device)?.to_dtype(var.dtype())?.reshape(t.shape.as_slice())?)?;
        }
        Ok(())
    }
}

impl ParamStore {
    /// A parameter's values as a host vector (what the CPU executors read).
    pub fn values(&self, name: &str) -> Result<Vec<f32>> {
        self.var(name).as_tensor().flatten_all()?.to_vec1::<f32>()
    }

    /// Folds one training batch's statistics into a BatchNorm layer's running statistics.
    pub(crate) fn update_running(&self, names: &BnNames, mean: &[f32], biased_var: &[f32], count: usize) -> Result<()> {
        let c = mean.len();
        update_running_stats(
            [self.var(&names.running_mean), self.var(&names.running_var), self.var(&names.num_batches_tracked)],
            &Tensor::from_slice(mean, c, &self.device)?,
            &Tensor::from_slice(biased_var, c, &self.device)?,
            count as f64,
        )
    }
}

/// running = (1 - m) running + m batch with the unbiased batch variance, and one more batch tracked (as
/// PyTorch's BatchNorm2d in training). `running` is (mean, var, num_batches_tracked).
pub(crate) fn update_running_stats(running: [&Var; 3], mean: &Tensor, biased_var: &Tensor, count: f64) -> Result<()> {
    let [running_mean, running_var, batches] = running;
    let m = BN_MOMENTUM;
    let unbiased = if count > 1.0 { (biased_var * (count / (count - 1.0)))? } else { biased_var.clone() };
    running_mean.set(&((running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
    running_var.set(&((running_var.as_tensor() * (1.0 - m))? + (unbiased * m)?)?)?;
    let one = Tensor::ones((), DType::I64, batches.device())?;
    batches.set(&(batches.as_tensor() + one)?)?;
    Ok(())
}

/// A standard normal sample (Box-Muller); keeps initialisation reproducible for a seed on every device.
pub(crate) fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}
