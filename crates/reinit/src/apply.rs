//! Applying a plan: fill every planned weight from its own random stream (in
//! parallel; results do not depend on the thread count), convert to the stored
//! layout and collect the edits and the report.

use std::time::Instant;

use rayon::prelude::*;
use reinit_onnx::{DType, Edits, Model, TensorId};
use reinit_schemes::{
    CastFormat, LayerInit, NormSpec, Scheme, SchemeError, Stream, init_layer, init_norm,
    orthogonality_error_after_cast,
};

use crate::error::Error;
use crate::plan::{Kept, Plan, PlannedWeight};
use crate::report::{Report, Stats, Timings, WeightReport};

/// Everything a run produces before anything is written.
#[derive(Debug)]
pub struct Applied {
    pub edits: Edits,
    pub report: Report,
    /// EOI masks in stored layout, by initializer name (`--mask-out`).
    pub masks: Vec<Mask>,
}

#[derive(Debug, Clone)]
pub struct Mask {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<bool>,
}

struct Filled {
    scheme: Scheme,
    init: LayerInit,
    stored: Vec<f64>,
    note: Option<String>,
}

/// Fills every weight of `plan` from `seed`.
pub fn apply(model: &Model, plan: &Plan, seed: u64) -> Result<Applied, Error> {
    apply_with_progress(model, plan, seed, &|| {})
}

/// As [`apply`], calling `tick` once per finished weight (for a progress bar).
pub fn apply_with_progress(
    model: &Model,
    plan: &Plan,
    seed: u64,
    tick: &(dyn Fn() + Sync),
) -> Result<Applied, Error> {
    let start = Instant::now();
    let filled: Vec<Result<Option<Filled>, Error>> = plan
        .weights
        .par_iter()
        .map(|w| {
            let result = fill(model, plan, w, seed);
            tick();
            result
        })
        .collect();
    let mut edits = Edits::default();
    let mut weights = Vec::new();
    let mut kept = plan.kept.clone();
    let mut masks = Vec::new();
    for (w, result) in plan.weights.iter().zip(filled) {
        let Some(filled) = result? else {
            kept.push(Kept {
                name: w.name.clone(),
                reason: format!(
                    "{} does not cover this layer (--fallback keep)",
                    w.scheme.name()
                ),
            });
            continue;
        };
        let entry = model.tensor(w.tensor);
        let before = Stats::of(&model.read_f64(w.tensor).map_err(Error::Load)?);
        let mut notes = filled.init.notes.clone();
        notes.extend(filled.note.clone());
        weights.push(WeightReport {
            name: w.name.clone(),
            node: w.node.clone(),
            kind: plan.analysis.layers[w.layer].kind.name().into(),
            role: w.role.clone(),
            shape: entry.dims.clone(),
            dtype: entry.dtype.name(),
            scheme: filled.scheme.name().into(),
            params: format!("{:?}", filled.scheme),
            reason: w.reason.clone(),
            notes,
            before,
            after: Stats::of(&filled.stored),
            orthogonality_error: orthogonality(&filled, w, entry.dtype),
        });
        if let Some(mask) = &filled.init.mask {
            let layer = &plan.analysis.layers[w.layer];
            let as_f64: Vec<f64> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
            let stored = layer.canonical_to_stored(&as_f64);
            masks.push(Mask {
                name: w.name.clone(),
                shape: entry.dims.clone(),
                values: stored.iter().map(|&v| v != 0.0).collect(),
            });
        }
        if let (Some(bias), Some(bias_id)) = (&filled.init.bias, plan.analysis.layers[w.layer].bias)
        {
            set_bias(
                model,
                &mut edits,
                &mut weights,
                w,
                bias_id,
                bias,
                filled.scheme,
            )?;
        }
        edits.set(w.tensor, filled.stored);
    }
    for norm in &plan.norms {
        let channels = model.tensor(norm.scale).numel();
        let spec = NormSpec {
            channels,
            after_branch_last: norm.after_branch_last,
        };
        if let Some(init) = init_norm(&norm.scheme, &spec, &plan.options.norms) {
            edits.set(norm.scale, init.gamma);
            if let Some(bias) = norm
                .bias
                .filter(|b| model.tensor(*b).numel() == init.beta.len())
            {
                edits.set(bias, init.beta);
            }
        }
    }
    let report = Report {
        schema_version: 1,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        model: model.path().display().to_string(),
        output: None,
        seed,
        scheme: plan.options.scheme.clone(),
        dry_run: false,
        weights,
        kept,
        warnings: plan.warnings.clone(),
        timings_ms: Timings {
            init: start.elapsed().as_secs_f64() * 1e3,
            ..Default::default()
        },
    };
    Ok(Applied {
        edits,
        report,
        masks,
    })
}

fn fill(model: &Model, plan: &Plan, w: &PlannedWeight, seed: u64) -> Result<Option<Filled>, Error> {
    let run = |scheme: &Scheme| {
        let mut stream = Stream::new(seed, &w.name, scheme.name());
        init_layer(scheme, &w.spec, &mut stream)
    };
    let (scheme, init, note) = match run(&w.scheme) {
        Ok(init) => (w.scheme, init, None),
        Err(SchemeError::Unsupported { reason, .. } | SchemeError::Infeasible { reason, .. }) => {
            match &w.fallback {
                Some(fb) => {
                    let init = run(fb).map_err(|source| Error::Scheme {
                        tensor: w.name.clone(),
                        scheme: fb.name().into(),
                        source: Box::new(source),
                    })?;
                    let note = format!(
                        "{} not applicable ({reason}); fallback {}",
                        w.scheme.name(),
                        fb.name()
                    );
                    (*fb, init, Some(note))
                }
                None => return Ok(None),
            }
        }
        Err(source) => {
            return Err(Error::Scheme {
                tensor: w.name.clone(),
                scheme: w.scheme.name().into(),
                source: Box::new(source),
            });
        }
    };
    let layer = &plan.analysis.layers[w.layer];
    if init.weight.len() != model.tensor(w.tensor).numel() {
        return Err(Error::Unsupported(format!(
            "weight '{}': {} filled {} values for {} stored",
            w.name,
            scheme.name(),
            init.weight.len(),
            model.tensor(w.tensor).numel()
        )));
    }
    let stored = layer.canonical_to_stored(&init.weight);
    Ok(Some(Filled {
        scheme,
        init,
        stored,
        note,
    }))
}

fn set_bias(
    model: &Model,
    edits: &mut Edits,
    weights: &mut Vec<WeightReport>,
    w: &PlannedWeight,
    bias_id: TensorId,
    bias: &[f64],
    scheme: Scheme,
) -> Result<(), Error> {
    let entry = model.tensor(bias_id);
    if entry.numel() != bias.len() || !entry.dtype.is_float() {
        return Ok(()); // not the per-output bias the scheme describes
    }
    weights.push(WeightReport {
        name: entry.name.clone(),
        node: w.node.clone(),
        kind: "bias".into(),
        role: w.role.clone(),
        shape: entry.dims.clone(),
        dtype: entry.dtype.name(),
        scheme: scheme.name().into(),
        params: String::new(),
        reason: format!("bias of {}", w.name),
        notes: Vec::new(),
        before: Stats::of(&model.read_f64(bias_id).map_err(Error::Load)?),
        after: Stats::of(bias),
        orthogonality_error: None,
    });
    edits.set(bias_id, bias.to_vec());
    Ok(())
}

/// Orthogonality error after rounding to the tensor's dtype, for the schemes
/// that promise orthogonality.
fn orthogonality(filled: &Filled, w: &PlannedWeight, dtype: DType) -> Option<f64> {
    if !matches!(filled.scheme, Scheme::Orthogonal(_) | Scheme::Critical(_)) || w.spec.groups != 1 {
        return None;
    }
    let weight = &filled.init.weight;
    let rows = w.spec.n_out;
    let cols = weight.len() / rows.max(1);
    // The gain is whatever the scheme chose: g² = ‖M‖² / min(rows, cols).
    let gain = (weight.iter().map(|v| v * v).sum::<f64>() / rows.min(cols).max(1) as f64).sqrt();
    if gain == 0.0 {
        return None;
    }
    let format = match dtype {
        DType::F16 => CastFormat::F16,
        DType::BF16 => CastFormat::Bf16,
        DType::F64 => {
            let unit: Vec<f64> = weight.iter().map(|v| v / gain).collect();
            return Some(reinit_schemes::orthogonality_error(&unit, rows, cols));
        }
        _ => CastFormat::F32,
    };
    Some(orthogonality_error_after_cast(
        weight, rows, cols, gain, format,
    ))
}
