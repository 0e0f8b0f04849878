//! `random-mask`: a dense initialization with a uniformly random mask at a target density —
//! the baseline that EOI (Nowak et al., "Sparser, Better, Deeper, Stronger: Improving
//! Sparse Training with Exact Orthogonal Initialization", ICML 2024) is measured against
//! (the paper's "plain" arm of a sparse initializer: a standard dense init multiplied by a
//! random mask, schemes.md §5.5–5.6).
//!
//! Per layer at density `d` (the same `--density` / `--sparsity-distribution` as EOI, so
//! ERK and skip-first-last give the same per-layer densities):
//! 1. draw the dense base: He normal (gain of the following activation, fan-in) or Haar
//!    orthogonal on the flattened kernel (gain of the following activation);
//! 2. keep exactly `round(d·numel)` positions (at least one), chosen uniformly without
//!    replacement over the whole weight tensor, and zero the others. The kept values are not
//!    rescaled (the paper's baseline multiplies by the mask, nothing more).
//!
//! The mask (`true` = kept, trainable) is always returned, so `--mask-out` exports it and
//! `reinit verify` holds the zeros fixed while training, as for EOI. Biases are zero.
//! Draw order from the layer's stream: the base first, then the mask.

use crate::builtin::{DENSITY, SPARSITY_DISTRIBUTION, sparsity_distribution};
use crate::eoi::layer_densities;
use crate::error::SchemeError;
use crate::init::WeightValues;
use crate::layer::LayerSpec;
use crate::params::{Density, DensityDistribution, EoiParams, GainChoice, VarianceParams};
use crate::rng::Stream;
use crate::structured::orthogonal_flat;
use crate::table::{Filled, ParamDef, ParamKind, Scheme, SchemeDef};
use crate::variance::{Family, resolve_gain, variance_scaling};

/// The dense initialization that the mask thins out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskBase {
    /// He normal, fan-in, gain of the following activation.
    He,
    /// Haar orthogonal on the flattened kernel × gain of the following activation.
    Orthogonal,
}

/// `random-mask` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomMaskParams {
    /// Global target density (per-layer density when `distribution` is uniform).
    pub density: Density,
    pub distribution: DensityDistribution,
    pub base: MaskBase,
}

impl Default for RandomMaskParams {
    fn default() -> Self {
        RandomMaskParams {
            density: Density::of_scheme("random-mask", 0.05).expect("0.05 is a valid density"),
            distribution: DensityDistribution::Uniform,
            base: MaskBase::He,
        }
    }
}

impl RandomMaskParams {
    /// Every field is checked when it is built ([`Density`] is in (0, 1] by construction).
    pub(crate) fn validate(&self) -> Result<(), SchemeError> {
        Ok(())
    }
}

pub(crate) const DEF: SchemeDef = SchemeDef {
    name: "random-mask",
    aliases: &[],
    summary: "dense He or orthogonal init times a uniformly random mask at the target density (EOI's baseline); zeros held fixed in verify",
    needs: "—",
    paper: "Nowak et al., Sparser, Better, Deeper, Stronger (EOI), ICML 2024 — the random-mask baseline",
    params: &[
        DENSITY,
        SPARSITY_DISTRIBUTION,
        ParamDef {
            name: "base",
            kind: ParamKind::Choice(&["he", "orthogonal"]),
            default: "he",
            help: "the dense initialization the mask thins out",
        },
    ],
    draws_iid: false,
    orthogonal: false,
    build: |g| {
        let mut p = RandomMaskParams::default();
        if let Some(d) = g.density()? {
            p.density = d;
        }
        if let Some(d) = sparsity_distribution(g)? {
            p.distribution = d;
        }
        if let Some(b) = g.choice(
            "base",
            &[("he", MaskBase::He), ("orthogonal", MaskBase::Orthogonal)],
        )? {
            p.base = b;
        }
        Ok(Scheme::RandomMask(p))
    },
};

/// One layer: the dense base, then the mask.
pub(crate) fn fill(
    p: &RandomMaskParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> Result<Filled, SchemeError> {
    let spread = EoiParams {
        density: p.density,
        distribution: p.distribution,
        ..EoiParams::default()
    };
    let d = layer_densities(std::slice::from_ref(spec), &spread)[0];
    let mut w = match p.base {
        MaskBase::He => {
            let he = VarianceParams::default();
            let (w, _) = variance_scaling(Family::He, &he, spec, rng, notes, DEF.name)?;
            w.into_vec()
        }
        MaskBase::Orthogonal => {
            let gain = resolve_gain(GainChoice::FromActivation, spec, notes);
            orthogonal_flat(spec, gain, rng)
        }
    };
    let mask = random_mask(w.len(), d, rng);
    for (x, &keep) in w.iter_mut().zip(&mask) {
        if !keep {
            *x = 0.0;
        }
    }
    let bias = spec.has_bias.then(|| vec![0.0; spec.bias_len()]);
    Ok((WeightValues::Dense(w), bias, Some(mask)))
}

/// `round(d·n)` (at least one when `n > 0`) positions out of `n`, uniformly without
/// replacement (partial Fisher–Yates).
fn random_mask(n: usize, d: f64, rng: &mut Stream) -> Vec<bool> {
    let keep = kept_count(n, d);
    let mut mask = vec![false; n];
    if keep == n {
        mask.iter_mut().for_each(|m| *m = true);
        return mask;
    }
    let mut order: Vec<usize> = (0..n).collect();
    for k in 0..keep {
        let r = k + rng.below((n - k) as u64) as usize;
        order.swap(k, r);
        mask[order[k]] = true;
    }
    mask
}

/// How many of `n` weights a layer at density `d` keeps.
pub(crate) fn kept_count(n: usize, d: f64) -> usize {
    if n == 0 {
        return 0;
    }
    ((d * n as f64).round() as usize).clamp(1, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::init_layer;
    use crate::linalg::orthogonality_error;
    use crate::{Activation, ParamValue, ParamValues};

    fn scheme(d: f64, base: &str, dist: &str) -> Scheme {
        let mut v = ParamValues::default();
        v.set("density", ParamValue::Number(d)).unwrap();
        v.set("base", ParamValue::Text(base.into())).unwrap();
        v.set("sparsity-distribution", ParamValue::Text(dist.into()))
            .unwrap();
        v.build("random-mask", true).unwrap()
    }

    fn specs() -> Vec<LayerSpec> {
        vec![
            LayerSpec::linear(64, 64).with_activation(Activation::Relu),
            LayerSpec::linear(10, 37).with_bias(false),
            LayerSpec::conv(16, 8, &[3, 3], 1).with_activation(Activation::Tanh),
            LayerSpec::conv(32, 32, &[1, 1], 4),
        ]
    }

    #[test]
    fn exact_density_and_the_mask_is_the_zero_pattern() {
        for base in ["he", "orthogonal"] {
            for d in [0.01, 0.125, 0.3, 0.5, 1.0] {
                for (i, spec) in specs().iter().enumerate() {
                    let mut rng = Stream::new(i as u64, "w", "random-mask");
                    let init = init_layer(&scheme(d, base, "uniform"), spec, &mut rng).unwrap();
                    let mask = init.mask.expect("random-mask always returns its mask");
                    let n = spec.numel();
                    let kept = mask.iter().filter(|&&m| m).count();
                    let want = d * n as f64;
                    assert!(
                        (kept as f64 - want).abs() <= 1.0,
                        "{base} d={d} {spec:?}: {kept} kept of {n}"
                    );
                    for (x, m) in init.weight.iter().zip(&mask) {
                        // A continuous draw is never exactly 0: zeros are exactly the mask's.
                        assert_eq!(*x != 0.0, *m, "{base} d={d}");
                    }
                    if let Some(b) = init.bias {
                        assert!(b.iter().all(|&x| x == 0.0));
                    }
                }
            }
        }
    }

    #[test]
    fn kept_values_are_the_dense_base() {
        // At density 1 the mask keeps everything: the weights are the base scheme's
        // draws from the same stream, e.g. exactly orthogonal for `--base orthogonal`.
        let spec = LayerSpec::linear(48, 48).with_bias(false);
        let mut rng = Stream::new(3, "w", "random-mask");
        let init = init_layer(&scheme(1.0, "orthogonal", "uniform"), &spec, &mut rng).unwrap();
        assert!(orthogonality_error(&init.weight, 48, 48) < 1e-12);
        let mut rng = Stream::new(3, "w", "random-mask");
        let thinned = init_layer(&scheme(0.25, "orthogonal", "uniform"), &spec, &mut rng).unwrap();
        for (a, b) in thinned.weight.iter().zip(&init.weight) {
            assert!(*a == 0.0 || a == b);
        }
    }

    #[test]
    fn deterministic_and_seed_dependent() {
        let spec = LayerSpec::conv(16, 8, &[3, 3], 1);
        let s = scheme(0.1, "he", "uniform");
        let run = |seed| init_layer(&s, &spec, &mut Stream::new(seed, "w", "random-mask")).unwrap();
        assert_eq!(run(5), run(5));
        assert_ne!(run(5).mask, run(6).mask);
    }

    #[test]
    fn erk_spreads_density_as_eoi_does() {
        let layers: Vec<(String, LayerSpec)> = specs()
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("w{i}"), s))
            .collect();
        let out = crate::init_many(&layers, &scheme(0.2, "he", "erk"), 1);
        let eoi = EoiParams {
            density: Density::new(0.2).unwrap(),
            distribution: DensityDistribution::Erk,
            ..EoiParams::default()
        };
        let specs: Vec<LayerSpec> = layers.iter().map(|(_, s)| s.clone()).collect();
        for ((r, spec), d) in out.iter().zip(&specs).zip(layer_densities(&specs, &eoi)) {
            let mask = r.as_ref().unwrap().mask.as_ref().unwrap();
            let kept = mask.iter().filter(|&&m| m).count();
            assert_eq!(kept, kept_count(spec.numel(), d.clamp(1e-6, 1.0)));
        }
    }
}
