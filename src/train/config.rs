//! What a run is: the model, the recipe (SGD, schedule, augmentation, label smoothing), the data and where its
//! files go, checked field by field.

use crate::data::Augment;
use crate::model::arch::ModelConfig;
use crate::train::optim::SgdConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Learning-rate schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    /// lr = base * gamma^(number of milestones reached), stepped per epoch (PyTorch's MultiStepLR).
    MultiStep {
        milestones: Vec<usize>,
        gamma: f64,
    },
    /// Linear warm-up over `warmup_epochs`, then cosine decay to zero, stepped per batch.
    Cosine {
        warmup_epochs: usize,
    },
    Constant,
}

impl Schedule {
    /// The reference recipe: milestones 15, 20, 30 and gamma 0.1.
    pub fn reference() -> Schedule {
        Schedule::MultiStep { milestones: vec![15, 20, 30], gamma: 0.1 }
    }

    /// Learning rate at `epoch` (0-based) after `progress` (0..1) of it.
    pub fn lr(&self, base: f64, epoch: usize, progress: f64, total_epochs: usize) -> f64 {
        match self {
            Schedule::MultiStep { milestones, gamma } => {
                base * gamma.powi(milestones.iter().filter(|m| epoch >= **m).count() as i32)
            }
            Schedule::Cosine { warmup_epochs } => {
                let t = epoch as f64 + progress;
                let w = *warmup_epochs as f64;
                if t < w {
                    base * (t + 1e-3) / w
                } else {
                    let span = (total_epochs as f64 - w).max(1e-9);
                    0.5 * base * (1.0 + (std::f64::consts::PI * ((t - w) / span).min(1.0)).cos())
                }
            }
            Schedule::Constant => base,
        }
    }
}

/// The kinds of [`Schedule`], as `--schedule` and the app's form name them (their parameters are separate
/// options).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum ScheduleKind {
    /// Multiply by --gamma at each of --milestones (the reference's).
    #[value(name = "multistep")]
    MultiStep,
    /// Linear warm-up over --warmup-epochs, then cosine decay to zero.
    Cosine,
    /// The same rate throughout.
    Constant,
}

/// Warm-up epochs of a cosine schedule when none are given.
pub const DEFAULT_WARMUP_EPOCHS: usize = 1;

/// Which validation figure picks the best checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// Lowest validation loss (the reference's rule).
    ValLoss,
    /// Highest top-1 accuracy.
    #[value(name = "top1")]
    Top1,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub epochs: usize,
    pub batch_size: usize,
    pub sgd: SgdConfig,
    pub schedule: Schedule,
    pub label_smoothing: f64,
    pub augment: Augment,
    pub seed: u64,
    /// CIFAR-100 folder; None tries the default places.
    pub data_dir: Option<PathBuf>,
    pub device: String,
    /// Use only the first N training / test images (quick runs, tests).
    pub limit_train: Option<usize>,
    pub limit_test: Option<usize>,
    /// Where checkpoints and histories go.
    pub out_dir: PathBuf,
    pub select_by: SelectBy,
    /// How the weights start (histories written before this option existed used Kaiming fan-out, which is
    /// what they read as).
    #[serde(default = "crate::model::params::Init::before_the_option")]
    pub init: crate::model::params::Init,
    /// A folder of the user's class folders to train on, in place of CIFAR-100.
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// The share of each class held out for validation when `images` is not split into train/ and val/.
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    /// Side of the square input the images are decoded at (CIFAR-100's are 32).
    #[serde(default = "cifar_side")]
    pub image_size: usize,
    /// A model file whose weights the run starts from (its classifier too when it has the data set's classes in
    /// the same order; otherwise a new classifier for them). None: fresh weights (`init`).
    #[serde(default)]
    pub from: Option<PathBuf>,
    /// Last-layer-only fine-tuning: the start model's backbone and hidden layer stay as they are (and so does
    /// every BatchNorm's running statistics); only the classifier trains, on embeddings computed once per image
    /// and mirror image. Needs `from`.
    #[serde(default)]
    pub freeze_backbone: bool,
    /// Fine-tuning all layers from `from`: every layer but the classifier trains at this fraction of the
    /// learning rate (runs recorded before the option trained every layer at the full rate).
    #[serde(default = "before_the_backbone_factor")]
    pub backbone_lr_factor: f64,
}

/// What fine-tuning runs recorded before `backbone_lr_factor` existed did: one learning rate for all layers.
fn before_the_backbone_factor() -> f64 {
    1.0
}

/// A new fine-tuning run's backbone learning rate as a fraction of the classifier's.
pub const DEFAULT_BACKBONE_LR_FACTOR: f64 = 0.1;

fn default_val_fraction() -> f64 {
    crate::data::folder::DEFAULT_VAL_FRACTION
}

fn cifar_side() -> usize {
    crate::model::arch::INPUT_SIZE
}

/// The run every front end starts from: MobileNetV3-Small at width 0.25 with the reference recipe.
impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig::reference(ModelConfig::new(crate::model::arch::Variant::Small, 0.25))
    }
}

impl TrainConfig {
    /// The reference recipe for a model: SGD lr 0.1 momentum 0.9, no weight decay, MultiStep (15, 20, 30) x 0.1,
    /// batch 128, 20 epochs, crop + flip.
    pub fn reference(model: ModelConfig) -> TrainConfig {
        TrainConfig {
            model,
            epochs: 20,
            batch_size: 128,
            sgd: SgdConfig::default(),
            schedule: Schedule::reference(),
            label_smoothing: 0.0,
            augment: Augment::default(),
            seed: 0,
            data_dir: None,
            device: "cpu".into(),
            limit_train: None,
            limit_test: None,
            out_dir: PathBuf::from("trained_models"),
            select_by: SelectBy::ValLoss,
            init: crate::model::params::Init::default(),
            images: None,
            val_fraction: default_val_fraction(),
            image_size: cifar_side(),
            from: None,
            freeze_backbone: false,
            backbone_lr_factor: DEFAULT_BACKBONE_LR_FACTOR,
        }
    }

    /// Every problem with the values, one message each (the app shows them at their fields).
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Err(e) = self.model.validate() {
            v.push(("model", e.to_string()));
        }
        if self.epochs == 0 || self.epochs > 10_000 {
            v.push(("epochs", "epochs must be between 1 and 10000".into()));
        }
        if self.batch_size == 0 || self.batch_size > 4096 {
            v.push(("batch", "batch size must be between 1 and 4096".into()));
        }
        if !(self.sgd.lr > 0.0 && self.sgd.lr <= 10.0) {
            v.push(("lr", "learning rate must be in (0, 10]".into()));
        }
        if !(0.0..1.0).contains(&self.sgd.momentum) {
            v.push(("momentum", "momentum must be in [0, 1)".into()));
        }
        if !(0.0..=1.0).contains(&self.sgd.weight_decay) {
            v.push(("weight_decay", "weight decay must be in [0, 1]".into()));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            v.push(("label_smoothing", "label smoothing must be in [0, 1)".into()));
        }
        if let Schedule::MultiStep { gamma, .. } = &self.schedule {
            if !(*gamma > 0.0 && *gamma <= 1.0) {
                v.push(("schedule", "gamma must be in (0, 1]".into()));
            }
        }
        if let Some(0) = self.limit_train {
            v.push(("limit_train", "the training limit must be at least one batch".into()));
        }
        if let Some(0) = self.limit_test {
            v.push(("limit_test", "the test limit must be at least one image".into()));
        }
        use crate::data::folder_load::{MAX_SIDE, MIN_SIDE};
        if !(MIN_SIDE..=MAX_SIDE).contains(&self.image_size) {
            v.push(("image_size", format!("the image size must be between {MIN_SIDE} and {MAX_SIDE} pixels")));
        } else if self.images.is_none() && self.image_size != cifar_side() {
            v.push((
                "image_size",
                format!("CIFAR-100's images are {0}x{0}: another size is for a folder of images", cifar_side()),
            ));
        }
        if self.images.is_some() && (self.limit_train.is_some() || self.limit_test.is_some()) {
            v.push(("limit_train", "the image limits are for CIFAR-100; a folder of images is used whole".into()));
        }
        if self.freeze_backbone && self.from.is_none() {
            v.push((
                "freeze_backbone",
                "last-layer-only training keeps a trained backbone: choose a model to start from".into(),
            ));
        }
        if !(self.backbone_lr_factor > 0.0 && self.backbone_lr_factor <= 1.0) {
            v.push(("backbone_lr_factor", "the backbone's learning-rate factor must be in (0, 1]".into()));
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            v.push(("val_fraction", "the validation share must be between 0 and 1 (both excluded)".into()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_recorded_before_the_init_option_reads_as_kaiming_and_a_new_one_defaults_to_torch() {
        use crate::model::params::Init;
        let config = TrainConfig::reference(ModelConfig::new(crate::model::arch::Variant::Small, 0.25));
        assert_eq!(config.init, Init::Torch);
        let mut old = serde_json::to_value(&config).unwrap();
        old.as_object_mut().unwrap().remove("init");
        let read: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!(read.init, Init::KaimingFanOut);
    }

    #[test]
    fn multistep_matches_pytorch() {
        let s = Schedule::reference();
        assert_eq!(s.lr(0.1, 0, 0.0, 20), 0.1);
        assert_eq!(s.lr(0.1, 14, 0.9, 20), 0.1);
        assert!((s.lr(0.1, 15, 0.0, 20) - 0.01).abs() < 1e-12);
        // Milestone 20 is first felt by the 21st epoch (index 20), as PyTorch's scheduler stepped per epoch.
        assert!((s.lr(0.1, 19, 0.0, 20) - 0.01).abs() < 1e-12);
        assert!((s.lr(0.1, 20, 0.0, 30) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn cosine_warms_up_then_decays_to_zero() {
        let s = Schedule::Cosine { warmup_epochs: 2 };
        assert!(s.lr(0.1, 0, 0.0, 10) < 0.001);
        assert!((s.lr(0.1, 2, 0.0, 10) - 0.1).abs() < 1e-9);
        assert!(s.lr(0.1, 9, 0.999, 10) < 1e-4);
    }

    #[test]
    fn config_problems_are_reported_per_field() {
        let mut c = TrainConfig::reference(ModelConfig::new(crate::model::arch::Variant::Small, 0.25));
        assert!(c.problems().is_empty());
        c.epochs = 0;
        c.sgd.lr = -1.0;
        let fields: Vec<&str> = c.problems().iter().map(|p| p.0).collect();
        assert_eq!(fields, vec!["epochs", "lr"]);
    }

    /// A run recorded before the fine-tuning options trained all layers at one rate, and resumes so.
    #[test]
    fn a_config_recorded_before_the_fine_tuning_options_reads_as_all_layers_at_one_rate() {
        let mut old = serde_json::to_value(TrainConfig::default()).unwrap();
        old.as_object_mut().unwrap().remove("backbone_lr_factor");
        old.as_object_mut().unwrap().remove("freeze_backbone");
        let read: TrainConfig = serde_json::from_value(old).unwrap();
        assert_eq!((read.freeze_backbone, read.backbone_lr_factor), (false, 1.0));
        assert_eq!(TrainConfig::default().backbone_lr_factor, DEFAULT_BACKBONE_LR_FACTOR);
    }

    #[test]
    fn last_layer_only_needs_a_model_to_start_from() {
        let mut c = TrainConfig { freeze_backbone: true, ..TrainConfig::default() };
        let problems = c.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "freeze_backbone");
        assert!(problems[0].1.contains("choose a model to start from"), "{problems:?}");
        c.from = Some("trained_models/mobilenetv3_small_0.25.safetensors".into());
        assert!(c.problems().is_empty());
    }
}
