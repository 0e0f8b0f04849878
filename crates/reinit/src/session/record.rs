//! The report's entries for drawn weights, their biases and the weights a
//! scheme does not cover; the orthogonality check after the cast to the
//! stored dtype.

use reinit_onnx::{DType, Model, TensorId};
use reinit_schemes::{CastFormat, LayerInit, Scheme, orthogonality_error_after_cast};

use super::draw::Drawn;
use super::masks::Mask;
use crate::error::Error;
use crate::plan::{Kept, Plan, PlannedWeight};
use crate::report::{Report, Stats, WeightReport};

/// One drawn weight: new values (emptied once written), its report, its new
/// bias with the bias' report, and its EOI mask.
pub(super) struct Realized {
    pub tensor: TensorId,
    pub stored: Vec<f64>,
    pub report: WeightReport,
    pub bias: Option<BiasEntry>,
    pub mask: Option<Mask>,
}

/// A layer's new bias: the tensor, its values, its report.
pub(super) type BiasEntry = (TensorId, Vec<f64>, WeightReport);

/// What a weight ended as: drawn (with its report), or not covered by its
/// scheme or fallback (kept).
pub(super) type Outcome = Option<Realized>;

/// Adds a weight's outcome to the report (its bias' report after it) and its
/// mask to `masks`.
pub(super) fn add(report: &mut Report, masks: &mut Vec<Mask>, w: &PlannedWeight, outcome: Outcome) {
    match outcome {
        Some(r) => {
            report.weights.push(r.report);
            if let Some((_, _, bias_report)) = r.bias {
                report.weights.push(bias_report);
            }
            masks.extend(r.mask);
        }
        None => report.kept.push(not_covered(w)),
    }
}

fn not_covered(w: &PlannedWeight) -> Kept {
    Kept {
        name: w.name.clone(),
        reason: format!(
            "{} does not cover this layer (--fallback keep)",
            w.scheme.name()
        ),
    }
}

/// The record of a streamed weight (its bias aside), `after` being the
/// statistics taken while it was written.
pub(super) fn streamed(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    drawn: Drawn,
    after: Stats,
) -> Realized {
    let Drawn {
        scheme,
        init,
        before,
    } = drawn;
    Realized {
        tensor: w.tensor,
        stored: Vec::new(),
        report: weight_report(model, plan, w, scheme, init.notes, before, after),
        bias: None,
        mask: None,
    }
}

pub(super) fn weight_report(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    scheme: Scheme,
    notes: Vec<String>,
    before: Stats,
    after: Stats,
) -> WeightReport {
    let entry = model.tensor(w.tensor);
    WeightReport {
        name: w.name.clone(),
        node: w.node.clone(),
        kind: plan.analysis.layers[w.layer].kind.name().into(),
        role: w.role.clone(),
        shape: entry.dims.clone(),
        dtype: entry.dtype.name(),
        scheme: scheme.name().into(),
        params: format!("{scheme:?}"),
        reason: w.reason.clone(),
        notes,
        before,
        after,
        orthogonality_error: None,
    }
}

/// The layer's bias, its new values and report, when the scheme set one.
pub(super) fn bias_entry(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    bias: Option<Vec<f64>>,
    scheme: Scheme,
) -> Result<Option<BiasEntry>, Error> {
    match (bias, plan.analysis.layers[w.layer].bias) {
        (Some(values), Some(id)) => {
            Ok(bias_report(model, w, id, &values, scheme)?.map(|r| (id, values, r)))
        }
        _ => Ok(None),
    }
}

fn bias_report(
    model: &Model,
    w: &PlannedWeight,
    bias_id: TensorId,
    bias: &[f64],
    scheme: Scheme,
) -> Result<Option<WeightReport>, Error> {
    let entry = model.tensor(bias_id);
    if entry.numel() != bias.len() || !entry.dtype.is_float() {
        return Ok(None); // not the per-output bias the scheme describes
    }
    Ok(Some(WeightReport {
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
    }))
}

/// Whether a weight's report carries its orthogonality error (single group).
pub(super) fn reports_orthogonality(scheme: &Scheme) -> bool {
    matches!(scheme, Scheme::Orthogonal(_) | Scheme::Critical(_))
}

/// Orthogonality error after rounding to the tensor's dtype, for the schemes
/// that promise orthogonality.
pub(super) fn orthogonality(
    scheme: &Scheme,
    init: &LayerInit,
    w: &PlannedWeight,
    dtype: DType,
) -> Option<f64> {
    if !reports_orthogonality(scheme) || w.spec.groups != 1 {
        return None;
    }
    let weight = &init.weight;
    let rows = w.spec.n_out;
    let cols = weight.len() / rows.max(1);
    // The check forms the smaller Gram matrix: rows·cols·min flops. Past ~2 GFLOP
    // it would cost as much as the QR itself, so large weights go unchecked
    // (the schemes crate's tests hold orthogonality to 1e-10 in f64).
    if (rows * cols).saturating_mul(rows.min(cols)) > 1 << 31 {
        return None;
    }
    // The gain is whatever the scheme chose: g² = ‖M‖² / min(rows, cols).
    let gain = (weight.iter().map(|v| v * v).sum::<f64>() / rows.min(cols).max(1) as f64).sqrt();
    if gain == 0.0 {
        return None;
    }
    let format = match dtype {
        DType::F16 => CastFormat::F16,
        DType::BF16 => CastFormat::Bf16,
        DType::F64 => CastFormat::F64,
        _ => CastFormat::F32,
    };
    Some(orthogonality_error_after_cast(
        weight, rows, cols, gain, format,
    ))
}
