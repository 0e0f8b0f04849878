//! The matrix schemes that need no module of their own: He / Xavier / LeCun's dispatch,
//! orthogonal (Saxe et al. 2013), delta-orthogonal (Xiao et al. 2018), critical-line
//! orthogonal (Pennington et al. 2017), EOI layers, Fixup (Zhang et al. 2019) and LSUV's
//! pre-init (Mishkin & Matas 2016).

use crate::activation::Activation;
use crate::banded::{self, HaarBands};
use crate::critical::{critical_point, fixed_point_of};
use crate::eoi::sparse_orthogonal_entries;
use crate::error::SchemeError;
use crate::init::{SparseWeight, WeightValues, dense};
use crate::layer::{LayerKind, LayerSpec};
use crate::linalg::haar_orthogonal;
use crate::params::{
    ConvMode, CriticalParams, CriticalTarget, DeltaOrthogonalParams, EoiParams, FanMode,
    FixupParams, GainChoice, MaskMode, OrthogonalParams, VarianceParams,
};
use crate::rng::{Law, Stream};
use crate::table::Scheme;
use crate::variance::{self, Family, bias, resolve_gain};

/// He / Xavier / LeCun, by `scheme`'s variant.
pub(crate) fn variance_scheme(
    scheme: &Scheme,
    p: &VarianceParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> Result<(WeightValues, Option<Vec<f64>>), SchemeError> {
    let family = match scheme {
        Scheme::Xavier(_) => Family::Xavier,
        Scheme::Lecun(_) => Family::Lecun,
        _ => Family::He,
    };
    variance::variance_scaling(family, p, spec, rng, notes, scheme.name())
}

pub(crate) fn orthogonal(
    p: &OrthogonalParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> (WeightValues, Option<Vec<f64>>) {
    let gain = resolve_gain(p.gain, spec, notes);
    (orthogonal_values(spec, gain, rng), bias(p.bias, spec, rng))
}

/// [`orthogonal_flat`] as weight values: one group on stream v2 at 2:1 or more is left
/// to be produced band by band (the same draws; the values of the order its layout
/// streams in), so that `orthogonal`, `critical` and `delta-orthogonal` on a linear layer
/// never hold the weight whole.
fn orthogonal_values(spec: &LayerSpec, gain: f64, rng: &mut Stream) -> WeightValues {
    let cols = spec.n_in * spec.taps();
    if spec.groups == 1 && banded::applies(spec.n_out, cols, rng.version()) {
        match HaarBands::new(spec.n_out, cols, gain, rng) {
            Some(bands) => WeightValues::Orthogonal(bands),
            None => dense(householder_after_failed_cholesky(spec, gain, rng)),
        }
    } else {
        dense(orthogonal_flat(spec, gain, rng))
    }
}

/// What [`haar_orthogonal`] returns once its CholeskyQR failed (a single group).
fn householder_after_failed_cholesky(spec: &LayerSpec, gain: f64, rng: &mut Stream) -> Vec<f64> {
    crate::linalg::householder_haar(spec.n_out, spec.n_in * spec.taps(), gain, rng)
}

pub(crate) fn delta_orthogonal(
    p: &DeltaOrthogonalParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> Result<(WeightValues, Option<Vec<f64>>), SchemeError> {
    let (gain, sigma_b) = delta_orthogonal_gain(p, spec, notes)?;
    let w = orthogonal_delta(spec, gain, rng, notes);
    Ok((w, normal_bias(spec, sigma_b, rng)))
}

/// LSUV's orthonormal pre-init (the rescaling needs forward passes: the caller's).
pub(crate) fn lsuv_pre_init(
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> (WeightValues, Option<Vec<f64>>) {
    notes.push(
        "lsuv: orthonormal pre-init only; the variance rescaling needs forward passes (trainer)"
            .into(),
    );
    (
        dense(orthogonal_flat(spec, 1.0, rng)),
        spec.has_bias.then(|| vec![0.0; spec.bias_len()]),
    )
}

/// `N(0, σ_b²)` biases (exact zeros when `σ_b = 0`), `None` without a bias.
fn normal_bias(spec: &LayerSpec, sigma_b: f64, rng: &mut Stream) -> Option<Vec<f64>> {
    spec.has_bias.then(|| {
        let mut b = vec![0.0; spec.bias_len()];
        if sigma_b > 0.0 {
            rng.fill_normal(&mut b, sigma_b);
        }
        b
    })
}

/// Saxe orthogonal per group on the flattened `(n_out, n_in·Πk)` kernel, times `gain`.
/// (PyTorch's `orthogonal_` flattens all `C_out` rows at once; per group is our \[design\],
/// schemes.md §0.1.)
pub(crate) fn orthogonal_flat(spec: &LayerSpec, gain: f64, rng: &mut Stream) -> Vec<f64> {
    let cols = spec.n_in * spec.taps();
    let block = spec.n_out * cols;
    let mut w = vec![0.0; spec.numel()];
    for g in 0..spec.groups {
        let q = haar_orthogonal(spec.n_out, cols, gain, rng);
        w[g * block..(g + 1) * block].copy_from_slice(&q);
    }
    w
}

/// Per group a Haar `(n_out × n_in)` matrix times `gain` at the delta tap, zeros elsewhere
/// (Xiao et al. Algorithm 2; 1×1 kernels and linear layers: plain orthogonal).
pub(crate) fn orthogonal_delta(
    spec: &LayerSpec,
    gain: f64,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> WeightValues {
    if spec.kind == LayerKind::Linear || spec.taps() == 1 {
        return orthogonal_values(spec, gain, rng);
    }
    if spec.n_in > spec.n_out {
        notes.push(format!(
            "delta-orthogonal: C_in/g = {} > C_out/g = {}: row-orthogonal tap, not norm-preserving",
            spec.n_in, spec.n_out
        ));
    }
    let tap = spec.delta_tap_or_centre(notes);
    let mut w = vec![0.0; spec.numel()];
    for g in 0..spec.groups {
        let h = haar_orthogonal(spec.n_out, spec.n_in, gain, rng);
        for o in 0..spec.n_out {
            for i in 0..spec.n_in {
                w[spec.index(g, o, i, tap)] = h[o * spec.n_in + i];
            }
        }
    }
    dense(w)
}

/// `(σ_w, σ_b)` of delta-orthogonal. Before tanh-like units (tanh, hard-tanh) a default
/// gain is the critical point `critical` uses (tanh: σ_w² = 1.05, σ_b² = 2.01e-5, Xiao et
/// al.'s demo; hard-tanh: solved at q* = 1/64), not `calculate_gain`'s 5/3, which puts a
/// tanh CNN in the chaotic phase (χ ≈ 1.21 per layer). The critical σ_b is used unless a
/// σ_b > 0 was given; a fixed `--gain` keeps the given σ_w and σ_b.
fn delta_orthogonal_gain(
    p: &DeltaOrthogonalParams,
    spec: &LayerSpec,
    notes: &mut Vec<String>,
) -> Result<(f64, f64), SchemeError> {
    let tanh_like = matches!(spec.activation, Activation::Tanh | Activation::HardTanh);
    if p.gain != GainChoice::FromActivation || !tanh_like {
        return Ok((resolve_gain(p.gain, spec, notes), p.sigma_b));
    }
    let mut critical_notes = Vec::new();
    let (sw2, sb2) = critical_variances(
        &CriticalParams::default(),
        &spec.activation,
        &mut critical_notes,
    )?;
    let sigma_b = if p.sigma_b > 0.0 {
        p.sigma_b
    } else {
        sb2.sqrt()
    };
    notes.push(format!(
        "delta-orthogonal: {} follows: gain sigma_w = {:.6} (sigma_w^2 = {sw2:.6}), sigma_b = {sigma_b:.4e} \
         at the critical point (Xiao et al.), not the tanh gain 5/3; --gain overrides",
        spec.activation,
        sw2.sqrt()
    ));
    notes.extend(
        critical_notes
            .into_iter()
            .map(|n| n.replacen("critical:", "delta-orthogonal:", 1)),
    );
    Ok((sw2.sqrt(), sigma_b))
}

/// Resolves the critical-line variances for the layer's activation (§2.4).
pub(crate) fn critical_variances(
    p: &CriticalParams,
    act: &Activation,
    notes: &mut Vec<String>,
) -> Result<(f64, f64), SchemeError> {
    let target = match p.target {
        CriticalTarget::Default if *act == Activation::Tanh => CriticalTarget::Explicit {
            sigma_w2: 1.05,
            sigma_b2: 2.01e-5,
        },
        CriticalTarget::Default => CriticalTarget::QStar(1.0 / 64.0),
        t => t,
    };
    if *act == Activation::Sigmoid {
        notes.push(
            "critical: logistic sigmoid — a critical line exists only for q* ≳ 45 and gives no \
             isometry; consider tanh"
                .into(),
        );
    }
    if matches!(
        act,
        Activation::Relu | Activation::LeakyRelu { .. } | Activation::PRelu
    ) {
        notes.push(
            "critical: ReLU-like units cannot reach dynamical isometry (J Jᵀ variance ≥ L)".into(),
        );
    }
    let (sw2, sb2) = match target {
        CriticalTarget::QStar(q) => {
            let c = critical_point(act, q)?;
            (c.sigma_w2, c.sigma_b2)
        }
        CriticalTarget::Explicit { sigma_w2, sigma_b2 } => (sigma_w2, sigma_b2),
        CriticalTarget::Default => unreachable!("resolved above"),
    };
    match fixed_point_of(act, sw2, sb2) {
        Ok(fp) => notes.push(format!(
            "critical: {act}: sigma_w^2 = {sw2:.6}, sigma_b^2 = {sb2:.4e}, q* = {:.6}, chi = {:.6}",
            fp.q_star, fp.chi
        )),
        Err(_) => notes.push(format!(
            "critical: {act}: sigma_w^2 = {sw2:.6}, sigma_b^2 = {sb2:.4e}"
        )),
    }
    Ok((sw2, sb2))
}

pub(crate) fn critical(
    p: &CriticalParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> Result<(WeightValues, Option<Vec<f64>>), SchemeError> {
    let (sw2, sb2) = critical_variances(p, &spec.activation, notes)?;
    let delta = p.conv == ConvMode::Delta && spec.kind != LayerKind::Linear;
    let mut sigma_w = sw2.sqrt();
    if p.variance_matched {
        let cols = if delta {
            spec.n_in
        } else {
            spec.n_in * spec.taps()
        };
        if spec.n_out > cols && cols > 0 {
            sigma_w *= (spec.n_out as f64 / cols as f64).sqrt();
            notes
                .push("critical: variance_matched factor sqrt(n_out/n_in) applied [design]".into());
        }
    }
    let w = if delta {
        orthogonal_delta(spec, sigma_w, rng, notes)
    } else {
        orthogonal_values(spec, sigma_w, rng)
    };
    Ok((w, normal_bias(spec, sb2.sqrt(), rng)))
}

/// Weight, bias and mask of one EOI layer.
type EoiLayer = (WeightValues, Option<Vec<f64>>, Option<Vec<bool>>);

/// EOI for one layer at density `d` (§5.1, §5.3, §5.4): a sparse weight (never a dense
/// f64 matrix; the mask, when asked for, is one byte a value).
pub(crate) fn eoi_layer(
    p: &EoiParams,
    d: f64,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> Result<EoiLayer, SchemeError> {
    crate::eoi::check_density(d)?;
    // the reference draws biases before the weights
    let b = normal_bias(spec, p.sigma_b, rng);
    let taps = spec.taps();
    let conv = spec.kind != LayerKind::Linear && taps > 1;
    let dc = if conv && p.more_nonzeros {
        (d * taps as f64).min(1.0).min(d.sqrt())
    } else {
        d
    };
    let tap = if conv {
        spec.delta_tap_or_centre(notes)
    } else {
        0
    };
    let sigma_w = p.sigma_w.get();
    let mut entries = Vec::new();
    let mut unreachable = false;
    for g in 0..spec.groups {
        let (h, _, _, reachable) = sparse_orthogonal_entries(spec.n_out, spec.n_in, dc, rng);
        unreachable |= !reachable;
        entries.extend(h.into_iter().map(|(k, v)| {
            let (o, i) = (k / spec.n_in, k % spec.n_in);
            (spec.index(g, o, i, tap), sigma_w * v)
        }));
    }
    entries.sort_unstable_by_key(|e| e.0);
    if unreachable {
        notes.push(format!(
            "eoi: density {dc:.4} is at or below 1/max(n_out, n_in) = 1/{}: identity returned",
            spec.n_out.max(spec.n_in)
        ));
    }
    let support = || {
        let mut m = vec![false; spec.numel()];
        for &(k, v) in &entries {
            // (σ_w·v can underflow to zero)
            m[k] = v != 0.0;
        }
        m
    };
    let mask = match p.mask {
        MaskMode::None => None,
        MaskMode::Support => Some(support()),
        MaskMode::Trainable => Some(if conv {
            trainable_conv_mask(support(), d, &mut rng.substream("eoi-mask"))
        } else {
            support()
        }),
    };
    let w = WeightValues::Sparse(SparseWeight {
        len: spec.numel(),
        entries,
    });
    Ok((w, b, mask))
}

/// EOI's trainable mask of a convolution (reference `weight_preprocesser.py`
/// `unfreeze_zeros`, schemes.md §5.3 step 4): the support of the centre tap, topped up with
/// uniformly random zero positions anywhere in the kernel until it holds `⌈d·numel⌉`
/// entries (the reference loops `while nonzeros < d·numel`); `d = 1` frees every entry.
/// The added positions start at zero and train. Drawn from its own stream, so the weights
/// do not depend on the mask mode.
fn trainable_conv_mask(support: Vec<bool>, d: f64, rng: &mut Stream) -> Vec<bool> {
    let mut m = support;
    // 1e-9 keeps d·numel that is an integer up to rounding from gaining an entry
    let want = ((d * m.len() as f64) - 1e-9).ceil().max(0.0) as usize;
    let mut zeros: Vec<usize> = (0..m.len()).filter(|&k| !m[k]).collect();
    let have = m.len() - zeros.len();
    let extra = want.saturating_sub(have).min(zeros.len());
    // partial Fisher–Yates: the first `extra` of a uniformly random permutation
    for k in 0..extra {
        let r = k + rng.below((zeros.len() - k) as u64) as usize;
        zeros.swap(k, r);
        m[zeros[k]] = true;
    }
    m
}

/// Fixup (§1.7): branch-last layers and the classifier (weight and bias) zero; other branch
/// layers He normal × `L^(−1/(2m−2))`; layers outside branches (stem, projection shortcuts)
/// He normal unscaled. He uses gain √2 and `fan_mode` (fan_out by default, as the official
/// code). Biases 0.
pub(crate) fn fixup(
    p: &FixupParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> Result<(WeightValues, Option<Vec<f64>>), SchemeError> {
    let zeros_b = spec.has_bias.then(|| vec![0.0; spec.bias_len()]);
    let n = spec.numel();
    if spec.network_output {
        notes.push("fixup: classifier weight and bias zeroed".into());
        return Ok((WeightValues::Zeros(n), zeros_b));
    }
    let fan = match p.fan_mode {
        FanMode::FanIn => spec.fan_in,
        FanMode::FanOut => spec.fan_out,
    };
    let he = |scale: f64, rng: &mut Stream| -> Result<WeightValues, SchemeError> {
        if n == 0 {
            return Ok(WeightValues::Zeros(0));
        }
        if fan == 0 {
            return Err(SchemeError::Shape {
                scheme: "fixup",
                shape: format!("{:?}", spec.shape()),
                reason: "fan is 0".into(),
            });
        }
        let std = (2.0 / fan as f64).sqrt() * scale;
        Ok(WeightValues::Iid(rng.iid(Law::Normal { std }, n)))
    };
    let w = match spec.residual {
        Some(role) if role.position.is_last() => {
            notes.push("fixup: last layer of a residual branch zeroed".into());
            WeightValues::Zeros(n)
        }
        Some(role) => {
            let (l, m) = (role.num_branches, role.branch_layers);
            if l == 0 || m < 2 {
                return Err(SchemeError::Shape {
                    scheme: "fixup",
                    shape: format!("{:?}", spec.shape()),
                    reason: format!(
                        "residual role needs L >= 1 branches and m >= 2 layers per branch before its last (got L = {l}, m = {m})"
                    ),
                });
            }
            let scale = (l as f64).powf(-1.0 / (2.0 * m as f64 - 2.0));
            let w = he(scale, rng)?;
            notes.push(format!(
                "fixup: He normal scaled by L^(-1/(2m-2)) = {scale:.6} (L = {l}, m = {m})"
            ));
            w
        }
        None => he(1.0, rng)?,
    };
    Ok((w, zeros_b))
}
