//! Last-layer-only training (`--freeze-backbone`): the start model's backbone and hidden layer stay as they
//! are, so what they make of an image (its embedding, the classifier's input) never changes during the run.
//! Each training image is embedded once as it is and once mirrored, each validation image once; an epoch is
//! then the classifier alone over those vectors, which takes milliseconds where a whole-network epoch on the
//! same images takes minutes. Random crops are not drawn (each would need its own forward pass): the flip is
//! the augmentation.

use crate::data::{self, Batch, Split};
use crate::exec::graph::MobileNetV3;
use crate::train::evaluate::{check_labels, Tally};
use crate::train::{EvalResult, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Images embedded per forward pass.
const EMBED_BATCH: usize = 128;

/// The embeddings of a run's images (row-major, `dim` numbers per image, in split order).
pub(crate) struct Embedded {
    dim: usize,
    train: Vec<f32>,
    /// The training images mirrored left to right (empty when the run does not flip).
    mirrored: Vec<f32>,
    train_labels: Vec<u32>,
    test: Vec<f32>,
    test_labels: Vec<u32>,
}

impl Embedded {
    /// Embeds both splits with `model` in evaluation mode, telling `progress` the images done of the total after
    /// each forward pass. None when `should_stop` says so between two passes.
    pub(crate) fn compute(
        model: &MobileNetV3,
        train: &Split,
        test: &Split,
        flip: bool,
        mut progress: impl FnMut(usize, usize),
        mut should_stop: impl FnMut() -> bool,
    ) -> Result<Option<Embedded>> {
        let classes = model.config().num_classes;
        check_labels(&train.labels, classes)?;
        check_labels(&test.labels, classes)?;
        let inference = crate::exec::Inference::new(model)?;
        let total = train.len() * (1 + flip as usize) + test.len();
        let mut done = 0;
        let mut embed = |split: &Split, mirror: bool| -> Result<Option<Vec<f32>>> {
            let mut out = Vec::with_capacity(split.len() * model.spec().hidden);
            let (side, bytes) = (split.side, split.image_bytes());
            for first in (0..split.len()).step_by(EMBED_BATCH) {
                if should_stop() {
                    return Ok(None);
                }
                let n = EMBED_BATCH.min(split.len() - first);
                let mut images = vec![0f32; n * bytes];
                for (i, image) in (first..first + n).zip(images.chunks_mut(bytes)) {
                    data::prepare_image(split.image(i), side, 0, 0, mirror, image);
                }
                out.extend(inference.embeddings(&images, n, side)?);
                done += n;
                progress(done, total);
            }
            Ok(Some(out))
        };
        let Some(plain) = embed(train, false)? else { return Ok(None) };
        let mirrored = if flip {
            let Some(m) = embed(train, true)? else { return Ok(None) };
            m
        } else {
            Vec::new()
        };
        let Some(test_embedded) = embed(test, false)? else { return Ok(None) };
        let labels = |s: &Split| s.labels.iter().map(|&l| l as u32).collect();
        Ok(Some(Embedded {
            dim: model.spec().hidden,
            train: plain,
            mirrored,
            train_labels: labels(train),
            test: test_embedded,
            test_labels: labels(test),
        }))
    }

    /// One epoch's batches of training embeddings: shuffled, the partial last batch dropped (as the image
    /// batches are), each image mirrored or not at random when the run flips. Reproducible from `seed`.
    pub(crate) fn epoch_batches(&self, batch: usize, seed: u64) -> Vec<Batch> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut order: Vec<usize> = (0..self.train_labels.len()).collect();
        order.shuffle(&mut rng);
        let d = self.dim;
        order
            .chunks(batch)
            .filter(|c| c.len() == batch)
            .enumerate()
            .map(|(index, idx)| {
                let mut images = Vec::with_capacity(idx.len() * d);
                for &i in idx {
                    let from =
                        if !self.mirrored.is_empty() && rng.random::<bool>() { &self.mirrored } else { &self.train };
                    images.extend_from_slice(&from[i * d..(i + 1) * d]);
                }
                let labels = idx.iter().map(|&i| self.train_labels[i]).collect();
                Batch { images, labels, index }
            })
            .collect()
    }

    /// The validation figures of `model`'s classifier on the validation embeddings (the same figures, in the
    /// same image order, as [`crate::train::evaluate`] on the images).
    pub(crate) fn evaluate(&self, model: &MobileNetV3) -> Result<EvalResult> {
        let classes = model.config().num_classes;
        let mut tally = Tally::new(classes);
        let d = self.dim;
        for (rows, labels) in self.test.chunks(EMBED_BATCH * d).zip(self.test_labels.chunks(EMBED_BATCH)) {
            let h = candle_core::Tensor::from_slice(rows, (labels.len(), d), model.device())?;
            let logits = model.classify_embeddings(&h, crate::exec::graph::layers::Mode::Eval)?;
            tally.add(&logits.flatten_all()?.to_vec1::<f32>()?, labels);
        }
        Ok(tally.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::arch::{ModelConfig, Variant};
    use candle_core::Device;

    fn split(n: usize, side: usize) -> Split {
        let images = (0..n * 3 * side * side).map(|i| (i * 7919 % 251) as u8).collect();
        Split { images, labels: (0..n).map(|i| (i % 3) as u16).collect(), coarse: Vec::new(), side, paths: Vec::new() }
    }

    /// The classifier on an embedding gives the network's logits for its image, and an evaluation on
    /// embeddings gives the same figures as one on the images.
    #[test]
    fn embeddings_give_the_networks_logits_and_its_evaluation() {
        let mut cfg = ModelConfig::new(Variant::Small, 0.25);
        cfg.num_classes = 3;
        let model = MobileNetV3::new(&cfg, &Device::Cpu, 4).unwrap();
        let (train, test) = (split(5, 40), split(7, 40));
        let e = Embedded::compute(&model, &train, &test, true, |_, _| {}, || false).unwrap().unwrap();
        assert_eq!(e.train.len(), 5 * model.spec().hidden);
        assert_eq!(e.mirrored.len(), e.train.len());
        assert_ne!(e.mirrored, e.train);
        let on_embeddings = e.evaluate(&model).unwrap();
        let on_images = crate::train::evaluate(&model, &std::sync::Arc::new(test), 4, || false).unwrap().unwrap();
        assert_eq!(on_embeddings.images, 7);
        assert!((on_embeddings.loss - on_images.loss).abs() < 1e-5, "{} {}", on_embeddings.loss, on_images.loss);
        assert_eq!(on_embeddings.confusion, on_images.confusion);
        assert_eq!(on_embeddings.mistakes.len(), on_images.mistakes.len());
    }

    #[test]
    fn epoch_batches_are_reproducible_whole_and_mix_mirrored_images() {
        let mut cfg = ModelConfig::new(Variant::Small, 0.25);
        cfg.num_classes = 3;
        let model = MobileNetV3::new(&cfg, &Device::Cpu, 4).unwrap();
        let e = Embedded::compute(&model, &split(10, 32), &split(2, 32), true, |_, _| {}, || false).unwrap().unwrap();
        let (a, b) = (e.epoch_batches(4, 9), e.epoch_batches(4, 9));
        assert_eq!(a.len(), 2, "10 images in batches of 4: the partial third is dropped");
        assert_eq!(a[1].images, b[1].images);
        assert_eq!(a[0].labels, b[0].labels);
        let d = e.dim;
        let is_in = |v: &Vec<f32>, r: &[f32]| v.chunks(d).any(|x| x == r);
        let (mut plain, mut mirrored) = (false, false);
        for b in (0..20).flat_map(|seed| e.epoch_batches(4, seed)) {
            for r in b.images.chunks(d) {
                plain |= is_in(&e.train, r);
                mirrored |= is_in(&e.mirrored, r);
            }
        }
        assert!(plain && mirrored, "each image is drawn as it is or mirrored");
    }

    #[test]
    fn a_stop_while_embedding_ends_it_with_nothing() {
        let mut cfg = ModelConfig::new(Variant::Small, 0.25);
        cfg.num_classes = 3;
        let model = MobileNetV3::new(&cfg, &Device::Cpu, 4).unwrap();
        let mut calls = 0;
        let (train, test) = (split(300, 16), split(2, 16));
        let out = Embedded::compute(
            &model,
            &train,
            &test,
            true,
            |_, _| {},
            || {
                calls += 1;
                calls > 2
            },
        );
        assert!(out.unwrap().is_none());
    }
}
