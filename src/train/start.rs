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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/small_0.25_si1.weights.safetensors")
    }

    #[test]
    fn the_classifier_is_kept_only_for_the_same_classes_in_the_same_order() {
        let head = names::classifier();
        let loaded = weights::load_model(&fixture(), &Device::Cpu, &LoadOptions::default()).unwrap();
        // A file without an image size in its header reads as CIFAR-100's 32.
        assert_eq!(loaded.meta.image_size, 32);
        let same = loaded.meta.class_names.clone();
        let s = start_weights(&fixture(), &same, 0.1).unwrap();
        assert!(s.tensors.contains_key(&head.weight) && s.tensors.contains_key(&head.bias));
        assert_eq!((s.config.num_classes, s.config.dropout), (100, 0.1));

        let mut reordered = same.clone();
        reordered.swap(0, 1);
        for classes in [reordered, vec!["cats".to_string(), "dogs".to_string()]] {
            let s = start_weights(&fixture(), &classes, 0.2).unwrap();
            assert!(!s.tensors.contains_key(&head.weight) && !s.tensors.contains_key(&head.bias));
            assert!(s.tensors.contains_key(&names::stem().weight), "the backbone is kept");
            assert_eq!(s.config.num_classes, classes.len());
            assert_eq!((s.config.variant, s.config.width), (loaded.meta.config.variant, loaded.meta.config.width));
        }
    }
}
