//! Where a run's weights start when it starts from a model file (`--from`): the file's backbone, and its
//! classifier only when it was trained on the same classes in the same order; otherwise the run's own fresh
//! classifier for the data set's classes (transfer learning).

use super::{Result, TrainError};
use crate::model::arch::ModelConfig;
use crate::model::names;
use crate::model::weights::{self, LoadOptions};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// A model file's weights, read for a run to start from.
pub(super) struct StartWeights {
    /// The file's architecture (its variant, width and initial stride), with the data set's class count.
    pub config: ModelConfig,
    /// Every tensor to copy into the fresh model (the classifier's only when the file has the same classes in
    /// the same order).
    pub tensors: HashMap<String, Tensor>,
}

/// Reads `path` for a run on `classes`; the run's dropout stays the caller's.
pub(super) fn start_weights(path: &Path, classes: &[String], dropout: f32) -> Result<StartWeights> {
    let error = |error| TrainError::StartFrom { path: path.into(), error };
    let loaded = weights::load_model(path, &Device::Cpu, &LoadOptions::default()).map_err(error)?;
    let head_kept = loaded.meta.class_names == classes;
    let mut tensors: HashMap<String, Tensor> = loaded.params.snapshot()?.into_iter().collect();
    if !head_kept {
        let head = names::classifier();
        tensors.remove(&head.weight);
        tensors.remove(&head.bias);
    }
    let config = ModelConfig { num_classes: classes.len(), dropout, ..loaded.meta.config };
    Ok(StartWeights { config, tensors })
}
