//! SGD with momentum, weight decay and Nesterov, with PyTorch's update rule so that recipes carry over:
//! g = grad + wd * p; buf = momentum * buf + g (buf = g on the first step); p -= lr * (nesterov ? g + momentum * buf : buf).

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

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
    /// Momentum buffers, created on the first step of each parameter.
    momentum: Vec<Option<Var>>,
}

impl Sgd {
    pub fn new(params: Vec<(String, Var)>, config: SgdConfig) -> Self {
        let momentum = vec![None; params.len()];
        Sgd { config, params, momentum }
    }

    pub fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    /// Applies one update from the gradients of a backward pass. Parameters without a gradient are skipped.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let c = self.config.clone();
        for ((_, p), buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            let Some(g) = grads.get(p.as_tensor()) else {
                continue;
            };
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
    pub fn load_state(&mut self, state: &std::collections::HashMap<String, Tensor>) -> Result<()> {
        for ((n, p), buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            if let Some(t) = state.get(&format!("momentum.{n}")) {
                let t = t.to_device(p.device())?.to_dtype(p.dtype())?.reshape(p.shape())?;
                *buf = Some(Var::from_tensor(&t.copy()?)?);
            }
        }
        Ok(())
    }
}
