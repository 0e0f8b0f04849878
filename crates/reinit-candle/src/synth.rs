//! Synthetic training data that a network can actually learn in `verify`'s
//! budget: class-dependent image patterns a convolutional net separates with
//! global pooling, labels of a fixed random teacher for flat inputs, Markov
//! token sequences over a vocabulary small enough to be seen, and the number
//! of classes a budget can teach.

use crate::data::Rng;

/// The most classes a default task uses, whatever the output width: a
/// 1000-way head cannot learn 1000 classes from a few hundred samples, and a
/// verdict on such a task says nothing.
pub const MAX_TAUGHT_CLASSES: usize = 10;
/// Training samples the budget must show per class for that class to count.
pub const SAMPLES_PER_CLASS: usize = 48;
/// The most distinct token ids a token task draws from.
pub const MAX_TASK_VOCAB: usize = 256;

/// How many of `out_classes` classes a task uses when training shows the
/// model `budget` samples (`steps × batch`; `None`: no limit but
/// [`MAX_TAUGHT_CLASSES`]). At least 2 (where the output has 2).
pub fn classes_taught(out_classes: usize, budget: Option<usize>) -> usize {
    let by_budget = budget.map_or(MAX_TAUGHT_CLASSES, |b| b / SAMPLES_PER_CLASS);
    by_budget.clamp(2, MAX_TAUGHT_CLASSES).min(out_classes)
}

/// `n` samples of shape `[C, spatial…]` in `k` classes: class `c` has its own
/// per-channel offset and a plane wave of its own direction and frequency
/// across the spatial axes (random phase per sample, so the class lives in
/// the texture, not in pixel positions), plus pixel noise. Returns values
/// (sample-major) and labels.
pub fn image_patterns(rng: &mut Rng, sample: &[usize], k: usize, n: usize) -> (Vec<f32>, Vec<u32>) {
    let channels = sample[0];
    let spatial = &sample[1..];
    let per_channel: usize = spatial.iter().product::<usize>().max(1);
    struct Class {
        offset: Vec<f64>,
        amplitude: Vec<f64>,
        /// cycles across the whole extent along each spatial axis
        wave: Vec<f64>,
    }
    let classes: Vec<Class> = (0..k)
        .map(|_| {
            let freq = 1.0 + 3.0 * rng.uniform();
            let mut dir: Vec<f64> = spatial.iter().map(|_| rng.normal()).collect();
            let norm = dir.iter().map(|d| d * d).sum::<f64>().sqrt().max(1e-9);
            dir.iter_mut().for_each(|d| *d *= freq / norm);
            Class {
                offset: (0..channels).map(|_| 0.5 * rng.normal()).collect(),
                amplitude: (0..channels).map(|_| 0.5 + rng.uniform()).collect(),
                wave: dir,
            }
        })
        .collect();
    let mut values = Vec::with_capacity(n * channels * per_channel);
    let mut labels = Vec::with_capacity(n);
    let mut coords = vec![0usize; spatial.len()];
    for _ in 0..n {
        let c = rng.below(k);
        let class = &classes[c];
        let phase = 2.0 * std::f64::consts::PI * rng.uniform();
        for ch in 0..channels {
            coords.iter_mut().for_each(|x| *x = 0);
            for _ in 0..per_channel {
                let t: f64 = coords
                    .iter()
                    .zip(spatial)
                    .zip(&class.wave)
                    .map(|((&x, &len), &w)| w * x as f64 / len.max(1) as f64)
                    .sum();
                let v = class.offset[ch]
                    + class.amplitude[ch] * (2.0 * std::f64::consts::PI * t + phase).sin()
                    + 0.5 * rng.normal();
                values.push(v as f32);
                // next spatial position, last axis fastest
                for a in (0..coords.len()).rev() {
                    coords[a] += 1;
                    if coords[a] < spatial[a] {
                        break;
                    }
                    coords[a] = 0;
                }
            }
        }
        labels.push(c as u32);
    }
    (values, labels)
}

/// Labels in `k` classes of a fixed random teacher, `argmax(tanh(x W1/√d) W2)`,
/// for `n` rows of `x` (row length `d`).
pub fn teacher_labels(rng: &mut Rng, x: &[f32], d: usize, k: usize) -> Vec<u32> {
    let hidden = 32;
    let w1 = rng.normals(d * hidden);
    let w2 = rng.normals(hidden * k);
    x.chunks(d)
        .map(|row| {
            let h: Vec<f32> = (0..hidden)
                .map(|j| {
                    let s: f32 = row
                        .iter()
                        .enumerate()
                        .map(|(i, x)| x * w1[i * hidden + j])
                        .sum();
                    (s / (d as f32).sqrt()).tanh()
                })
                .collect();
            (0..k)
                .map(|c| {
                    h.iter()
                        .enumerate()
                        .map(|(j, hj)| hj * w2[j * k + c])
                        .sum::<f32>()
                })
                .enumerate()
                .fold((0, f32::MIN), |b, (c, s)| if s > b.1 { (c, s) } else { b })
                .0 as u32
        })
        .collect()
}

/// Scales `values` by one factor so that the mean of the squares of the
/// first `train` values is `q`; returns the factor.
pub fn scale_to_second_moment(values: &mut [f32], train: usize, q: f64) -> f64 {
    let head = &values[..train.min(values.len())];
    let m2 = head.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / head.len().max(1) as f64;
    let factor = if m2 > 0.0 { (q / m2).sqrt() } else { 1.0 };
    values
        .iter_mut()
        .for_each(|v| *v = (*v as f64 * factor) as f32);
    factor
}

/// Shifts and scales `values` to mean 0 and variance 1 over the first `train` values.
pub fn standardize(values: &mut [f32], train: usize) {
    let head = &values[..train.min(values.len())];
    let n = head.len().max(1) as f64;
    let mean = head.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = head.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let sd = var.sqrt().max(1e-6);
    values
        .iter_mut()
        .for_each(|v| *v = ((*v as f64 - mean) / sd) as f32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_budget() {
        assert_eq!(classes_taught(1000, Some(2 * 2)), 2);
        assert_eq!(classes_taught(1000, Some(60 * 8)), 10);
        assert_eq!(classes_taught(1000, Some(20 * 8)), 3);
        assert_eq!(classes_taught(1000, None), MAX_TAUGHT_CLASSES);
        assert_eq!(classes_taught(2, Some(10_000)), 2);
        assert_eq!(classes_taught(1, Some(10_000)), 1);
    }

    #[test]
    #[allow(clippy::needless_range_loop)] // 3 channels × 4 classes, indexed both ways
    fn patterns_are_separable_by_channel_means_and_scaling_hits_q() {
        let mut rng = Rng::new(3);
        let (mut v, y) = image_patterns(&mut rng, &[3, 16, 16], 4, 200);
        assert_eq!(v.len(), 200 * 3 * 256);
        // nearest class mean of the per-channel averages classifies well: the
        // classes differ in what global pooling sees
        let feats: Vec<[f64; 3]> = v
            .chunks(768)
            .map(|s| {
                let mut f = [0.0; 3];
                for (c, fc) in f.iter_mut().enumerate() {
                    *fc = s[c * 256..(c + 1) * 256]
                        .iter()
                        .map(|&x| x as f64)
                        .sum::<f64>()
                        / 256.0;
                }
                f
            })
            .collect();
        let mut means = [[0.0f64; 3]; 4];
        let mut counts = [0usize; 4];
        for (f, &c) in feats.iter().zip(&y).take(100) {
            counts[c as usize] += 1;
            for j in 0..3 {
                means[c as usize][j] += f[j];
            }
        }
        for c in 0..4 {
            for j in 0..3 {
                means[c][j] /= counts[c].max(1) as f64;
            }
        }
        let correct = feats
            .iter()
            .zip(&y)
            .skip(100)
            .filter(|(f, c)| {
                let d = |m: &[f64; 3]| (0..3).map(|j| (f[j] - m[j]).powi(2)).sum::<f64>();
                let best = (0..4)
                    .min_by(|&a, &b| d(&means[a]).total_cmp(&d(&means[b])))
                    .unwrap();
                best == **c as usize
            })
            .count();
        assert!(correct > 60, "held-out nearest-mean accuracy {correct}/100");
        scale_to_second_moment(&mut v, 100 * 768, 0.25);
        let m2 = v[..100 * 768]
            .iter()
            .map(|&x| (x as f64).powi(2))
            .sum::<f64>()
            / (100.0 * 768.0);
        assert!((m2 - 0.25).abs() < 1e-4, "{m2}");
    }
}
