//! The Train tab's form: a view of [`TrainOptions`] kept as text, so that a bad value can be shown at its
//! field. Its defaults are the library's ([`TrainOptions::default`], the same as `mobilenetv3 train` with no
//! options) and it parses into the same options, so a run started here is the run the same values give on the
//! command line.

use crate::app::worker::ModelEntry;
use crate::model::arch::Variant;
use crate::model::params::Init;
use crate::train::{Milestones, ScheduleKind, SelectBy, TrainConfig, TrainOptions};
use egui::Color32;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The form as the user typed it (saved with the settings; a field missing from an older file takes its
/// default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainForm {
    pub variant: Variant,
    pub width: String,
    pub si: usize,
    pub epochs: String,
    pub batch: String,
    pub lr: String,
    pub momentum: String,
    pub schedule: ScheduleKind,
    pub milestones: String,
    pub gamma: String,
    pub warmup: String,
    pub weight_decay: String,
    pub label_smoothing: String,
    pub nesterov: bool,
    pub crop: bool,
    pub flip: bool,
    pub select_by: SelectBy,
    pub init: Init,
    pub data_dir: String,
    pub device: String,
    pub limit_train: String,
    pub limit_test: String,
    pub seed: String,
    /// CIFAR-100 or the user's folder of class folders.
    pub source: DataSource,
    pub images_dir: String,
    pub val_split: String,
    pub image_size: String,
    /// A model file to start from; empty for fresh weights.
    pub start_from: String,
    /// With a model to start from: train its last layer only (true) or all layers.
    pub freeze_backbone: bool,
    /// With a model to start from, all layers: the backbone's learning rate as a fraction of the classifier's.
    pub backbone_lr_factor: String,
}

/// What a run trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DataSource {
    #[default]
    Cifar100,
    /// A folder with one folder of images per class.
    Images,
}

/// Which folder field a folder dialog fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderFor {
    Cifar100,
    Images,
}

impl Default for TrainForm {
    fn default() -> Self {
        let mut form = TrainForm::from_options(&TrainOptions::default());
        form.data_dir = default_data_dir();
        form
    }
}

fn default_data_dir() -> String {
    crate::data::default_dirs()
        .into_iter()
        .find(|d| crate::train::has_dataset(d))
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

/// A field's problems, keyed by the field's name (the keys [`TrainConfig::problems`] uses).
pub type FieldErrors = HashMap<&'static str, String>;

impl TrainForm {
    /// The form showing `o`.
    pub(crate) fn from_options(o: &TrainOptions) -> TrainForm {
        let opt = |v: Option<usize>| v.map(|n| n.to_string()).unwrap_or_default();
        TrainForm {
            variant: o.model,
            width: o.width.to_string(),
            si: o.si,
            epochs: o.epochs.to_string(),
            batch: o.batch.to_string(),
            lr: o.lr.to_string(),
            momentum: o.momentum.to_string(),
            schedule: o.schedule,
            milestones: o.milestones.to_string(),
            gamma: o.gamma.to_string(),
            warmup: o.warmup_epochs.to_string(),
            weight_decay: o.weight_decay.to_string(),
            label_smoothing: o.label_smoothing.to_string(),
            nesterov: o.nesterov,
            crop: !o.no_crop,
            flip: !o.no_flip,
            select_by: if o.select_by_top1 { SelectBy::Top1 } else { o.select_by },
            init: o.init,
            data_dir: o.data.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
            device: o.device.clone(),
            limit_train: opt(o.limit_train),
            limit_test: opt(o.limit_test),
            seed: o.seed.to_string(),
            source: if o.images.is_some() { DataSource::Images } else { DataSource::Cifar100 },
            images_dir: o.images.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
            val_split: o.val_split.to_string(),
            // Empty: the run's default (96 for the last layer only, else 32), shown as the field's hint.
            image_size: o.image_size.map(|s| s.to_string()).unwrap_or_default(),
            start_from: o.from.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
            freeze_backbone: o.freeze_backbone,
            backbone_lr_factor: o.backbone_lr_factor.to_string(),
        }
    }

    /// The options the form holds, or why not, field by field. Every text field is parsed the way the command
    /// line parses its option; the fields a schedule does not use are not read.
    pub(crate) fn to_options(&self) -> Result<TrainOptions, FieldErrors> {
        let mut errs = FieldErrors::new();
        let defaults = TrainOptions::default();
        fn parse<T: std::str::FromStr>(errs: &mut FieldErrors, field: &'static str, s: &str) -> Option<T> {
            match s.trim().parse::<T>() {
                Ok(v) => Some(v),
                Err(_) => {
                    errs.insert(field, format!("not a number: {s:?}"));
                    None
                }
            }
        }
        let width = parse::<f64>(&mut errs, "width", &self.width);
        let epochs = parse::<usize>(&mut errs, "epochs", &self.epochs);
        let batch = parse::<usize>(&mut errs, "batch", &self.batch);
        let lr = parse::<f64>(&mut errs, "lr", &self.lr);
        let momentum = parse::<f64>(&mut errs, "momentum", &self.momentum);
        let weight_decay = parse::<f64>(&mut errs, "weight_decay", &self.weight_decay);
        let label_smoothing = parse::<f64>(&mut errs, "label_smoothing", &self.label_smoothing);
        let seed = parse::<u64>(&mut errs, "seed", &self.seed);
        let val_split = parse::<f64>(&mut errs, "val_fraction", &self.val_split);
        // Shown (and read) for a folder of images only (empty: the run's default); CIFAR-100 is 32 pixels.
        let image_size = match self.source {
            DataSource::Images if !self.image_size.trim().is_empty() => {
                parse::<usize>(&mut errs, "image_size", &self.image_size).map(Some)
            }
            _ => Some(None),
        };
        // Shown (and read) only when all layers are fine-tuned from a model.
        let backbone_lr_factor = if !self.start_from.trim().is_empty() && !self.freeze_backbone {
            parse::<f64>(&mut errs, "backbone_lr_factor", &self.backbone_lr_factor)
        } else {
            Some(defaults.backbone_lr_factor)
        };
        // An empty limit means every image.
        let optional = |errs: &mut FieldErrors, field: &'static str, s: &str| -> Option<Option<usize>> {
            if s.trim().is_empty() {
                Some(None)
            } else {
                parse::<usize>(errs, field, s).map(Some)
            }
        };
        let limit_train = optional(&mut errs, "limit_train", &self.limit_train);
        let limit_test = optional(&mut errs, "limit_test", &self.limit_test);
        // The schedule's own fields, read only for the schedule that uses them.
        let (mut milestones, mut gamma, mut warmup) =
            (Some(defaults.milestones.clone()), Some(defaults.gamma), Some(defaults.warmup_epochs));
        match self.schedule {
            ScheduleKind::MultiStep => {
                milestones = match self.milestones.parse::<Milestones>() {
                    Ok(m) => Some(m),
                    Err(e) => {
                        errs.insert("milestones", e);
                        None
                    }
                };
                gamma = parse::<f64>(&mut errs, "gamma", &self.gamma);
            }
            ScheduleKind::Cosine => warmup = parse::<usize>(&mut errs, "warmup", &self.warmup),
            ScheduleKind::Constant => {}
        }
        let (
            Some(width),
            Some(epochs),
            Some(batch),
            Some(lr),
            Some(momentum),
            Some(weight_decay),
            Some(label_smoothing),
            Some(seed),
            Some(limit_train),
            Some(limit_test),
            Some(milestones),
            Some(gamma),
            Some(warmup_epochs),
            Some(val_split),
            Some(image_size),
            Some(backbone_lr_factor),
        ) = (
            width,
            epochs,
            batch,
            lr,
            momentum,
            weight_decay,
            label_smoothing,
            seed,
            limit_train,
            limit_test,
            milestones,
            gamma,
            warmup,
            val_split,
            image_size,
            backbone_lr_factor,
        )
        else {
            return Err(errs);
        };
        let data = self.data_dir.trim();
        let images = self.images_dir.trim();
        let start_from = self.start_from.trim();
        Ok(TrainOptions {
            model: self.variant,
            width,
            si: self.si,
            epochs,
            batch,
            lr,
            momentum,
            weight_decay,
            nesterov: self.nesterov,
            schedule: self.schedule,
            milestones,
            gamma,
            warmup_epochs,
            label_smoothing,
            no_crop: !self.crop,
            no_flip: !self.flip,
            select_by: self.select_by,
            select_by_top1: false,
            data: (self.source == DataSource::Cifar100 && !data.is_empty()).then(|| PathBuf::from(data)),
            device: self.device.clone(),
            // The limits are CIFAR-100's (a folder of images is used whole); hidden fields are not read.
            limit_train: if self.source == DataSource::Cifar100 { limit_train } else { None },
            limit_test: if self.source == DataSource::Cifar100 { limit_test } else { None },
            seed,
            init: self.init,
            images: (self.source == DataSource::Images && !images.is_empty()).then(|| PathBuf::from(images)),
            val_split,
            image_size,
            from: (!start_from.is_empty()).then(|| PathBuf::from(start_from)),
            // Shown (and read) only with a model to start from.
            freeze_backbone: self.freeze_backbone && !start_from.is_empty(),
            backbone_lr_factor,
        })
    }

    /// The config, or the problems keyed by field name: the options' parse errors, then the config's own checks
    /// ([`TrainConfig::problems`]), then the data folder. `has_data` says whether a folder holds the data of the
    /// form's source (CIFAR-100, or a folder at all; the caller caches it: it touches the file system).
    pub(crate) fn to_config(
        &self,
        out_dir: &Path,
        has_data: impl Fn(&Path) -> bool,
    ) -> Result<TrainConfig, FieldErrors> {
        let (cfg, mut errs) = match self.to_options() {
            Ok(o) => (Some(o.config(out_dir)), FieldErrors::new()),
            Err(errs) => (None, errs),
        };
        if let Some(cfg) = &cfg {
            for (field, msg) in cfg.problems() {
                let field = if field == "model" { "width" } else { field };
                errs.entry(field).or_insert(msg);
            }
        }
        match self.source {
            DataSource::Cifar100 if self.data_dir.trim().is_empty() => {
                errs.insert("data", "choose the CIFAR-100 folder".into());
            }
            DataSource::Cifar100 if !has_data(Path::new(self.data_dir.trim())) => {
                errs.insert("data", "no CIFAR-100 here (binary, python or .tar.gz)".into());
            }
            DataSource::Images if self.images_dir.trim().is_empty() => {
                errs.insert("images", "choose a folder with one folder of images per class".into());
            }
            DataSource::Images if !has_data(Path::new(self.images_dir.trim())) => {
                errs.insert("images", "not a folder".into());
            }
            _ => {}
        }
        match cfg {
            Some(cfg) if errs.is_empty() => Ok(cfg),
            _ => Err(errs),
        }
    }
}

/// One labelled form row with its error, if any, below it.
fn field(
    ui: &mut egui::Ui,
    label: &str,
    errors: &FieldErrors,
    key: &str,
    add: impl FnOnce(&mut egui::Ui) -> egui::Response,
) {
    ui.horizontal(|ui| {
        let l = ui.add_sized([110.0, 18.0], egui::Label::new(label));
        let r = add(ui);
        r.labelled_by(l.id);
    });
    if let Some(e) = errors.get(key) {
        ui.colored_label(Color32::from_rgb(220, 80, 60), format!("  {e}"));
    }
}

fn text(ui: &mut egui::Ui, value: &mut String) -> egui::Response {
    ui.add(egui::TextEdit::singleline(value).desired_width(140.0))
}

/// A drop-down of the choices `(value, label)`.
fn choice<T: PartialEq + Copy>(ui: &mut egui::Ui, id: &str, value: &mut T, choices: &[(T, &str)]) -> egui::Response {
    let shown = choices.iter().find(|(v, _)| v == value).map(|(_, l)| *l).unwrap_or("");
    egui::ComboBox::from_id_salt(id)
        .selected_text(shown)
        .show_ui(ui, |ui| {
            for (v, label) in choices {
                ui.selectable_value(value, *v, *label);
            }
        })
        .response
}

/// The form's fields; `pick_folder` is set to the field whose "…" button is clicked. `models` are the model
/// files a run can start from.
pub(super) fn form_ui(
    ui: &mut egui::Ui,
    f: &mut TrainForm,
    errors: &FieldErrors,
    models: &[ModelEntry],
    pick_folder: &mut Option<FolderFor>,
) {
    ui.strong("Data");
    field(ui, "Train on", errors, "source", |ui| {
        choice(ui, "source", &mut f.source, &[(DataSource::Cifar100, "CIFAR-100"), (DataSource::Images, "My images")])
    });
    match f.source {
        DataSource::Cifar100 => {
            field(ui, "Dataset folder", errors, "data", |ui| {
                let r = ui.add(egui::TextEdit::singleline(&mut f.data_dir).desired_width(100.0));
                if ui.button("…").on_hover_text("Choose the CIFAR-100 folder").clicked() {
                    *pick_folder = Some(FolderFor::Cifar100);
                }
                r
            });
        }
        DataSource::Images => {
            field(ui, "Image folder", errors, "images", |ui| {
                let r = ui.add(
                    egui::TextEdit::singleline(&mut f.images_dir).hint_text("drop a folder here").desired_width(100.0),
                );
                if ui.button("…").on_hover_text("Choose a folder with one folder of images per class").clicked() {
                    *pick_folder = Some(FolderFor::Images);
                }
                r
            });
            field(ui, "Validation share", errors, "val_fraction", |ui| text(ui, &mut f.val_split));
            let default = crate::train::default_side(true, f.freeze_backbone && !f.start_from.trim().is_empty());
            field(ui, "Image size", errors, "image_size", |ui| {
                ui.add(
                    egui::TextEdit::singleline(&mut f.image_size).hint_text(default.to_string()).desired_width(140.0),
                )
                .on_hover_text(format!(
                    "Empty: {} pixels for the last layer only, else {}",
                    crate::train::default_side(true, true),
                    crate::train::default_side(true, false)
                ))
            });
        }
    }
    field(ui, "Start from", errors, "from", |ui| {
        let shown = models
            .iter()
            .find(|m| m.path.display().to_string() == f.start_from)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| if f.start_from.is_empty() { "fresh weights".into() } else { f.start_from.clone() });
        egui::ComboBox::from_id_salt("start_from")
            .selected_text(shown)
            .width(140.0)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut f.start_from, String::new(), "fresh weights");
                for m in models {
                    ui.selectable_value(&mut f.start_from, m.path.display().to_string(), &m.name);
                }
            })
            .response
    });
    if !f.start_from.trim().is_empty() {
        field(ui, "Train", errors, "freeze_backbone", |ui| {
            choice(ui, "freeze_backbone", &mut f.freeze_backbone, &[(false, "all layers"), (true, "last layer only")])
        });
        if !f.freeze_backbone {
            field(ui, "Backbone lr factor", errors, "backbone_lr_factor", |ui| text(ui, &mut f.backbone_lr_factor));
        }
    }
    ui.strong("Model");
    field(ui, "Variant", errors, "variant", |ui| {
        choice(ui, "variant", &mut f.variant, &[(Variant::Small, "small"), (Variant::Large, "large")])
    });
    field(ui, "Width", errors, "width", |ui| text(ui, &mut f.width));
    field(ui, "Initial stride", errors, "si", |ui| choice(ui, "si", &mut f.si, &[(1, "1 (CIFAR)"), (2, "2 (paper)")]));
    field(ui, "Initialisation", errors, "init", |ui| {
        choice(ui, "init", &mut f.init, &[(Init::Torch, "PyTorch defaults"), (Init::KaimingFanOut, "Kaiming fan-out")])
    });
    ui.strong("Recipe");
    field(ui, "Epochs", errors, "epochs", |ui| text(ui, &mut f.epochs));
    field(ui, "Batch size", errors, "batch", |ui| text(ui, &mut f.batch));
    field(ui, "Learning rate", errors, "lr", |ui| text(ui, &mut f.lr));
    field(ui, "Momentum", errors, "momentum", |ui| text(ui, &mut f.momentum));
    field(ui, "Schedule", errors, "schedule", |ui| {
        choice(
            ui,
            "schedule",
            &mut f.schedule,
            &[
                (ScheduleKind::MultiStep, "multi-step"),
                (ScheduleKind::Cosine, "cosine + warm-up"),
                (ScheduleKind::Constant, "constant"),
            ],
        )
    });
    match f.schedule {
        ScheduleKind::MultiStep => {
            field(ui, "Milestones", errors, "milestones", |ui| text(ui, &mut f.milestones));
            field(ui, "Gamma", errors, "gamma", |ui| text(ui, &mut f.gamma));
        }
        ScheduleKind::Cosine => field(ui, "Warm-up epochs", errors, "warmup", |ui| text(ui, &mut f.warmup)),
        ScheduleKind::Constant => {}
    }
    field(ui, "Weight decay", errors, "weight_decay", |ui| text(ui, &mut f.weight_decay));
    field(ui, "Label smoothing", errors, "label_smoothing", |ui| text(ui, &mut f.label_smoothing));
    ui.checkbox(&mut f.nesterov, "Nesterov momentum");
    let crop = match f.source {
        DataSource::Cifar100 => "Random crop (pad 4)",
        DataSource::Images => "Random resized crop",
    };
    // Last layer only embeds each image once (and once mirrored): there is no crop to draw.
    let embedded_once = f.freeze_backbone && !f.start_from.trim().is_empty();
    ui.add_enabled(!embedded_once, egui::Checkbox::new(&mut f.crop, crop))
        .on_disabled_hover_text("Last layer only: each image is embedded once, whole (and once mirrored)");
    ui.checkbox(&mut f.flip, "Random horizontal flip");
    field(ui, "Keep the best by", errors, "select_by", |ui| {
        choice(
            ui,
            "select_by",
            &mut f.select_by,
            &[(SelectBy::ValLoss, "validation loss"), (SelectBy::Top1, "top-1 accuracy")],
        )
    });
    ui.strong("Limits and device");
    if f.source == DataSource::Cifar100 {
        field(ui, "Train images", errors, "limit_train", |ui| {
            ui.add(egui::TextEdit::singleline(&mut f.limit_train).hint_text("all").desired_width(140.0))
        });
        field(ui, "Test images", errors, "limit_test", |ui| {
            ui.add(egui::TextEdit::singleline(&mut f.limit_test).hint_text("all").desired_width(140.0))
        });
    }
    // A cuda choice kept from an earlier session falls back to the CPU where CUDA does not open here.
    if f.device == "cuda" && matches!(crate::device::cuda_if_probed(), Some(Err(_))) {
        f.device = "cpu".to_string();
    }
    field(ui, "Device", errors, "device", |ui| {
        egui::ComboBox::from_id_salt("device")
            .selected_text(&f.device)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut f.device, "cpu".to_string(), "cpu");
                let cuda = crate::device::cuda_if_probed();
                ui.add_enabled_ui(matches!(cuda, Some(Ok(()))), |ui| {
                    ui.selectable_value(&mut f.device, "cuda".to_string(), "cuda")
                        .on_disabled_hover_text(super::super::latency_tab::cuda_unavailable_text(&cuda));
                });
            })
            .response
    });
    ui.label(
        egui::RichText::new(format!(
            "CPU threads: {} (all cores; train --threads N sets fewer)",
            rayon::current_num_threads()
        ))
        .small()
        .weak(),
    );
    field(ui, "Seed", errors, "seed", |ui| text(ui, &mut f.seed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// `mobilenetv3 train`'s recipe options, as the binary flattens them into its `train` command.
    #[derive(Parser)]
    struct Train {
        #[command(flatten)]
        options: TrainOptions,
    }

    fn cli(args: &[&str]) -> TrainConfig {
        let argv = std::iter::once("train").chain(args.iter().copied());
        Train::try_parse_from(argv).unwrap().options.config(Path::new("out"))
    }

    fn app(f: &TrainForm) -> TrainConfig {
        f.to_config(Path::new("out"), |_| true).unwrap()
    }

    /// A form with a data folder (the app needs one to start; the command line finds one itself).
    fn form() -> TrainForm {
        TrainForm { data_dir: "cifar".into(), ..TrainForm::default() }
    }

    #[test]
    fn the_default_form_and_train_without_options_give_the_same_run() {
        let from_app = app(&form());
        assert_eq!(TrainConfig { data_dir: None, ..from_app.clone() }, cli(&[]));
        assert_eq!(from_app.data_dir, Some(PathBuf::from("cifar")));
    }

    /// Each of `train`'s recipe options, set to a value other than its default on the command line and in the
    /// form: the two runs are equal. The list must name every option clap knows, so an option added to the
    /// command line without a field in the app fails here.
    #[test]
    fn every_recipe_option_of_the_command_line_can_be_set_in_the_form() {
        type Edit = fn(&mut TrainForm);
        let cases: &[(&str, &[&str], Edit)] = &[
            ("model", &["--model", "large"], |f| f.variant = Variant::Large),
            ("width", &["--width", "0.5"], |f| f.width = "0.5".into()),
            ("si", &["--si", "2"], |f| f.si = 2),
            ("epochs", &["--epochs", "3"], |f| f.epochs = "3".into()),
            ("batch", &["--batch", "64"], |f| f.batch = "64".into()),
            ("lr", &["--lr", "0.05"], |f| f.lr = "0.05".into()),
            ("momentum", &["--momentum", "0.8"], |f| f.momentum = "0.8".into()),
            ("weight_decay", &["--weight-decay", "5e-4"], |f| f.weight_decay = "5e-4".into()),
            ("nesterov", &["--nesterov"], |f| f.nesterov = true),
            ("schedule", &["--schedule", "constant"], |f| f.schedule = ScheduleKind::Constant),
            ("milestones", &["--milestones", "5,8"], |f| f.milestones = "5,8".into()),
            ("gamma", &["--gamma", "0.5"], |f| f.gamma = "0.5".into()),
            ("warmup_epochs", &["--schedule", "cosine", "--warmup-epochs", "2"], |f| {
                f.schedule = ScheduleKind::Cosine;
                f.warmup = "2".into()
            }),
            ("label_smoothing", &["--label-smoothing", "0.1"], |f| f.label_smoothing = "0.1".into()),
            ("no_crop", &["--no-crop"], |f| f.crop = false),
            ("no_flip", &["--no-flip"], |f| f.flip = false),
            ("select_by", &["--select-by", "top1"], |f| f.select_by = SelectBy::Top1),
            ("select_by_top1", &["--select-by-top1"], |f| f.select_by = SelectBy::Top1),
            ("data", &["--data", "elsewhere"], |f| f.data_dir = "elsewhere".into()),
            ("device", &["--device", "cuda"], |f| f.device = "cuda".into()),
            ("limit_train", &["--limit-train", "256"], |f| f.limit_train = "256".into()),
            ("limit_test", &["--limit-test", "100"], |f| f.limit_test = "100".into()),
            ("seed", &["--seed", "3"], |f| f.seed = "3".into()),
            ("init", &["--init", "kaiming"], |f| f.init = Init::KaimingFanOut),
            ("images", &["--images", "mine"], |f| {
                f.source = DataSource::Images;
                f.images_dir = "mine".into()
            }),
            ("val_split", &["--val-split", "0.3"], |f| f.val_split = "0.3".into()),
            ("image_size", &["--images", "mine", "--image-size", "64"], |f| {
                f.source = DataSource::Images;
                f.images_dir = "mine".into();
                f.image_size = "64".into()
            }),
            ("from", &["--from", "trained_models/a.safetensors"], |f| {
                f.start_from = "trained_models/a.safetensors".into()
            }),
            ("freeze_backbone", &["--from", "trained_models/a.safetensors", "--freeze-backbone"], |f| {
                f.start_from = "trained_models/a.safetensors".into();
                f.freeze_backbone = true
            }),
            ("backbone_lr_factor", &["--from", "trained_models/a.safetensors", "--backbone-lr-factor", "0.5"], |f| {
                f.start_from = "trained_models/a.safetensors".into();
                f.backbone_lr_factor = "0.5".into()
            }),
        ];
        let default_run = app(&form());
        for (id, args, edit) in cases {
            let mut f = form();
            edit(&mut f);
            let with_data = if args.contains(&"--data") || args.contains(&"--images") {
                args.to_vec()
            } else {
                [&["--data", "cifar"][..], args].concat()
            };
            let (from_cli, from_app) = (cli(&with_data), app(&f));
            assert_eq!(from_cli, from_app, "--{id}");
            assert_ne!(from_app, default_run, "--{id}: the value chosen is the default, so the case proves nothing");
        }
        let ids: Vec<String> = Train::command().get_arguments().map(|a| a.get_id().to_string()).collect();
        let covered: Vec<&str> = cases.iter().map(|c| c.0).collect();
        for id in &ids {
            assert!(covered.contains(&id.as_str()), "--{id} has no field in the app's Train form (or no case here)");
        }
        assert_eq!(ids.len(), covered.len(), "a case names an option the command line does not have");
    }

    #[test]
    fn bad_values_are_reported_at_their_fields() {
        let f = TrainForm { epochs: "many".into(), lr: "-1".into(), milestones: "5;8".into(), ..form() };
        let errs = f.to_config(Path::new("out"), |_| true).unwrap_err();
        assert!(errs["epochs"].contains("many"), "{errs:?}");
        assert!(errs["milestones"].contains("5;8"), "{errs:?}");
        // A value that parses but is out of range is the config's own check.
        let errs = TrainForm { lr: "-1".into(), ..form() }.to_config(Path::new("out"), |_| true).unwrap_err();
        assert!(errs["lr"].contains("learning rate"), "{errs:?}");
        let errs = form().to_config(Path::new("out"), |_| false).unwrap_err();
        assert!(errs.contains_key("data"), "{errs:?}");
    }

    #[test]
    fn my_images_needs_a_folder_and_drops_the_cifar_only_fields() {
        let f = TrainForm { source: DataSource::Images, limit_train: "256".into(), ..form() };
        let errs = f.to_config(Path::new("out"), |_| true).unwrap_err();
        assert!(errs["images"].contains("one folder of images per class"), "{errs:?}");
        let f = TrainForm { images_dir: "photos".into(), ..f };
        let errs = f.to_config(Path::new("out"), |_| false).unwrap_err();
        assert_eq!(errs["images"], "not a folder");
        let cfg = f.to_config(Path::new("out"), |_| true).unwrap();
        assert_eq!((cfg.images, cfg.data_dir, cfg.limit_train), (Some(PathBuf::from("photos")), None, None));
        let f = TrainForm { image_size: "8".into(), ..f };
        let errs = f.to_config(Path::new("out"), |_| true).unwrap_err();
        assert!(errs["image_size"].contains("between 16 and 512"), "{errs:?}");
    }

    #[test]
    fn settings_saved_before_the_new_fields_existed_still_load() {
        let old = serde_json::json!({"variant": "large", "epochs": "5", "schedule": "Cosine", "lr": "0.2"});
        let f: TrainForm = serde_json::from_value(old).unwrap();
        assert_eq!((f.variant, f.epochs.as_str(), f.schedule), (Variant::Large, "5", ScheduleKind::Cosine));
        assert_eq!(f.momentum, TrainForm::default().momentum);
    }
}
