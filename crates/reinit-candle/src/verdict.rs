//! The verdict on a training run — `trains`, `stalled` or `diverged` — from its
//! loss curve and the loss a model reaches without looking at its inputs.
//!
//! Why the second figure: a network whose forward pass explodes at
//! initialization (He on a ResNet without normalization) starts at a loss far
//! above chance, and a few steps later it has often collapsed to a constant
//! output — the loss of predicting the label frequencies, `ln k` for `k`
//! balanced classes. Measured against its own exploded start that fall looks
//! like training (28.5 → 2.28 on the 16-block fixture, 0.08×), yet held-out
//! accuracy is at chance. So `trains` also needs the final loss below the
//! constant predictor's.

/// How training went; see [`Verdict::judge_with_reason`] for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Trains,
    Stalled,
    Diverged,
}

/// A run "trains" when its loss falls below this fraction of the start (and
/// of the constant predictor's loss).
pub const STALL_RATIO: f64 = 0.9;
/// A loss this many times the initial one is a blow-up: `diverged`.
pub const SPIKE_FACTOR: f64 = 100.0;
/// A loss this many times the initial one (but below [`SPIKE_FACTOR`]) is not
/// steady training: `stalled` even if the run ends low.
pub const UNSTABLE_FACTOR: f64 = 10.0;

impl Verdict {
    /// The verdict alone, without a constant-predictor loss; see
    /// [`Verdict::judge_with_reason`].
    pub fn judge(loss: &[f32]) -> Verdict {
        Verdict::judge_with_reason(loss, None).0
    }

    /// `diverged` if a loss is NaN/inf or, after the first update, spikes above
    /// [`SPIKE_FACTOR`] × the loss at init (the lower of step 0's and the
    /// median of the first twentieth of the steps); `trains` if the
    /// loss falls steadily: the final loss (mean of the last tenth) is at most
    /// [`STALL_RATIO`] × the initial and, when `constant_loss` (the loss of the
    /// best input-independent prediction, see the module docs) is known, at most
    /// [`STALL_RATIO`] × that too; no quarter of the run averages above the
    /// initial loss, and no step exceeds [`UNSTABLE_FACTOR`] × the loss at init;
    /// `stalled` otherwise. The reason says which rule decided, with figures.
    pub fn judge_with_reason(loss: &[f32], constant_loss: Option<f64>) -> (Verdict, String) {
        if loss.is_empty() {
            return (Verdict::Stalled, "no training steps".into());
        }
        if let Some(i) = loss.iter().position(|l| !l.is_finite()) {
            return (
                Verdict::Diverged,
                format!("loss became {} at step {i}", loss[i]),
            );
        }
        let (first, last) = window_means(loss);
        let base = first.max(f64::MIN_POSITIVE);
        // A blow-up is a rise that training caused: the highest loss after
        // the first update, against the loss at init — the lower of step 0's
        // and the first twentieth's median. Not against the first
        // twentieth's mean, which contains an early spike itself (He on the
        // BN-folded ResNet-34: 11.8 → 6.9e8 at step 1 → 6.9, a window mean of
        // 1.4e8 that hid the spike), and not counting step 0, which is the
        // init's own loss (an exploded forward pass is not a divergence).
        let at_init = (loss[0] as f64)
            .min(median(&loss[..(loss.len() / 20).max(1)]))
            .max(f64::MIN_POSITIVE);
        let (peak_at, peak) = loss
            .iter()
            .enumerate()
            .skip(1)
            .fold((0, f32::MIN), |b, (i, &l)| if l > b.1 { (i, l) } else { b });
        let peak = peak as f64;
        if peak > SPIKE_FACTOR * at_init {
            return (
                Verdict::Diverged,
                format!(
                    "loss spiked to {peak:.4e} at step {peak_at}, {:.0}x the {at_init:.4e} at init",
                    peak / at_init
                ),
            );
        }
        if last > STALL_RATIO * first {
            return (
                Verdict::Stalled,
                format!(
                    "final loss {last:.4e} is {:.2}x the initial {first:.4e} (trains needs <= {STALL_RATIO})",
                    last / base
                ),
            );
        }
        if let Some(c) = constant_loss.filter(|c| c.is_finite() && *c > 0.0)
            && last > STALL_RATIO * c
        {
            return (
                Verdict::Stalled,
                format!(
                    "final loss {last:.4e} is {:.2}x the {c:.4e} of a constant prediction \
                     (the label frequencies or target means; trains needs <= {STALL_RATIO}): \
                     it learned nothing from its inputs",
                    last / c
                ),
            );
        }
        if peak > UNSTABLE_FACTOR * at_init {
            return (
                Verdict::Stalled,
                format!(
                    "unstable: loss reached {peak:.4e} at step {peak_at}, {:.0}x the {at_init:.4e} at init",
                    peak / at_init
                ),
            );
        }
        if loss.len() >= 8 {
            let quarter = loss.len() / 4;
            for q in 1..4 {
                let part = &loss[q * quarter..((q + 1) * quarter).min(loss.len())];
                let mean = part.iter().map(|&x| x as f64).sum::<f64>() / part.len() as f64;
                if mean > first {
                    return (
                        Verdict::Stalled,
                        format!(
                            "not steady: quarter {} of the run averages {mean:.4e}, above the initial {first:.4e}",
                            q + 1
                        ),
                    );
                }
            }
        }
        (
            Verdict::Trains,
            format!(
                "loss fell steadily from {first:.4e} to {last:.4e} ({:.2}x)",
                last / base
            ),
        )
    }
}

fn median(values: &[f32]) -> f64 {
    crate::train::median(&mut values.iter().map(|&x| x as f64).collect::<Vec<_>>())
}

/// Mean of the first twentieth (initial) and of the last tenth (final) of the
/// steps, each at least one step.
pub(crate) fn window_means(loss: &[f32]) -> (f64, f64) {
    let head = (loss.len() / 20).max(1);
    let tail = (loss.len() / 10).max(1);
    let mean = |s: &[f32]| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
    (mean(&loss[..head]), mean(&loss[loss.len() - tail..]))
}

/// The loss of the best prediction that ignores the inputs, on `targets`:
/// for cross-entropy the entropy (nats) of the label frequencies, for MSE the
/// mean over output elements of the targets' variance across samples.
pub fn constant_prediction_loss(cross_entropy: bool, targets: &[f32], per_sample: usize) -> f64 {
    if targets.is_empty() {
        return f64::NAN;
    }
    if cross_entropy {
        let mut counts = std::collections::BTreeMap::<u32, usize>::new();
        for &t in targets {
            *counts.entry(t as u32).or_default() += 1;
        }
        let n = targets.len() as f64;
        return -counts
            .values()
            .map(|&c| {
                let p = c as f64 / n;
                p * p.ln()
            })
            .sum::<f64>();
    }
    let per = per_sample.max(1);
    let rows = targets.len() / per;
    let mut total = 0.0;
    for j in 0..per {
        let col = (0..rows).map(|i| targets[i * per + j] as f64);
        let mean = col.clone().sum::<f64>() / rows.max(1) as f64;
        total += col.map(|v| (v - mean).powi(2)).sum::<f64>() / rows.max(1) as f64;
    }
    total / per as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(points: &[(usize, f32)], len: usize) -> Vec<f32> {
        // piecewise-linear through (step, loss) points
        (0..len)
            .map(|i| {
                let w = points
                    .windows(2)
                    .find(|w| i >= w[0].0 && i <= w[1].0)
                    .unwrap();
                let t = (i - w[0].0) as f32 / (w[1].0 - w[0].0).max(1) as f32;
                w[0].1 + t * (w[1].1 - w[0].1)
            })
            .collect()
    }

    #[test]
    fn a_spike_of_orders_of_magnitude_is_divergence_even_if_the_run_ends_low() {
        // He on a ResNet-18 without normalization (issue 14): 30.7 → 298,229 → 9.2
        let (v, why) = Verdict::judge_with_reason(&[30.7, 298_229.0, 9.2], None);
        assert_eq!(v, Verdict::Diverged, "{why}");
        assert!(why.contains("spiked") && why.contains("step 1"), "{why}");
        let (v, why) = Verdict::judge_with_reason(&[2.3, 2.0, f32::NAN], None);
        assert_eq!(v, Verdict::Diverged);
        assert!(why.contains("NaN") && why.contains("step 2"), "{why}");
        assert_eq!(Verdict::judge(&[2.3, f32::INFINITY]), Verdict::Diverged);
        // a spike inside the first twentieth is measured against the loss at
        // init, not hidden in that window's mean (He on the BN-folded
        // ResNet-34 at 32x32, lr 0.1: 11.8, 6.85e8 at step 1, then ≈ 6.9)
        let mut he34 = curve(&[(0, 6.9), (99, 4.0)], 100);
        he34[0] = 11.8;
        he34[1] = 6.85e8;
        let (v, why) = Verdict::judge_with_reason(&he34, Some(2.29));
        assert_eq!(v, Verdict::Diverged, "{why}");
        assert!(why.contains("step 1"), "{why}");
        // an exploded loss at init (step 0) that then falls is not a blow-up
        let mut exploded = curve(&[(0, 2.3), (99, 2.3)], 100);
        exploded[0] = 1e6;
        assert_ne!(Verdict::judge(&exploded), Verdict::Diverged);
    }

    #[test]
    fn trains_only_when_the_loss_falls_steadily() {
        let steady = curve(&[(0, 2.3), (99, 0.2)], 100);
        let (v, why) = Verdict::judge_with_reason(&steady, Some(2.3));
        assert_eq!(v, Verdict::Trains, "{why}");
        // flat: stalled
        assert_eq!(Verdict::judge(&vec![2.3; 100]), Verdict::Stalled);
        // rises well above the start for half the run, then drops at the end
        let bump = curve(&[(0, 2.3), (20, 8.0), (80, 8.0), (99, 0.5)], 100);
        let (v, why) = Verdict::judge_with_reason(&bump, None);
        assert_eq!(v, Verdict::Stalled, "{why}");
        assert!(why.contains("not steady"), "{why}");
        // a 20x excursion (below the divergence factor) is not steady training
        let mut jump = steady.clone();
        jump[50] = 2.3 * 20.0;
        let (v, why) = Verdict::judge_with_reason(&jump, None);
        assert_eq!(v, Verdict::Stalled, "{why}");
        assert!(why.contains("unstable"), "{why}");
        // ordinary minibatch noise on a falling curve still trains
        let noisy: Vec<f32> = steady
            .iter()
            .enumerate()
            .map(|(i, l)| l * if i % 2 == 0 { 1.3 } else { 0.7 })
            .collect();
        assert_eq!(Verdict::judge(&noisy), Verdict::Trains);
    }

    #[test]
    fn a_fall_from_an_exploded_start_to_the_constant_prediction_is_not_training() {
        // He on the 16-block no-normalization fixture under AdamW: 28.5 at
        // init, then the network collapses to predicting the label frequencies
        let collapse = curve(&[(0, 28.5), (5, 2.4), (99, 2.28)], 100);
        let ln10 = 10f64.ln();
        let (v, why) = Verdict::judge_with_reason(&collapse, Some(ln10));
        assert_eq!(v, Verdict::Stalled, "{why}");
        assert!(why.contains("constant prediction"), "{why}");
        // without the constant predictor's loss the same curve looked like training
        assert_eq!(Verdict::judge(&collapse), Verdict::Trains);
        // the same start falling well below ln 10 trains
        let learns = curve(&[(0, 28.5), (5, 2.4), (99, 0.5)], 100);
        assert_eq!(
            Verdict::judge_with_reason(&learns, Some(ln10)).0,
            Verdict::Trains
        );
    }

    #[test]
    fn the_constant_prediction_loss_is_the_label_entropy_or_the_target_variance() {
        // balanced 4 classes: ln 4
        let labels = [0.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0];
        assert!((constant_prediction_loss(true, &labels, 1) - 4f64.ln()).abs() < 1e-12);
        // one class only: nothing to learn beyond the prior
        assert_eq!(constant_prediction_loss(true, &[5.0; 6], 1), 0.0);
        // two output elements per sample: variances 1 and 0, mean 0.5
        let t = [1.0, 7.0, -1.0, 7.0];
        assert!((constant_prediction_loss(false, &t, 2) - 0.5).abs() < 1e-12);
    }
}
