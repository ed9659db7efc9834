//! The recipe as a person states it: one value per option of `mobilenetv3 train` and per field of the app's
//! Train form. Both front ends go through [`TrainOptions`]: the command line parses it with clap (its defaults
//! are [`TrainConfig::default`]'s), the app's form parses its text fields into it, and
//! [`TrainOptions::config`] turns either into the [`TrainConfig`] a run takes. So the same values give the same
//! run wherever they were typed.

use super::config::{Schedule, ScheduleKind, SelectBy, TrainConfig, DEFAULT_WARMUP_EPOCHS};
use crate::data::Augment;
use crate::model::arch::{ModelConfig, Variant};
use crate::model::params::Init;
use crate::train::optim::SgdConfig;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// MultiStep milestones as typed: epochs separated by commas (`15,20,30`); empty parts are skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Milestones(pub Vec<usize>);

impl FromStr for Milestones {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<usize>()
                    .map_err(|_| format!("bad milestone {p:?}: epochs separated by commas, e.g. 15,20,30"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Milestones)
    }
}

impl fmt::Display for Milestones {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(usize::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

/// The default run's options (small_0.25 with the reference recipe), for clap's `default_value_t`.
fn d() -> TrainOptions {
    TrainOptions::default()
}

/// Every choice of a training run that a person makes, typed. Where files go (`--out`, the app's models folder)
/// and how many threads run are the front ends' own business and not here.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct TrainOptions {
    /// The network.
    #[arg(long, value_enum, ignore_case = true, default_value_t = d().model)]
    pub model: Variant,
    /// Width multiplier.
    #[arg(long, default_value_t = d().width)]
    pub width: f64,
    /// Initial stride (1 for 32x32 CIFAR input, 2 for the paper's layout).
    #[arg(long, default_value_t = d().si)]
    pub si: usize,
    /// Epochs to train.
    #[arg(long, default_value_t = d().epochs)]
    pub epochs: usize,
    /// Images per SGD step.
    #[arg(long, default_value_t = d().batch)]
    pub batch: usize,
    /// Base learning rate of SGD.
    #[arg(long, default_value_t = d().lr)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = d().momentum)]
    pub momentum: f64,
    /// L2 weight decay (the reference uses none).
    #[arg(long, default_value_t = d().weight_decay)]
    pub weight_decay: f64,
    /// Nesterov momentum.
    #[arg(long)]
    pub nesterov: bool,
    /// Learning-rate schedule.
    #[arg(long, value_enum, ignore_case = true, default_value_t = d().schedule)]
    pub schedule: ScheduleKind,
    /// MultiStep milestones (epochs).
    #[arg(long, default_value_t = d().milestones)]
    pub milestones: Milestones,
    /// Learning-rate factor at each MultiStep milestone.
    #[arg(long, default_value_t = d().gamma)]
    pub gamma: f64,
    /// Warm-up epochs of the cosine schedule.
    #[arg(long, default_value_t = d().warmup_epochs)]
    pub warmup_epochs: usize,
    /// Label smoothing of the cross-entropy (0 = none).
    #[arg(long, default_value_t = d().label_smoothing)]
    pub label_smoothing: f64,
    /// Turn off the random crop.
    #[arg(long)]
    pub no_crop: bool,
    /// Turn off the random horizontal flip.
    #[arg(long)]
    pub no_flip: bool,
    /// Which validation figure picks the checkpoint that is kept.
    #[arg(long, value_enum, ignore_case = true, default_value_t = d().select_by)]
    pub select_by: SelectBy,
    /// The same as --select-by top1 (kept for scripts written before --select-by).
    #[arg(long, hide = true, conflicts_with = "select_by")]
    pub select_by_top1: bool,
    /// CIFAR-100: a folder of the binary or python layout, or either official .tar.gz.
    #[arg(long, conflicts_with = "images")]
    pub data: Option<PathBuf>,
    /// Train on your own images: a folder with one folder of images per class (or train/ and val/ folders
    /// that each hold them).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// The share of each class held out for validation when --images has no val/ folder.
    #[arg(long, default_value_t = d().val_split)]
    pub val_split: f64,
    /// Side in pixels of the square the images are resized to [default: 96 for --images with
    /// --freeze-backbone, else 32 (CIFAR-100's, and all layers of a folder: 9 times cheaper than 96)].
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Start from this model file's weights (a shipped model or one you trained; a new classifier for your
    /// classes) instead of fresh ones. --model, --width and --si then come from the file.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Last layer only: keep the --from model's backbone as it is and train only the classifier, on each
    /// image's embedding computed once (seconds, where training all layers takes minutes).
    #[arg(long, requires = "from")]
    pub freeze_backbone: bool,
    /// Fine-tuning all layers from --from: the backbone trains at this fraction of --lr, the new classifier
    /// at --lr.
    #[arg(long, default_value_t = d().backbone_lr_factor)]
    pub backbone_lr_factor: f64,
    /// cpu or cuda.
    #[arg(long, default_value_t = d().device)]
    pub device: String,
    /// Train on the first N images only (CIFAR-100).
    #[arg(long)]
    pub limit_train: Option<usize>,
    /// Evaluate on the first N test images only (CIFAR-100).
    #[arg(long)]
    pub limit_test: Option<usize>,
    /// Seed of the weights, the data order, the augmentation and dropout.
    #[arg(long, default_value_t = d().seed)]
    pub seed: u64,
    /// Weight initialisation (torch: PyTorch's layer defaults, as the reference recipe).
    #[arg(long, value_enum, ignore_case = true, default_value_t = d().init)]
    pub init: Init,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions::from_config(&TrainConfig::default())
    }
}

impl TrainOptions {
    /// The options that give `cfg` (its out_dir aside). Options a schedule does not use (the cosine warm-up
    /// of a MultiStep run, say) take their defaults.
    pub(crate) fn from_config(cfg: &TrainConfig) -> TrainOptions {
        let (schedule, milestones, gamma, warmup_epochs) = match &cfg.schedule {
            Schedule::MultiStep { milestones, gamma } => {
                (ScheduleKind::MultiStep, Milestones(milestones.clone()), *gamma, DEFAULT_WARMUP_EPOCHS)
            }
            Schedule::Cosine { warmup_epochs } => {
                let (m, g) = reference_steps();
                (ScheduleKind::Cosine, m, g, *warmup_epochs)
            }
            Schedule::Constant => {
                let (m, g) = reference_steps();
                (ScheduleKind::Constant, m, g, DEFAULT_WARMUP_EPOCHS)
            }
        };
        TrainOptions {
            model: cfg.model.variant,
            width: cfg.model.width,
            si: cfg.model.initial_stride,
            epochs: cfg.epochs,
            batch: cfg.batch_size,
            lr: cfg.sgd.lr,
            momentum: cfg.sgd.momentum,
            weight_decay: cfg.sgd.weight_decay,
            nesterov: cfg.sgd.nesterov,
            schedule,
            milestones,
            gamma,
            warmup_epochs,
            label_smoothing: cfg.label_smoothing,
            no_crop: !cfg.augment.crop,
            no_flip: !cfg.augment.flip,
            select_by: cfg.select_by,
            select_by_top1: false,
            data: cfg.data_dir.clone(),
            device: cfg.device.clone(),
            limit_train: cfg.limit_train,
            limit_test: cfg.limit_test,
            seed: cfg.seed,
            init: cfg.init,
            images: cfg.images.clone(),
            val_split: cfg.val_fraction,
            // Left unset where it is the run's default: the options that give a config are then the shortest.
            image_size: (cfg.image_size != default_side(cfg.images.is_some(), cfg.freeze_backbone))
                .then_some(cfg.image_size),
            from: cfg.from.clone(),
            freeze_backbone: cfg.freeze_backbone,
            backbone_lr_factor: cfg.backbone_lr_factor,
        }
    }

    /// The run these options describe, writing its files to `out_dir`. Not checked here: the run checks
    /// [`TrainConfig::problems`] before it starts, and the app shows them at their fields.
    pub fn config(&self, out_dir: &Path) -> TrainConfig {
        let schedule = match self.schedule {
            ScheduleKind::MultiStep => Schedule::MultiStep { milestones: self.milestones.0.clone(), gamma: self.gamma },
            ScheduleKind::Cosine => Schedule::Cosine { warmup_epochs: self.warmup_epochs },
            ScheduleKind::Constant => Schedule::Constant,
        };
        let base = TrainConfig::default();
        TrainConfig {
            model: ModelConfig { variant: self.model, width: self.width, initial_stride: self.si, ..base.model },
            epochs: self.epochs,
            batch_size: self.batch,
            sgd: SgdConfig {
                lr: self.lr,
                momentum: self.momentum,
                weight_decay: self.weight_decay,
                nesterov: self.nesterov,
            },
            schedule,
            label_smoothing: self.label_smoothing,
            augment: Augment { crop: !self.no_crop, flip: !self.no_flip },
            seed: self.seed,
            data_dir: self.data.clone(),
            device: self.device.clone(),
            limit_train: self.limit_train,
            limit_test: self.limit_test,
            out_dir: out_dir.to_path_buf(),
            select_by: if self.select_by_top1 { SelectBy::Top1 } else { self.select_by },
            init: self.init,
            images: self.images.clone(),
            val_fraction: self.val_split,
            image_size: self.image_size.unwrap_or(default_side(self.images.is_some(), self.freeze_backbone)),
            from: self.from.clone(),
            freeze_backbone: self.freeze_backbone,
            backbone_lr_factor: self.backbone_lr_factor,
        }
    }
}

/// The input size of a run that does not name one: for the last layer only on a folder of photos
/// [`crate::data::folder_load::DEFAULT_PHOTO_SIDE`] (each photo is embedded once, so the larger size costs
/// seconds to minutes); otherwise 32: CIFAR-100's, and for all layers on photos the size where an epoch is 9
/// times cheaper than at 96 (README, *Your own images*, has both sizes' accuracy).
pub fn default_side(images: bool, last_layer_only: bool) -> usize {
    if images && last_layer_only {
        crate::data::folder_load::DEFAULT_PHOTO_SIDE
    } else {
        crate::model::arch::INPUT_SIZE
    }
}

/// The reference schedule's milestones and gamma, shown for a schedule that does not use them.
fn reference_steps() -> (Milestones, f64) {
    match Schedule::reference() {
        Schedule::MultiStep { milestones, gamma } => (Milestones(milestones), gamma),
        _ => (Milestones::default(), 0.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        options: TrainOptions,
    }

    fn parse(args: &[&str]) -> TrainOptions {
        Cli::try_parse_from(std::iter::once("train").chain(args.iter().copied())).unwrap().options
    }

    #[test]
    fn no_options_give_the_reference_recipe_for_small_0_25() {
        let out = Path::new("out");
        let cfg = parse(&[]).config(out);
        let expected = TrainConfig { out_dir: out.into(), ..TrainConfig::default() };
        assert_eq!(cfg, expected);
        assert_eq!(cfg.model, ModelConfig::new(Variant::Small, 0.25));
    }

    #[test]
    fn options_round_trip_through_a_config() {
        let o =
            parse(&["--model", "large", "--schedule", "cosine", "--warmup-epochs", "3", "--no-flip", "--seed", "7"]);
        assert_eq!(TrainOptions::from_config(&o.config(Path::new("x"))), o);
    }

    #[test]
    fn the_last_layer_trains_at_96_pixels_unless_told_otherwise_and_everything_else_at_32() {
        let x = Path::new("x");
        assert_eq!(parse(&[]).config(x).image_size, 32);
        assert_eq!(parse(&["--images", "photos"]).config(x).image_size, 32);
        assert_eq!(parse(&["--images", "photos", "--from", "m", "--freeze-backbone"]).config(x).image_size, 96);
        assert_eq!(parse(&["--images", "photos", "--image-size", "48"]).config(x).image_size, 48);
        let cases = [
            &["--images", "photos"][..],
            &["--images", "photos", "--from", "m", "--freeze-backbone"],
            &["--images", "photos", "--image-size", "64"],
            &[],
        ];
        for args in cases {
            let o = parse(args);
            assert_eq!(TrainOptions::from_config(&o.config(x)), o, "{args:?}");
        }
    }

    #[test]
    fn milestones_parse_and_print_the_same_way() {
        assert_eq!("15, 20,30,".parse::<Milestones>().unwrap(), Milestones(vec![15, 20, 30]));
        assert_eq!(Milestones(vec![15, 20, 30]).to_string(), "15,20,30");
        assert!("15;20".parse::<Milestones>().unwrap_err().contains("15;20"));
        assert!(Cli::try_parse_from(["train", "--milestones", "x"]).is_err());
    }

    #[test]
    fn the_old_top1_flag_still_selects_by_top1() {
        assert_eq!(parse(&["--select-by-top1"]).config(Path::new("x")).select_by, SelectBy::Top1);
        assert_eq!(parse(&["--select-by", "top1"]).config(Path::new("x")).select_by, SelectBy::Top1);
        assert!(Cli::try_parse_from(["train", "--select-by-top1", "--select-by", "val-loss"]).is_err());
    }
}
