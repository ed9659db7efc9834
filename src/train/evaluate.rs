//! Accuracy, loss, per-class accuracy, the confusion matrix and the most confident mistakes of a model on a
//! split: the figures of `mobilenetv3 evaluate`, the app's Evaluate tab and each epoch's validation.

use crate::data::{self, Split};
use crate::exec::graph::MobileNetV3;
use crate::train::{Result, TrainError};
use serde::Serialize;
use std::sync::Arc;

/// Accuracy and loss over a split.
#[derive(Clone, Debug, Serialize)]
pub struct EvalResult {
    pub images: usize,
    pub loss: f64,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<f64>,
    /// confusion[true][predicted]
    pub confusion: Vec<Vec<u32>>,
    /// The most confident wrong predictions, most confident first.
    pub mistakes: Vec<Mistake>,
    /// Per image, in split order: the predicted class and its softmax probability (what a cell of the
    /// confusion matrix is made of; not in the JSON report).
    #[serde(skip)]
    pub predictions: Vec<(u32, f32)>,
}

/// A test image the model got wrong, and how sure it was.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Mistake {
    /// Index of the image in the split.
    pub index: usize,
    pub truth: usize,
    pub predicted: usize,
    /// Softmax probability of the wrong class.
    pub confidence: f32,
    /// The image's file, where the split knows it (a folder of images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<std::path::PathBuf>,
}

/// How many of the most confident mistakes an evaluation keeps.
pub const MISTAKES_KEPT: usize = 32;

/// Evaluates a model on a split (eval mode, in order).
pub fn evaluate(
    model: &MobileNetV3,
    split: &Arc<Split>,
    batch: usize,
    should_stop: impl FnMut() -> bool,
) -> Result<Option<EvalResult>> {
    evaluate_with_progress(model, split, batch, should_stop, |_, _| {})
}

/// [`evaluate`], telling `progress` the images done and the total after each batch.
pub fn evaluate_with_progress(
    model: &MobileNetV3,
    split: &Arc<Split>,
    batch: usize,
    mut should_stop: impl FnMut() -> bool,
    mut progress: impl FnMut(usize, usize),
) -> Result<Option<EvalResult>> {
    let classes = model.config().num_classes;
    check_labels(&split.labels, classes)?;
    // Folded once per evaluation: on the CPU the fused inference plan, several times faster than the graph.
    let inference = crate::exec::Inference::new(model)?;
    let mut tally = Tally::new(classes);
    for b in data::epoch_batches(split.clone(), batch, None, false, false, false, 0, 2) {
        if should_stop() {
            return Ok(None);
        }
        let logits = inference.logits(&b.images, b.labels.len(), split.side)?;
        tally.add(&logits, &b.labels);
        progress(tally.seen, split.len());
    }
    let mut result = tally.finish();
    for m in &mut result.mistakes {
        m.path = split.path(m.index).map(|p| p.to_path_buf());
    }
    Ok(Some(result))
}

/// Refuses, before any work, labels an evaluation cannot tally: none, or one past the model's classes (or a
/// model with more classes than a confusion matrix is kept for: a file may declare up to 100,000).
pub(crate) fn check_labels(labels: &[u16], classes: usize) -> Result<()> {
    if classes > crate::data::folder::MAX_CLASSES {
        return Err(TrainError::TooManyClasses { classes });
    }
    if labels.is_empty() {
        return Err(TrainError::NoImages);
    }
    if let Some(&max) = labels.iter().max() {
        if max as usize >= classes {
            return Err(TrainError::LabelsOutOfRange { max, classes });
        }
    }
    Ok(())
}

/// The figures of an evaluation, added up batch by batch from logits (images in split order).
pub(crate) struct Tally {
    classes: usize,
    confusion: Vec<Vec<u32>>,
    mistakes: Vec<Mistake>,
    predictions: Vec<(u32, f32)>,
    loss_sum: f64,
    top1: usize,
    top5: usize,
    seen: usize,
}

impl Tally {
    pub(crate) fn new(classes: usize) -> Tally {
        Tally {
            classes,
            confusion: vec![vec![0u32; classes]; classes],
            mistakes: Vec::new(),
            predictions: Vec::new(),
            loss_sum: 0.0,
            top1: 0,
            top5: 0,
            seen: 0,
        }
    }

    /// Adds the next images' logits (n x classes, row-major) and true labels.
    pub(crate) fn add(&mut self, logits: &[f32], labels: &[u32]) {
        let classes = self.classes;
        self.loss_sum += crate::kernels::loss::cross_entropy_sum(logits, labels, classes);
        for (i, (row, &label)) in logits.chunks(classes).zip(labels).enumerate() {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            let label = label as usize;
            self.top1 += (idx[0] == label) as usize;
            self.top5 += idx.iter().take(5).any(|&i| i == label) as usize;
            self.confusion[label][idx[0]] += 1;
            // Softmax probability of the top class: 1 / sum(exp(l - l_max)).
            let max = row[idx[0]];
            let confidence = 1.0 / row.iter().map(|&l| (l - max).exp()).sum::<f32>();
            self.predictions.push((idx[0] as u32, confidence));
            if idx[0] != label {
                self.mistakes.push(Mistake {
                    index: self.seen + i,
                    truth: label,
                    predicted: idx[0],
                    confidence,
                    path: None,
                });
                if self.mistakes.len() > 4 * MISTAKES_KEPT {
                    keep_most_confident(&mut self.mistakes);
                }
            }
        }
        self.seen += labels.len();
    }

    pub(crate) fn finish(mut self) -> EvalResult {
        let per_class = self
            .confusion
            .iter()
            .enumerate()
            .map(|(c, row)| {
                let total: u32 = row.iter().sum();
                if total == 0 {
                    0.0
                } else {
                    row[c] as f64 / total as f64
                }
            })
            .collect();
        keep_most_confident(&mut self.mistakes);
        let n = self.seen.max(1) as f64;
        EvalResult {
            images: self.seen,
            loss: self.loss_sum / n,
            top1: self.top1 as f64 / n,
            top5: self.top5 as f64 / n,
            per_class,
            confusion: self.confusion,
            mistakes: self.mistakes,
            predictions: self.predictions,
        }
    }
}

/// One CSV field (RFC 4180): quoted, with its quotes doubled, when it holds a comma, a quote or a line break.
/// Class names come from the model file's header, so they can hold any of these.
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// The confusion matrix as CSV: a header of class names, then one row per true class.
pub fn confusion_csv(confusion: &[Vec<u32>], class_names: &[String]) -> String {
    let name = |i: usize| class_names.get(i).map(|n| csv_field(n).into_owned()).unwrap_or_else(|| format!("class_{i}"));
    let mut s = String::from("true\\predicted");
    for i in 0..confusion.len() {
        s.push(',');
        s.push_str(&name(i));
    }
    s.push('\n');
    for (i, row) in confusion.iter().enumerate() {
        s.push_str(&name(i));
        for v in row {
            s.push_str(&format!(",{v}"));
        }
        s.push('\n');
    }
    s
}

fn keep_most_confident(m: &mut Vec<Mistake>) {
    m.sort_by(|a, b| b.confidence.total_cmp(&a.confidence).then(a.index.cmp(&b.index)));
    m.truncate(MISTAKES_KEPT);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::{ModelConfig, Variant};
    use candle_core::Device;

    fn split(n: usize) -> Arc<Split> {
        Arc::new(Split {
            images: vec![0; n * data::IMAGE_BYTES],
            labels: vec![0; n],
            coarse: vec![0; n],
            side: 32,
            paths: Vec::new(),
        })
    }

    #[test]
    fn a_model_with_too_many_classes_or_too_few_for_the_labels_or_an_empty_split_is_refused_before_any_work() {
        let mut cfg = ModelConfig::new(Variant::Small, 0.25);
        cfg.num_classes = 1001;
        let model = MobileNetV3::new(&cfg, &Device::Cpu, 0).unwrap();
        let err = evaluate(&model, &split(2), 2, || false).unwrap_err();
        assert!(matches!(err, TrainError::TooManyClasses { classes: 1001 }), "{err}");
        assert!(err.to_string().contains("1001 classes, more than the 1000"), "{err}");

        cfg.num_classes = 3;
        let model = MobileNetV3::new(&cfg, &Device::Cpu, 0).unwrap();
        let mut labelled = (*split(2)).clone();
        labelled.labels[1] = 7;
        let err = evaluate(&model, &Arc::new(labelled), 2, || false).unwrap_err();
        assert!(matches!(err, TrainError::LabelsOutOfRange { max: 7, classes: 3 }), "{err}");
        assert!(evaluate(&model, &split(2), 2, || false).unwrap().is_some());

        let model = MobileNetV3::new(&ModelConfig::new(Variant::Small, 0.25), &Device::Cpu, 0).unwrap();
        let err = evaluate(&model, &split(0), 2, || false).unwrap_err().to_string();
        assert!(err.contains("no test images"), "{err}");
        assert!(evaluate(&model, &split(2), 2, || false).unwrap().is_some());
    }

    /// Every image labelled with a class the model never predicts is a mistake; each names its file.
    #[test]
    fn a_mistake_names_the_file_of_its_image_where_the_split_knows_it() {
        let mut cfg = ModelConfig::new(Variant::Small, 0.25);
        cfg.num_classes = 3;
        let model = MobileNetV3::new(&cfg, &Device::Cpu, 0).unwrap();
        let mut s = (*split(6)).clone();
        let probe = evaluate(&model, &Arc::new(s.clone()), 6, || false).unwrap().unwrap();
        let never = (0..3u16).find(|&c| probe.predictions.iter().all(|p| p.0 != c as u32)).unwrap_or(0);
        s.labels = vec![never; 6];
        s.paths = (0..6).map(|i| std::path::PathBuf::from(format!("photos/{i}.jpg"))).collect();
        let r = evaluate(&model, &Arc::new(s.clone()), 4, || false).unwrap().unwrap();
        assert!(!r.mistakes.is_empty(), "{r:?}");
        for m in &r.mistakes {
            assert_eq!(m.path.as_deref(), Some(s.paths[m.index].as_path()), "{m:?}");
        }
        let json = serde_json::to_string(&r.mistakes[0]).unwrap();
        assert!(json.contains("\"path\":\"photos/"), "{json}");
        // CIFAR-100's splits know no files: the mistakes say so by leaving the field out.
        s.paths.clear();
        let r = evaluate(&model, &Arc::new(s), 4, || false).unwrap().unwrap();
        assert!(r.mistakes.iter().all(|m| m.path.is_none()));
        assert!(!serde_json::to_string(&r.mistakes[0]).unwrap().contains("path"));
    }

    #[test]
    fn class_names_with_commas_quotes_or_line_breaks_stay_one_csv_field() {
        assert_eq!(csv_field("apple"), "apple");
        assert_eq!(csv_field("maple, red"), "\"maple, red\"");
        assert_eq!(csv_field("say \"hi\"\nnow"), "\"say \"\"hi\"\"\nnow\"");
        let csv = confusion_csv(&[vec![1, 0], vec![0, 2]], &["a,b".into(), "c".into()]);
        assert_eq!(csv, "true\\predicted,\"a,b\",c\n\"a,b\",1,0\nc,0,2\n");
    }
}
