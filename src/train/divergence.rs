//! Stopping a run that diverges, at the step it happens.

use super::History;

/// Stops a run whose loss is not finite, or that jumps far above its running mean: a run that diverges goes
/// from ~4 to 10^13 within a few steps before it reaches NaN, and nothing it does after that is worth keeping.
#[derive(Default)]
pub(super) struct DivergenceGuard {
    mean: f64,
    steps: usize,
}

impl DivergenceGuard {
    /// How far above the running mean a loss may jump, once the mean has settled.
    const JUMP: f64 = 50.0;
    const SETTLE_STEPS: usize = 20;

    /// What is wrong with this step's loss, if anything.
    pub(super) fn check(&mut self, loss: f32) -> Option<String> {
        let l = f64::from(loss);
        if !l.is_finite() {
            return Some(format!("the loss became {loss}"));
        }
        if self.steps >= Self::SETTLE_STEPS && l > Self::JUMP * self.mean {
            return Some(format!(
                "the loss jumped to {loss:.4e}, {:.0} times its running mean {:.3}",
                l / self.mean,
                self.mean
            ));
        }
        self.mean = if self.steps == 0 { l } else { 0.98 * self.mean + 0.02 * l };
        self.steps += 1;
        None
    }
}

/// What a failed run leaves, for its message.
pub(super) fn kept(h: &History) -> String {
    match h.best_epoch {
        Some(e) => format!("The best checkpoint (epoch {e}) is kept."),
        None => "No checkpoint was saved.".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_divergence_guard_stops_non_finite_losses_and_jumps_but_not_noise() {
        let mut g = DivergenceGuard::default();
        for i in 0..200 {
            // A normal run: ~4.6 falling to ~2, with step-to-step noise of a factor of 2.
            let l = 4.6 - 2.5 * (i as f32 / 200.0) * if i % 2 == 0 { 1.0 } else { 0.5 };
            assert_eq!(g.check(l), None, "step {i}");
        }
        assert!(g.check(500.0).unwrap().contains("times its running mean"));
        assert!(DivergenceGuard::default().check(f32::NAN).unwrap().contains("NaN"));
        assert!(DivergenceGuard::default().check(f32::INFINITY).unwrap().contains("inf"));
    }
}
