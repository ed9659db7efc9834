//! Classifying image files with a model: the engine behind `mobilenetv3 classify` and the Classify tab.

use crate::data::preprocess;
use crate::exec::graph::MobileNetV3;
use crate::exec::Inference;
use crate::kernels::loss::softmax_in_place;
use crate::model::weights::{load_model, LoadOptions, LoadedModel, ModelMeta, ModelSummary, WeightsError};
use candle_core::Device;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Prediction {
    pub index: usize,
    pub label: String,
    pub prob: f32,
}

/// The outcome for one file: its top-k predictions or why it could not be classified.
#[derive(Clone, Debug)]
pub struct FileResult {
    pub path: PathBuf,
    pub outcome: Result<Vec<Prediction>, String>,
}

/// Expands folders into the image files they hold (sorted, not recursive into hidden entries). Files named
/// directly are kept whatever their extension, so that a broken file gets its own error.
pub fn collect_images(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            // file_type() does not follow symlinks: a linked folder is skipped, so a link loop cannot recurse.
            let mut found: Vec<(PathBuf, std::fs::FileType)> = match std::fs::read_dir(p) {
                Ok(rd) => rd.filter_map(|e| e.ok()).filter_map(|e| Some((e.path(), e.file_type().ok()?))).collect(),
                // Kept as an entry of its own, so that its result says why (see `preprocess::decode`).
                Err(_) => {
                    out.push(p.clone());
                    continue;
                }
            };
            found.sort_by(|a, b| a.0.cmp(&b.0));
            for (f, kind) in found {
                let hidden = f.file_name().map(|n| n.to_string_lossy().starts_with('.')).unwrap_or(true);
                if hidden {
                    continue;
                }
                if kind.is_dir() {
                    out.extend(collect_images(&[f]));
                } else if (kind.is_file() || (kind.is_symlink() && f.is_file())) && preprocess::has_image_extension(&f)
                {
                    out.push(f);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out
}

/// Model files in a folder (`*.safetensors`, `*.pth`, `*.pt`), sorted by name.
pub fn list_models(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    v.retain(|p| {
        let hidden = p.file_name().map(|n| n.to_string_lossy().starts_with('.')).unwrap_or(true);
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
        !hidden && p.is_file() && matches!(ext, "safetensors" | "pth" | "pt")
    });
    v.sort();
    v
}

/// A model file that can be used, with what its header says.
pub struct ModelFile {
    pub path: PathBuf,
    pub summary: ModelSummary,
}

/// The model files of `dir` described from their headers (see [`crate::model::weights::describe`]), and the
/// files that cannot be used with the reason. The one scan behind the CLI's choice of model, the app's model
/// picker and the accuracy chart.
pub fn scan_models(dir: &Path, opts: &LoadOptions) -> (Vec<ModelFile>, Vec<(PathBuf, String)>) {
    let (mut usable, mut rejected) = (Vec::new(), Vec::new());
    for path in list_models(dir) {
        match crate::model::weights::describe(&path, opts) {
            Ok(summary) => usable.push(ModelFile { path, summary }),
            Err(e) => rejected.push((path, e.to_string())),
        }
    }
    (usable, rejected)
}

/// A model file and the top-1 (a fraction) its header records.
pub type RankedModel = (PathBuf, Option<f64>);

/// The usable model files of `dirs`, most accurate first: by the top-1 each header records (a file without one
/// ranks below every file that has one; ties keep the earlier folder, then the earlier name). Only headers are
/// read, so a file can still fail to load (weights that are not finite): callers try the next. Files that
/// cannot be used come back with the reason.
pub fn models_by_accuracy(dirs: &[PathBuf], opts: &LoadOptions) -> (Vec<RankedModel>, Vec<(PathBuf, String)>) {
    let (mut ranked, mut rejected) = (Vec::new(), Vec::new());
    for dir in dirs {
        let (usable, r) = scan_models(dir, opts);
        ranked.extend(usable.into_iter().map(|m| {
            let top1 = m.summary.top1();
            (m.path, top1)
        }));
        rejected.extend(r);
    }
    // A stable sort keeps the folder and name order among equals.
    ranked.sort_by(|a: &RankedModel, b: &RankedModel| b.1.unwrap_or(-1.0).total_cmp(&a.1.unwrap_or(-1.0)));
    (ranked, rejected)
}

/// Why a model cannot classify: its file cannot be loaded, or its inference cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A model ready to classify images: its inference executor (chosen for its device by [`crate::exec::choose`]),
/// its class names and its normalisation. The CLI, the app and `evaluate` all classify through this, on slices.
pub struct Classifier {
    inference: Inference<MobileNetV3>,
    pub meta: ModelMeta,
}

impl Classifier {
    pub fn new(loaded: LoadedModel) -> candle_core::Result<Self> {
        let model = MobileNetV3::from_params(&loaded.meta.config, loaded.params);
        Ok(Classifier { inference: Inference::only(model)?, meta: loaded.meta })
    }

    /// Loads a weight file (any format [`crate::model::weights::load_model`] reads) for classification.
    pub fn load(path: &Path, device: &Device, opts: &LoadOptions) -> Result<Self, ClassifyError> {
        Ok(Self::new(load_model(path, device, opts)?)?)
    }

    /// The normalised input of a decoded image, at the model's image size.
    pub(crate) fn prepare(&self, img: &image::DynamicImage) -> Vec<f32> {
        prepare_image(&self.meta, img)
    }

    /// Grad-CAM of one decoded image for `class` (None: its top class), on the CPU inference plan; None where
    /// this classifier runs the graph (off the CPU).
    pub fn grad_cam(&self, img: &image::DynamicImage, class: Option<usize>) -> Option<crate::exec::inference::GradCam> {
        match &self.inference {
            Inference::Plan { plan, .. } => Some(plan.grad_cam(&self.prepare(img), self.meta.image_size, class)),
            Inference::Graph(_) => None,
        }
    }

    /// The top-k predictions for one decoded image and, on the CPU plan, its Grad-CAM for the top class: one
    /// pass through the network gives both (the map's logits are the classification's).
    pub(crate) fn classify_and_explain(
        &self,
        img: &image::DynamicImage,
        k: usize,
    ) -> candle_core::Result<(Vec<Prediction>, Option<crate::exec::inference::GradCam>)> {
        match self.grad_cam(img, None) {
            Some(cam) => {
                let mut p = cam.logits.clone();
                softmax_in_place(&mut p);
                Ok((top_k(&p, &self.meta.class_names, k), Some(cam)))
            }
            None => Ok((self.classify_image(img, k)?, None)),
        }
    }

    /// Softmax probabilities for prepared inputs, one row per image (in batches of 64).
    pub(crate) fn probabilities(&self, inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let classes = self.meta.config.num_classes;
        let mut rows = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(64) {
            let x: Vec<f32> = chunk.concat();
            let logits = self.inference.logits(&x, chunk.len(), self.meta.image_size)?;
            for row in logits.chunks(classes) {
                let mut p = row.to_vec();
                softmax_in_place(&mut p);
                rows.push(p);
            }
        }
        Ok(rows)
    }

    /// The top-k predictions for one decoded image.
    pub(crate) fn classify_image(&self, img: &image::DynamicImage, k: usize) -> candle_core::Result<Vec<Prediction>> {
        let probs = self.probabilities(&[self.prepare(img)])?;
        Ok(top_k(&probs[0], &self.meta.class_names, k))
    }

    /// Classifies files; a file that cannot be read gets an error result and the others still run.
    pub fn classify_files(&self, files: &[PathBuf], k: usize) -> candle_core::Result<Vec<FileResult>> {
        let prepared: Vec<Result<Vec<f32>, String>> =
            files.iter().map(|p| preprocess::decode(p).map(|img| self.prepare(&img))).collect();
        let ok: Vec<Vec<f32>> = prepared.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        let mut probs = self.probabilities(&ok)?.into_iter();
        Ok(files
            .iter()
            .zip(prepared)
            .map(|(path, r)| FileResult {
                path: path.clone(),
                outcome: match r {
                    Ok(_) => Ok(top_k(&probs.next().unwrap_or_default(), &self.meta.class_names, k)),
                    Err(e) => Err(e),
                },
            })
            .collect())
    }
}

/// The k most likely classes of one probability row.
pub(crate) fn top_k(probs: &[f32], class_names: &[String], k: usize) -> Vec<Prediction> {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    idx.into_iter()
        .take(k)
        .map(|i| Prediction {
            index: i,
            label: class_names.get(i).cloned().unwrap_or_else(|| format!("class_{i}")),
            prob: probs[i],
        })
        .collect()
}

/// Normalised input for an already decoded image.
pub fn prepare_image(meta: &ModelMeta, img: &image::DynamicImage) -> Vec<f32> {
    let rgb = preprocess::resize_rgb(img, meta.image_size as u32);
    preprocess::normalise(&rgb, meta.mean, meta.std)
}
