//! What a scheme produces for a weight ([`LayerInit`], lazily [`LazyLayerInit`] with
//! [`WeightValues`]) and the entry points: one layer ([`init_layer`], [`init_layer_lazy`];
//! the table's `Scheme::fill` dispatches), many layers in parallel ([`init_many`]), norm
//! layers ([`init_norm`]) and LSUV's rescaling step ([`lsuv_rescale`]). The schemes' math is
//! in their own modules and in `structured.rs`.

use rayon::prelude::*;

use crate::banded::HaarBands;
use crate::eoi::layer_densities;
use crate::error::SchemeError;
use crate::layer::{LayerSpec, NormOptions, NormSpec};
use crate::params::{Density, DensityDistribution, EoiParams, LsuvParams, LsuvTolOn};
use crate::rng::{IidFill, Stream};
use crate::table::Scheme;

/// What a scheme produced for one weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerInit {
    /// Canonical layout `[groups·n_out][n_in][k…]`, row-major.
    pub weight: Vec<f64>,
    /// Length `groups·n_out`; `None` = leave the model's bias as it is (or it has none).
    pub bias: Option<Vec<f64>>,
    /// EOI's mask in the weight's layout (`true` = trainable), when requested.
    pub mask: Option<Vec<bool>>,
    /// Choices and warnings to show in reports.
    pub notes: Vec<String>,
}

/// A weight as a scheme produced it: values, or i.i.d. draws not yet made
/// (so a caller can produce a huge weight piece by piece, straight to disk).
#[derive(Debug, Clone, PartialEq)]
pub enum WeightValues {
    /// Canonical layout, as in [`LayerInit::weight`].
    Dense(Vec<f64>),
    /// All zeros.
    Zeros(usize),
    /// I.i.d. draws, in whatever order the consumer asks for them: [`Self::into_vec`] and
    /// [`init_layer`] lay them out in the canonical order, but the ONNX rewrite draws them
    /// straight in the tensor's *stored* order (no transpose; the law is the same, the value
    /// at a given weight position differs from `init_layer`'s for transposed layouts).
    Iid(IidFill),
    /// A Haar (semi-)orthogonal matrix not yet computed: produced band by band, in the
    /// stored order of either layout ([`HaarBands::for_each_stored`]), never whole.
    Orthogonal(HaarBands),
    /// Zeros but for a few entries (EOI, IDInit): canonical layout, as the other variants.
    Sparse(SparseWeight),
}

/// A weight that is zero but for `entries` — `(canonical index, value)`, by index, each
/// index once: what EOI and IDInit make, held at ~16 bytes a non-zero instead of 8 a value.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseWeight {
    pub len: usize,
    pub entries: Vec<(usize, f64)>,
}

impl SparseWeight {
    /// The dense values.
    pub fn to_vec(&self) -> Vec<f64> {
        let mut w = vec![0.0; self.len];
        for &(k, v) in &self.entries {
            w[k] = v;
        }
        w
    }
}

impl WeightValues {
    pub fn len(&self) -> usize {
        match self {
            WeightValues::Dense(v) => v.len(),
            WeightValues::Zeros(n) => *n,
            WeightValues::Iid(f) => f.len(),
            WeightValues::Orthogonal(h) => h.len(),
            WeightValues::Sparse(s) => s.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values, drawn now if they were not yet.
    pub fn into_vec(self) -> Vec<f64> {
        match self {
            WeightValues::Dense(v) => v,
            WeightValues::Zeros(n) => vec![0.0; n],
            WeightValues::Iid(f) => f.to_vec(),
            WeightValues::Orthogonal(h) => h.to_vec(),
            WeightValues::Sparse(s) => s.to_vec(),
        }
    }
}

/// [`LayerInit`] with the weight possibly not yet drawn ([`init_layer_lazy`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LazyLayerInit {
    pub weight: WeightValues,
    pub bias: Option<Vec<f64>>,
    pub mask: Option<Vec<bool>>,
    pub notes: Vec<String>,
}

impl LazyLayerInit {
    pub fn realize(self) -> LayerInit {
        LayerInit {
            weight: self.weight.into_vec(),
            bias: self.bias,
            mask: self.mask,
            notes: self.notes,
        }
    }
}

/// New affine parameters of a norm layer.
#[derive(Debug, Clone, PartialEq)]
pub struct NormInit {
    pub gamma: Vec<f64>,
    pub beta: Vec<f64>,
}

/// Fills one weight (and its bias) under `scheme`, drawing from `rng`.
///
/// For EOI with ERK or skip-first-last densities, `init_layer` only sees this layer: use
/// [`init_many`] (or [`layer_densities`] and a per-layer uniform density) for a model.
pub fn init_layer(
    scheme: &Scheme,
    spec: &LayerSpec,
    rng: &mut Stream,
) -> Result<LayerInit, SchemeError> {
    init_layer_lazy(scheme, spec, rng).map(LazyLayerInit::realize)
}

/// As [`init_layer`], leaving i.i.d. weights (He, Xavier, LeCun, torch-default,
/// Fixup) undrawn: [`WeightValues::Iid`] produces them, in any pieces, equal
/// to what [`init_layer`] returns.
pub fn init_layer_lazy(
    scheme: &Scheme,
    spec: &LayerSpec,
    rng: &mut Stream,
) -> Result<LazyLayerInit, SchemeError> {
    scheme.validate()?;
    spec.validate(scheme.name())?;
    let mut notes = Vec::new();
    let (weight, bias, mask) = scheme.fill(spec, rng, &mut notes)?;
    debug_assert_eq!(weight.len(), spec.numel());
    Ok(LazyLayerInit {
        weight,
        bias,
        mask,
        notes,
    })
}

pub(crate) fn dense(w: Vec<f64>) -> WeightValues {
    WeightValues::Dense(w)
}

pub(crate) fn with_dense((w, b): (Vec<f64>, Option<Vec<f64>>)) -> (WeightValues, Option<Vec<f64>>) {
    (dense(w), b)
}

/// Initializes many weights in parallel (rayon). Each weight draws from its own
/// `Stream::new(seed, name, scheme.name())`, so the result does not depend on the order nor
/// on the thread count. EOI's per-layer densities are computed over all given layers first.
pub fn init_many<S: AsRef<str> + Sync>(
    layers: &[(S, LayerSpec)],
    scheme: &Scheme,
    seed: u64,
) -> Vec<Result<LayerInit, SchemeError>> {
    let per_layer: Vec<Scheme> = match scheme.sparsity() {
        Some((density, distribution)) if distribution != DensityDistribution::Uniform => {
            let specs: Vec<LayerSpec> = layers.iter().map(|(_, s)| s.clone()).collect();
            let spread = EoiParams {
                density,
                distribution,
                ..EoiParams::default()
            };
            layer_densities(&specs, &spread)
                .into_iter()
                .map(|d| scheme.at_layer_density(Density::new(d).unwrap_or(density)))
                .collect()
        }
        _ => vec![*scheme; layers.len()],
    };
    layers
        .par_iter()
        .zip(per_layer.par_iter())
        .map(|((name, spec), s)| {
            let mut rng = Stream::new(seed, name.as_ref(), scheme.name());
            let mut r = init_layer(s, spec, &mut rng);
            if let (Ok(init), Some((density, _)), Some((global, _))) =
                (&mut r, s.sparsity(), scheme.sparsity())
                && density != global
            {
                init.notes.push(format!(
                    "{}: layer density {:.4} from the distribution",
                    scheme.name(),
                    density.get()
                ));
            }
            r
        })
        .collect()
}

/// New γ/β for a norm layer, or `None` to leave it. `zero_init_last_gamma` zeroes norms that
/// end a residual branch; `reset` sets the others to (1, 0). IDInit leaves norms untouched
/// apart from the zero-last option (§4.2).
pub fn init_norm(scheme: &Scheme, spec: &NormSpec, opts: &NormOptions) -> Option<NormInit> {
    let n = spec.channels;
    if opts.zero_init_last_gamma && spec.after_branch_last {
        return Some(NormInit {
            gamma: vec![0.0; n],
            beta: vec![0.0; n],
        });
    }
    if opts.reset && !matches!(scheme, Scheme::IdInit(_)) {
        return Some(NormInit {
            gamma: vec![1.0; n],
            beta: vec![0.0; n],
        });
    }
    None
}

/// One LSUV step (§1.8) for a layer whose pre-activation output variance on the calibration
/// batch is `observed_variance`: returns `Ok(true)` when it is within tolerance of the
/// target (weights untouched), otherwise divides the weights by `√(v/v*)` and returns
/// `Ok(false)` (the trainer re-measures and calls again, up to `max_iter` times).
pub fn lsuv_rescale(
    weight: &mut [f64],
    observed_variance: f64,
    p: &LsuvParams,
) -> Result<bool, SchemeError> {
    if !(observed_variance.is_finite() && observed_variance > 0.0) {
        return Err(SchemeError::InvalidParam {
            scheme: "lsuv",
            param: "observed_variance",
            value: observed_variance.to_string(),
            reason: "must be finite and > 0 (a dead layer cannot be rescaled)".into(),
        });
    }
    let off = match p.tol_on {
        LsuvTolOn::Variance => (observed_variance - p.target_var).abs(),
        LsuvTolOn::Std => (observed_variance.sqrt() - p.target_var.sqrt()).abs(),
    };
    if off < p.tol {
        return Ok(true);
    }
    let f = (p.target_var / observed_variance).sqrt();
    weight.iter_mut().for_each(|x| *x *= f);
    Ok(false)
}
