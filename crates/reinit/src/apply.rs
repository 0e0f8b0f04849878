//! Applying a plan: fill every planned weight from its own random stream,
//! convert to the stored layout and collect the edits and the report.
//!
//! Embedded weights are filled up front, in parallel (results do not depend on
//! the thread count: each weight has its own stream). Externally stored weights
//! are *deferred*: [`write`](crate::write) fills each one when the save reaches
//! it in the data file, so a model with gigabytes of external data is rewritten
//! with memory for one tensor at a time, not the whole model.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;
use reinit_graph::OperandLayout;
use reinit_onnx::{DType, DeferredValues, Edits, Model, Payload, Storage, TensorId};
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
    /// Indices into `plan.weights` of the weights filled during the save.
    pub deferred: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct Mask {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<bool>,
}

/// One filled weight: new values in stored layout, its bias, and its report.
struct Realized {
    tensor: TensorId,
    stored: Vec<f64>,
    report: WeightReport,
    bias: Option<(TensorId, Vec<f64>, WeightReport)>,
    mask: Option<Mask>,
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
    let deferred: Vec<usize> = (0..plan.weights.len())
        .filter(|&i| is_deferred(model, plan, i))
        .collect();
    let eager: Vec<usize> = (0..plan.weights.len())
        .filter(|i| !deferred.contains(i))
        .collect();
    // Fill and encode in parallel: the edits keep the encoded payload (4 bytes
    // a value for f32) rather than the f64 values.
    let realized: Vec<Result<Option<(Realized, Payload)>, Error>> = eager
        .par_iter()
        .map(|&i| {
            let result = realize(model, plan, &plan.weights[i], seed).and_then(|r| {
                r.map(|mut r| {
                    let payload = model.encode(r.tensor, &r.stored).map_err(Error::Save)?;
                    r.stored = Vec::new();
                    Ok((r, payload))
                })
                .transpose()
            });
            tick();
            result
        })
        .collect();
    let mut edits = Edits::default();
    let mut report = Report {
        schema_version: 1,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        model: model.path().display().to_string(),
        output: None,
        seed,
        scheme: plan.options.scheme.clone(),
        dry_run: false,
        weights: Vec::new(),
        kept: plan.kept.clone(),
        warnings: plan.warnings.clone(),
        timings_ms: Timings::default(),
    };
    let mut masks = Vec::new();
    for (&i, result) in eager.iter().zip(realized) {
        match result? {
            Some((r, payload)) => record(r, payload, &mut edits, &mut report, &mut masks),
            None => report.kept.push(not_covered(&plan.weights[i])),
        }
    }
    for &i in &deferred {
        let w = &plan.weights[i];
        edits.defer(w.tensor);
        if let Some(bias) = plan.analysis.layers[w.layer].bias {
            edits.defer(bias);
        }
    }
    for norm in &plan.norms {
        let spec = NormSpec {
            channels: model.tensor(norm.scale).numel(),
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
    report.timings_ms.init = start.elapsed().as_secs_f64() * 1e3;
    Ok(Applied {
        edits,
        report,
        masks,
        deferred,
    })
}

fn record(
    r: Realized,
    payload: Payload,
    edits: &mut Edits,
    report: &mut Report,
    masks: &mut Vec<Mask>,
) {
    report.weights.push(r.report);
    if let Some((id, values, bias_report)) = r.bias {
        report.weights.push(bias_report);
        edits.set(id, values);
    }
    masks.extend(r.mask);
    edits.set_payload(payload);
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

/// Weights stored in external data (and their biases, if external too) are
/// filled during the save.
fn is_deferred(model: &Model, plan: &Plan, index: usize) -> bool {
    let w = &plan.weights[index];
    let external = |id: TensorId| matches!(model.tensor(id).storage, Storage::External(_));
    external(w.tensor) && plan.analysis.layers[w.layer].bias.is_none_or(external)
}

/// Runs the scheme (or its fallback) for one weight; `None` when neither covers it.
fn realize(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    seed: u64,
) -> Result<Option<Realized>, Error> {
    // Statistics of the old values first, so that the old and the new values
    // of a large tensor are never in memory at the same time.
    let before = Stats::of_tensor(model, w.tensor).map_err(Error::Load)?;
    let run = |scheme: &Scheme| {
        let mut stream = Stream::new(seed, &w.name, scheme.name());
        init_layer(scheme, &w.spec, &mut stream)
    };
    let scheme_error = |scheme: &Scheme, source| Error::Scheme {
        tensor: w.name.clone(),
        scheme: scheme.name().into(),
        source: Box::new(source),
    };
    let (scheme, init, note) = match run(&w.scheme) {
        Ok(init) => (w.scheme, init, None),
        Err(SchemeError::Unsupported { reason, .. } | SchemeError::Infeasible { reason, .. }) => {
            match &w.fallback {
                Some(fb) => {
                    let init = run(fb).map_err(|e| scheme_error(fb, e))?;
                    (
                        *fb,
                        init,
                        Some(format!(
                            "{} not applicable ({reason}); fallback {}",
                            w.scheme.name(),
                            fb.name()
                        )),
                    )
                }
                None => return Ok(None),
            }
        }
        Err(source) => return Err(scheme_error(&w.scheme, source)),
    };
    let entry = model.tensor(w.tensor);
    if init.weight.len() != entry.numel() {
        return Err(Error::Unsupported(format!(
            "weight '{}': {} filled {} values for {} stored",
            w.name,
            scheme.name(),
            init.weight.len(),
            entry.numel()
        )));
    }
    let layer = &plan.analysis.layers[w.layer];
    let mut notes = init.notes.clone();
    notes.extend(note);
    let report = WeightReport {
        name: w.name.clone(),
        node: w.node.clone(),
        kind: layer.kind.name().into(),
        role: w.role.clone(),
        shape: entry.dims.clone(),
        dtype: entry.dtype.name(),
        scheme: scheme.name().into(),
        params: format!("{scheme:?}"),
        reason: w.reason.clone(),
        notes,
        before,
        after: Stats::of(&init.weight),
        orthogonality_error: orthogonality(&scheme, &init, w, entry.dtype),
    };
    let mask = init.mask.as_ref().map(|mask| {
        let as_f64: Vec<f64> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        Mask {
            name: w.name.clone(),
            shape: entry.dims.clone(),
            values: to_stored(layer, as_f64).iter().map(|&v| v != 0.0).collect(),
        }
    });
    let bias = match (&init.bias, layer.bias) {
        (Some(values), Some(id)) => {
            bias_report(model, w, id, values, scheme)?.map(|r| (id, values.clone(), r))
        }
        _ => None,
    };
    let LayerInit { weight, .. } = init;
    Ok(Some(Realized {
        tensor: w.tensor,
        stored: to_stored(layer, weight),
        report,
        bias,
        mask,
    }))
}

/// Canonical → stored layout without a second copy where possible: a move
/// when the two coincide (Gemm transB=1, Conv), an in-place transpose for a
/// square `MatMul(X, W)` weight; otherwise the graph's general conversion.
fn to_stored(layer: &reinit_graph::Layer, mut canonical: Vec<f64>) -> Vec<f64> {
    let plain = layer.layout.steps.is_empty() && layer.groups == 1 && layer.kernel.is_empty();
    match layer.layout.operand {
        OperandLayout::OutIn | OperandLayout::Conv if layer.layout.steps.is_empty() => canonical,
        OperandLayout::InOut if plain && layer.n_out == layer.n_in => {
            transpose_square_in_place(&mut canonical, layer.n_out);
            canonical
        }
        _ => layer.canonical_to_stored(&canonical),
    }
}

/// Transposes an `n × n` row-major matrix in place, tile by tile.
fn transpose_square_in_place(a: &mut [f64], n: usize) {
    const TILE: usize = 32;
    for i0 in (0..n).step_by(TILE) {
        for j0 in (i0..n).step_by(TILE) {
            for i in i0..(i0 + TILE).min(n) {
                for j in j0.max(i + 1)..(j0 + TILE).min(n) {
                    a.swap(i * n + j, j * n + i);
                }
            }
        }
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

/// Orthogonality error after rounding to the tensor's dtype, for the schemes
/// that promise orthogonality.
fn orthogonality(
    scheme: &Scheme,
    init: &LayerInit,
    w: &PlannedWeight,
    dtype: DType,
) -> Option<f64> {
    if !matches!(scheme, Scheme::Orthogonal(_) | Scheme::Critical(_)) || w.spec.groups != 1 {
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

/// The value source for deferred weights: fills a weight when the save asks
/// for it (or for its bias), and records its report and mask.
pub(crate) struct Deferred<'a> {
    model: &'a Model,
    plan: &'a Plan,
    seed: u64,
    /// Tensor id → index into `plan.weights`, for weights and their biases.
    owners: HashMap<TensorId, usize>,
    /// Values filled early because the other tensor of the pair was asked first.
    pending: Mutex<HashMap<TensorId, Vec<f64>>>,
    done: Mutex<Vec<(usize, Option<Realized>)>>,
}

impl<'a> Deferred<'a> {
    pub fn new(model: &'a Model, plan: &'a Plan, applied: &Applied) -> Deferred<'a> {
        let mut owners = HashMap::new();
        for &i in &applied.deferred {
            let w = &plan.weights[i];
            owners.insert(w.tensor, i);
            if let Some(bias) = plan.analysis.layers[w.layer].bias {
                owners.insert(bias, i);
            }
        }
        Deferred {
            model,
            plan,
            seed: applied.report.seed,
            owners,
            pending: Mutex::default(),
            done: Mutex::default(),
        }
    }

    /// Fills every deferred weight not yet produced (for a dry run), keeping
    /// only its statistics.
    pub fn fill_remaining(&self, applied: &Applied) -> Result<(), Error> {
        for &i in &applied.deferred {
            let produced = self
                .done
                .lock()
                .map(|d| d.iter().any(|(j, _)| *j == i))
                .unwrap_or(false);
            if !produced {
                self.realize_index(i)?;
            }
        }
        Ok(())
    }

    /// The weight's values and its bias, in stored layout; `None` when the
    /// scheme does not cover the layer.
    #[allow(clippy::type_complexity)]
    fn realize_index(
        &self,
        index: usize,
    ) -> Result<Option<(TensorId, Vec<f64>, Option<(TensorId, Vec<f64>)>)>, Error> {
        let w = &self.plan.weights[index];
        let realized = realize(self.model, self.plan, w, self.seed)?;
        let mut done = self
            .done
            .lock()
            .map_err(|_| Error::Unsupported("poisoned lock".into()))?;
        let Some(mut r) = realized else {
            done.push((index, None));
            return Ok(None);
        };
        let stored = std::mem::take(&mut r.stored);
        let bias = r.bias.as_ref().map(|(id, v, _)| (*id, v.clone()));
        done.push((index, Some(r)));
        Ok(Some((w.tensor, stored, bias)))
    }

    /// Moves the recorded reports, masks and kept entries into `applied`.
    pub fn finish(self, applied: &mut Applied) {
        let mut done = self.done.into_inner().unwrap_or_default();
        done.sort_by_key(|(i, _)| *i);
        done.dedup_by_key(|(i, _)| *i);
        for (i, realized) in done {
            match realized {
                Some(r) => {
                    applied.report.weights.push(r.report);
                    if let Some((_, _, bias_report)) = r.bias {
                        applied.report.weights.push(bias_report);
                    }
                    applied.masks.extend(r.mask);
                }
                None => applied.report.kept.push(not_covered(&self.plan.weights[i])),
            }
        }
    }
}

impl DeferredValues for Deferred<'_> {
    fn values(&self, id: TensorId) -> Result<Vec<f64>, reinit_onnx::Error> {
        let unchanged = || self.model.read_f64(id);
        if let Some(values) = self.pending.lock().ok().and_then(|mut p| p.remove(&id)) {
            return Ok(values);
        }
        let Some(&index) = self.owners.get(&id) else {
            return unchanged();
        };
        let to_onnx = |e: Error| match e {
            Error::Load(e) | Error::Save(e) => e,
            other => reinit_onnx::Error::Tensor {
                path: self.model.path().to_path_buf(),
                tensor: self.model.tensor(id).name.clone(),
                reason: other.to_string(),
            },
        };
        // Not covered by the scheme: the tensor keeps its values.
        let Some((weight_id, weight, bias)) = self.realize_index(index).map_err(to_onnx)? else {
            return unchanged();
        };
        let mut pending = self
            .pending
            .lock()
            .map_err(|_| to_onnx(Error::Unsupported("poisoned lock".into())))?;
        if weight_id == id {
            if let Some((bias_id, values)) = bias {
                pending.insert(bias_id, values);
            }
            Ok(weight)
        } else {
            pending.insert(weight_id, weight);
            match bias {
                Some((bias_id, values)) if bias_id == id => Ok(values),
                _ => {
                    drop(pending);
                    unchanged()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn square_transpose_in_place_matches_the_definition() {
        for n in [1, 5, 32, 33, 70] {
            let a: Vec<f64> = (0..n * n).map(|v| v as f64).collect();
            let mut t = a.clone();
            super::transpose_square_in_place(&mut t, n);
            assert!(
                (0..n).all(|i| (0..n).all(|j| t[i * n + j] == a[j * n + i])),
                "n = {n}"
            );
        }
    }
}
