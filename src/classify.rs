//! Classifying image files with a model: the engine behind `mobilenetv3 classify` and the Classify tab.

use crate::data::preprocess;
use crate::model::arch::INPUT_SIZE;
use crate::model::weights::LoadedModel;
use candle_core::D;
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
            let mut found: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| Some((e.path(), e.file_type().ok()?))).collect())
                .unwrap_or_default();
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

/// Softmax probabilities for prepared inputs, one row per image.
pub fn probabilities(model: &LoadedModel, inputs: &[Vec<f32>]) -> candle_core::Result<Vec<Vec<f32>>> {
    let mut rows = Vec::with_capacity(inputs.len());
    let runner = model.model.inference()?;
    for chunk in inputs.chunks(64) {
        let x = preprocess::batch(chunk, INPUT_SIZE, model.model.device())?;
        let logits = runner.forward(&x)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)?;
        rows.extend(probs.to_vec2::<f32>()?);
    }
    Ok(rows)
}

/// The k most likely classes of one probability row.
pub fn top_k(probs: &[f32], class_names: &[String], k: usize) -> Vec<Prediction> {
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
pub fn prepare_image(meta: &crate::model::weights::ModelMeta, img: &image::DynamicImage) -> Vec<f32> {
    let rgb = preprocess::resize_rgb(img, INPUT_SIZE as u32);
    preprocess::normalise(&rgb, meta.mean, meta.std)
}

/// Top-k predictions of one prepared image with a CPU inference plan.
pub fn predict(
    plan: &crate::exec::inference::InferencePlan,
    meta: &crate::model::weights::ModelMeta,
    input: &[f32],
    k: usize,
) -> Vec<Prediction> {
    let logits = plan.forward(input, 1, INPUT_SIZE);
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    let probs: Vec<f32> = exp.iter().map(|e| e / sum).collect();
    top_k(&probs, &meta.class_names, k)
}

/// Prepares one file for the model.
pub fn prepare(model: &LoadedModel, path: &Path) -> Result<Vec<f32>, String> {
    let img = preprocess::decode(path)?;
    let rgb = preprocess::resize_rgb(&img, INPUT_SIZE as u32);
    Ok(preprocess::normalise(&rgb, model.meta.mean, model.meta.std))
}

/// Classifies files; a file that cannot be read gets an error result and the others still run.
pub fn classify_files(model: &LoadedModel, files: &[PathBuf], k: usize) -> candle_core::Result<Vec<FileResult>> {
    let prepared: Vec<Result<Vec<f32>, String>> = files.iter().map(|p| prepare(model, p)).collect();
    let ok: Vec<Vec<f32>> = prepared.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let mut probs = probabilities(model, &ok)?.into_iter();
    Ok(files
        .iter()
        .zip(prepared)
        .map(|(path, r)| FileResult {
            path: path.clone(),
            outcome: match r {
                Ok(_) => Ok(top_k(&probs.next().unwrap_or_default(), &model.meta.class_names, k)),
                Err(e) => Err(e),
            },
        })
        .collect())
}
