//! The head's pieces on slices, shared by the executors and evaluation: dropout masks, softmax, and softmax
//! cross-entropy with label smoothing.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Inverted-dropout keep masks (0 or 1/(1-p)) drawn from `seed`: every executor draws them here, so all
/// train alike and a run is reproducible.
pub(crate) fn dropout_mask(len: usize, p: f32, seed: u64) -> Option<Vec<f32>> {
    if p <= 0.0 {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    Some((0..len).map(|_| if rng.random::<f32>() < p { 0.0 } else { keep }).collect())
}

/// Mean cross-entropy over the batch with label smoothing e: (1 - e) * nll + e * mean(-log p); and its
/// gradient with respect to the logits.
pub(crate) fn softmax_cross_entropy(logits: &[f32], labels: &[u32], classes: usize, e: f32) -> (f32, Vec<f32>) {
    let n = labels.len();
    let mut grad = vec![0f32; logits.len()];
    let mut loss = 0f64;
    for (i, (row, &label)) in logits.chunks(classes).zip(labels).enumerate() {
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|v| ((v - max) as f64).exp()).sum();
        let log_z = max as f64 + sum.ln();
        let label = label as usize;
        let nll = log_z - row[label] as f64;
        let uniform = log_z - row.iter().map(|v| *v as f64).sum::<f64>() / classes as f64;
        loss += (1.0 - e as f64) * nll + e as f64 * uniform;
        let g = &mut grad[i * classes..(i + 1) * classes];
        for (j, v) in row.iter().enumerate() {
            let prob = ((*v as f64) - log_z).exp();
            let target = (1.0 - e as f64) * (j == label) as u8 as f64 + e as f64 / classes as f64;
            g[j] = ((prob - target) / n as f64) as f32;
        }
    }
    ((loss / n as f64) as f32, grad)
}

/// Softmax of one row of logits, in place.
pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// The summed (not averaged) cross-entropy of rows of logits against their labels, in f64.
pub(crate) fn cross_entropy_sum(logits: &[f32], labels: &[u32], classes: usize) -> f64 {
    logits
        .chunks(classes)
        .zip(labels)
        .map(|(row, &label)| {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let log_z = max as f64 + row.iter().map(|v| ((v - max) as f64).exp()).sum::<f64>().ln();
            log_z - row[label as usize] as f64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_loss_alone_matches_the_loss_of_the_training_step() {
        let logits = [1.0f32, -2.0, 0.5, 3.0, 0.0, -1.0];
        let labels = [2u32, 0];
        let (mean, _) = super::softmax_cross_entropy(&logits, &labels, 3, 0.0);
        let sum = super::cross_entropy_sum(&logits, &labels, 3);
        assert!((sum / 2.0 - mean as f64).abs() < 1e-6, "{sum} {mean}");
        let mut row = [1.0f32, 2.0, 3.0];
        super::softmax_in_place(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6 && row[2] > row[1] && row[1] > row[0]);
    }
}
