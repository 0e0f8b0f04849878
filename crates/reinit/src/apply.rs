//! Applying a plan: fill every planned weight from its own random stream,
//! convert to the stored layout and collect the edits and the report.
//!
//! Each weight has its own stream, so results depend neither on the order nor
//! on the thread count. Weights are filled at one of two moments:
//! - *deferred*, during the save ([`Deferred`], driven by
//!   [`write`](fn@crate::write)): every external weight, and every embedded
//!   weight whose new payload length is known in advance. I.i.d. weights are
//!   streamed into the output ([`streamed`](crate::streamed)) and never held
//!   whole; the structured schemes' weights are drawn a window at a time, in
//!   parallel, ahead of the writer, so the new weights are never all in memory;
//! - *eager*, up front and in parallel across layers: the rest (embedded
//!   tensors in `int32_data` and the like), kept as encoded payloads in the
//!   edits.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use rayon::prelude::*;
use reinit_graph::OperandLayout;
use reinit_onnx::{DType, DeferredValues, Edits, Model, Payload, Storage, TensorId, ValueSink};
use reinit_schemes::{
    CastFormat, LayerInit, LazyLayerInit, NormInit, NormOptions, NormSpec, Scheme, SchemeError,
    Stream, WeightValues, init_layer_lazy, init_norm, orthogonality_error_after_cast,
};

use crate::error::Error;
use crate::plan::{Kept, Plan, PlannedNorm, PlannedWeight};
use crate::report::{NormReset, Report, Stats, Timings, WeightReport};
use crate::streamed;

/// Everything a run produces before anything is written.
#[derive(Debug)]
pub struct Applied {
    pub edits: Edits,
    pub report: Report,
    /// EOI masks in stored layout, by initializer name (`--mask-out`).
    pub masks: Vec<Mask>,
    /// Indices into `plan.weights` of the weights filled during the save.
    pub deferred: Vec<usize>,
    /// Statistics of the deferred weights' old values, taken up front in
    /// parallel so that the writer only draws and writes.
    pub deferred_before: HashMap<usize, Stats>,
    /// Per-weight transforms of the refine step (LSUV's scales), applied by
    /// [`draw`] wherever a weight's values are produced.
    pub(crate) refinements: HashMap<TensorId, Refinement>,
}

/// What the refine step does to one weight's drawn values.
#[derive(Debug, Clone)]
pub(crate) struct Refinement {
    /// Every value is multiplied by it.
    pub scale: f64,
    /// Replaces the pre-init's note in the weight's report.
    pub note: String,
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

/// Fills the weights of `plan` that the save cannot draw itself and prepares
/// the others (old-value statistics, the edits that mark them deferred), all
/// from `seed`; [`write`](fn@crate::write) or `apply_to_bytes` draws those.
pub fn apply(model: &Model, plan: &Plan, seed: u64) -> Result<Applied, Error> {
    apply_with_progress(model, plan, seed, &|| {})
}

/// As [`apply`], calling `tick` once per finished weight (for a progress bar).
///
/// Plan → refine → draw: LSUV's data pass (with `verify`) runs first, on a
/// draft of the rewrite, and its scales are part of the result, so every
/// route that saves it — eager or deferred weights — writes them.
pub fn apply_with_progress(
    model: &Model,
    plan: &Plan,
    seed: u64,
    tick: &(dyn Fn() + Sync),
) -> Result<Applied, Error> {
    let start = Instant::now();
    #[cfg(feature = "verify")]
    let refined = crate::lsuv::refine(model, plan, seed)?;
    #[cfg(not(feature = "verify"))]
    let refined = Refined::default();
    let mut applied = draw_all(model, plan, seed, refined.refinements, tick)?;
    applied.report.lsuv = refined.report;
    applied.report.warnings.extend(refined.warnings);
    applied.report.timings_ms.init = start.elapsed().as_secs_f64() * 1e3;
    Ok(applied)
}

/// Without `verify` there is no data pass: nothing is refined.
#[cfg(not(feature = "verify"))]
#[derive(Default)]
struct Refined {
    refinements: HashMap<TensorId, Refinement>,
    report: Option<crate::report::LsuvReport>,
    warnings: Vec<String>,
}

/// Draws every weight that is not deferred and prepares the deferred ones,
/// each with its refinement.
pub(crate) fn draw_all(
    model: &Model,
    plan: &Plan,
    seed: u64,
    refinements: HashMap<TensorId, Refinement>,
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
            let w = &plan.weights[i];
            let result = realize_encoded(model, plan, w, seed, refinements.get(&w.tensor));
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
        lsuv: None,
        norms_reset: Vec::new(),
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
        set_norm(model, norm, &plan.options.norms, &mut edits, &mut report);
    }
    let deferred_before = deferred
        .par_iter()
        .map(|&i| {
            let stats = Stats::of_tensor(model, plan.weights[i].tensor).map_err(Error::Load)?;
            Ok((i, stats))
        })
        .collect::<Result<HashMap<_, _>, Error>>()?;
    report.timings_ms.init = start.elapsed().as_secs_f64() * 1e3;
    Ok(Applied {
        edits,
        report,
        masks,
        deferred,
        deferred_before,
        refinements,
    })
}

/// Sets a planned norm's parameters: zero-init-last (γ = β = 0 where the
/// norm ends a residual branch) from the scheme, and, with a reset, γ = 1,
/// β = 0 elsewhere and the running statistics to mean 0, variance 1.
fn set_norm(
    model: &Model,
    norm: &PlannedNorm,
    options: &NormOptions,
    edits: &mut Edits,
    report: &mut Report,
) {
    let channels = model.tensor(norm.scale).numel();
    let spec = NormSpec {
        channels,
        after_branch_last: norm.after_branch_last,
    };
    // The reset is done here for every scheme (IDInit's identity blocks
    // need β = 0 too); the schemes crate only decides zero-init-last.
    let zero_last = NormOptions {
        reset: false,
        ..*options
    };
    let init = norm
        .scheme
        .and_then(|scheme| init_norm(&scheme, &spec, &zero_last))
        .or_else(|| {
            norm.reset.then(|| NormInit {
                gamma: vec![1.0; channels],
                beta: vec![0.0; channels],
            })
        });
    let Some(init) = init else {
        return;
    };
    let mut set = Vec::new();
    let mut put = |id: TensorId, values: Vec<f64>| {
        if model.tensor(id).numel() == values.len() && model.tensor(id).dtype.is_float() {
            set.push(model.tensor(id).name.clone());
            edits.set(id, values);
        }
    };
    put(norm.scale, init.gamma);
    if let Some(bias) = norm.bias {
        put(bias, init.beta);
    }
    if norm.reset {
        if let Some(mean) = norm.running_mean {
            put(mean, vec![0.0; model.tensor(mean).numel()]);
        }
        if let Some(var) = norm.running_var {
            put(var, vec![1.0; model.tensor(var).numel()]);
        }
        report.norms_reset.push(NormReset {
            node: norm.node.clone(),
            op: norm.op.name().into(),
            tensors: set,
        });
    }
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

/// Which weights are filled during the save, as the writer reaches them:
/// those in external data (so a model with gigabytes of it needs memory for
/// a window of tensors), and embedded weights whose payload length is known
/// in advance (drawn into the output as it is written, so the new weights
/// are never all in memory next to the model). A weight is deferred only
/// with its bias.
fn is_deferred(model: &Model, plan: &Plan, index: usize) -> bool {
    let w = &plan.weights[index];
    let external = |id: TensorId| matches!(model.tensor(id).storage, Storage::External(_));
    let bias = plan.analysis.layers[w.layer].bias;
    if external(w.tensor) {
        return bias.is_none_or(external);
    }
    model.can_defer(w.tensor) && bias.is_none_or(|b| !external(b) && model.can_defer(b))
}

/// A weight's scheme run (or its fallback's), the weight possibly not yet
/// drawn (an i.i.d. fill), with what its report needs.
struct Drawn {
    scheme: Scheme,
    init: LazyLayerInit,
    before: Stats,
}

/// Runs the scheme (or its fallback) for one weight; `None` when neither covers it.
fn draw(
    model: &Model,
    w: &PlannedWeight,
    seed: u64,
    before: Option<Stats>,
    refinement: Option<&Refinement>,
) -> Result<Option<Drawn>, Error> {
    // Statistics of the old values first, so that the old and the new values
    // of a large tensor are never in memory at the same time.
    let before = match before {
        Some(stats) => stats,
        None => Stats::of_tensor(model, w.tensor).map_err(Error::Load)?,
    };
    let run = |scheme: &Scheme| {
        let mut stream = Stream::new(seed, &w.name, scheme.name());
        init_layer_lazy(scheme, &w.spec, &mut stream)
    };
    let scheme_error = |scheme: &Scheme, source| Error::Scheme {
        tensor: w.name.clone(),
        scheme: scheme.name().into(),
        source: Box::new(source),
    };
    let (scheme, init) = match run(&w.scheme) {
        Ok(init) => (w.scheme, init),
        Err(SchemeError::Unsupported { reason, .. } | SchemeError::Infeasible { reason, .. }) => {
            match &w.fallback {
                Some(fb) => {
                    let mut init = run(fb).map_err(|e| scheme_error(fb, e))?;
                    init.notes.push(format!(
                        "{} not applicable ({reason}); fallback {}",
                        w.scheme.name(),
                        fb.name()
                    ));
                    (*fb, init)
                }
                None => return Ok(None),
            }
        }
        Err(source) => return Err(scheme_error(&w.scheme, source)),
    };
    let mut init = init;
    if let Some(r) = refinement {
        refine(&mut init, r, w)?;
    }
    let entry = model.tensor(w.tensor);
    if init.weight.len() != entry.numel() {
        return Err(Error::Internal(format!(
            "weight '{}': {} filled {} values for {} stored",
            w.name,
            scheme.name(),
            init.weight.len(),
            entry.numel()
        )));
    }
    Ok(Some(Drawn {
        scheme,
        init,
        before,
    }))
}

/// Applies the refine step's transform to a drawn weight.
fn refine(init: &mut LazyLayerInit, r: &Refinement, w: &PlannedWeight) -> Result<(), Error> {
    match &mut init.weight {
        WeightValues::Dense(values) => values.iter_mut().for_each(|v| *v *= r.scale),
        WeightValues::Zeros(_) => {}
        WeightValues::Iid(_) => {
            return Err(Error::Internal(format!(
                "weight '{}': a refinement for an i.i.d. draw (LSUV weights are dense)",
                w.name
            )));
        }
    }
    init.notes
        .retain(|n| !n.starts_with("lsuv: orthonormal pre-init only"));
    init.notes.push(r.note.clone());
    Ok(())
}

/// Draws one weight the save cannot draw (see [`is_deferred`]) into its
/// encoded payload: written like a deferred weight ([`write_prepared`]) where
/// the storage holds little-endian bytes, else whole and then encoded.
fn realize_encoded(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    seed: u64,
    refinement: Option<&Refinement>,
) -> Result<Option<(Realized, Payload)>, Error> {
    let Some(mut drawn) = draw(model, w, seed, None, refinement)? else {
        return Ok(None);
    };
    let bias = drawn.init.bias.take();
    let scheme = drawn.scheme;
    let (mut realized, payload) = if model.holds_le_bytes(w.tensor) {
        let prepared = prepare(model, plan, w, drawn);
        let mut realized = None;
        let payload = le_payload(model, w.tensor, |out| {
            realized = Some(write_prepared(model, plan, w, prepared, out)?);
            Ok(())
        })?;
        (realized.expect("set by the fill"), payload)
    } else {
        let mut r = realize_drawn(model, plan, w, drawn, true);
        let payload = model.encode(r.tensor, &r.stored).map_err(Error::Save)?;
        r.stored = Vec::new();
        (r, payload)
    };
    realized.bias = bias_entry(model, plan, w, bias, scheme)?;
    Ok(Some((realized, payload)))
}

/// An i.i.d. draw stays lazy; a structured one is made whole (on whichever
/// thread calls this).
fn prepare(model: &Model, plan: &Plan, w: &PlannedWeight, mut drawn: Drawn) -> Prepared {
    if streamed::streamable(&drawn.init.weight) {
        return Prepared::Lazy(drawn);
    }
    let bias = drawn.init.bias.take();
    let scheme = drawn.scheme;
    // A plain transpose is written from the canonical matrix in bands.
    let transposed = stored_transposed(&plan.analysis.layers[w.layer]).is_some();
    Prepared::Whole {
        realized: Box::new(realize_drawn(model, plan, w, drawn, !transposed)),
        scheme,
        bias,
    }
}

/// Writes a prepared weight into `out` in its stored layout (streamed where
/// it is i.i.d.) and returns its record, bias aside.
fn write_prepared(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    prepared: Prepared,
    out: &mut dyn streamed::Emit,
) -> Result<Realized, reinit_onnx::Error> {
    let dtype = model.tensor(w.tensor).dtype;
    Ok(match prepared {
        Prepared::Lazy(drawn) => {
            let after = streamed::stream(&drawn.init.weight, dtype, out)?;
            streamed_record(model, plan, w, drawn, after)
        }
        Prepared::Whole { mut realized, .. } => {
            match stored_transposed(&plan.analysis.layers[w.layer]) {
                Some((n_out, n_in)) => {
                    streamed::write_transposed(&realized.stored, n_out, n_in, dtype, out)?
                }
                None => {
                    for piece in realized.stored.chunks(1 << 20) {
                        out.values(piece)?;
                    }
                }
            }
            realized.stored = Vec::new();
            *realized
        }
    })
}

/// The payload of tensor `id` (whose storage holds little-endian bytes) as
/// `fill` encodes it into a buffer of the tensor's size.
fn le_payload(
    model: &Model,
    id: TensorId,
    fill: impl FnOnce(&mut streamed::Bytes) -> Result<(), reinit_onnx::Error>,
) -> Result<Payload, Error> {
    let entry = model.tensor(id);
    let mut out = streamed::Bytes {
        dtype: entry.dtype,
        bytes: Vec::with_capacity(entry.numel() * entry.dtype.size().unwrap_or(0)),
    };
    fill(&mut out).map_err(Error::Save)?;
    Ok(model
        .payload_from_le(id, out.bytes)
        .map_err(Error::Save)?
        .expect("checked by the caller: the storage holds little-endian bytes"))
}

/// The record of a streamed weight (its bias aside), `after` being the
/// statistics taken while it was written.
fn streamed_record(
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

/// `(n_out, n_in)` when a structured weight of `layer` is stored as the plain
/// transpose of its canonical matrix (`MatMul(X, W)`), which
/// [`streamed::write_transposed`] writes without a transposed copy.
fn stored_transposed(layer: &reinit_graph::Layer) -> Option<(usize, usize)> {
    let plain = layer.layout.steps.is_empty() && layer.groups == 1 && layer.kernel.is_empty();
    (plain && layer.layout.operand == OperandLayout::InOut).then_some((layer.n_out, layer.n_in))
}

/// Whether `layer`'s weight is stored in its canonical layout (Gemm
/// `transB=1`, `MatMul(W, X)`, Conv).
fn stored_is_canonical(layer: &reinit_graph::Layer) -> bool {
    matches!(
        layer.layout.operand,
        OperandLayout::OutIn | OperandLayout::Conv
    ) && layer.layout.steps.is_empty()
}

/// A draw made whole (its bias aside): values — in stored layout, or left
/// canonical when `convert` is false and the draw is structured — report
/// with the orthogonality check, mask.
fn realize_drawn(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    drawn: Drawn,
    convert: bool,
) -> Realized {
    let Drawn {
        scheme,
        init,
        before,
    } = drawn;
    // I.i.d. draws are made in stored order; the structured schemes build
    // the canonical matrix, which the layout converts.
    let in_stored_order = streamed::streamable(&init.weight);
    let init = init.realize();
    let entry = model.tensor(w.tensor);
    let layer = &plan.analysis.layers[w.layer];
    let orthogonality_error = orthogonality(&scheme, &init, w, entry.dtype);
    let after = Stats::of(&init.weight);
    let LayerInit {
        weight,
        notes,
        mask,
        ..
    } = init;
    let mask = mask.map(|mask| Mask {
        name: w.name.clone(),
        shape: entry.dims.clone(),
        values: mask_to_stored(layer, mask),
    });
    let mut report = weight_report(model, plan, w, scheme, notes, before, after);
    report.orthogonality_error = orthogonality_error;
    Realized {
        tensor: w.tensor,
        stored: if in_stored_order || !convert {
            weight
        } else {
            to_stored(layer, weight)
        },
        report,
        bias: None,
        mask,
    }
}

fn weight_report(
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
#[allow(clippy::type_complexity)]
fn bias_entry(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    bias: Option<Vec<f64>>,
    scheme: Scheme,
) -> Result<Option<(TensorId, Vec<f64>, WeightReport)>, Error> {
    match (bias, plan.analysis.layers[w.layer].bias) {
        (Some(values), Some(id)) => {
            Ok(bias_report(model, w, id, &values, scheme)?.map(|r| (id, values, r)))
        }
        _ => Ok(None),
    }
}

/// Canonical → stored layout without a second copy where possible: a move
/// when the two coincide (Gemm transB=1, Conv), an in-place transpose for a
/// square `MatMul(X, W)` weight; otherwise the graph's general conversion.
fn to_stored(layer: &reinit_graph::Layer, mut canonical: Vec<f64>) -> Vec<f64> {
    if stored_is_canonical(layer) {
        return canonical;
    }
    match stored_transposed(layer) {
        Some((n_out, n_in)) if n_out == n_in => {
            transpose_square_in_place(&mut canonical, n_out);
            canonical
        }
        _ => layer.canonical_to_stored(&canonical),
    }
}

/// A canonical mask in the stored layout: moved when the layouts coincide,
/// transposed as booleans for `MatMul(X, W)`, else through the graph's
/// general conversion (as 0/1 values).
fn mask_to_stored(layer: &reinit_graph::Layer, mask: Vec<bool>) -> Vec<bool> {
    if stored_is_canonical(layer) {
        return mask;
    }
    if let Some((n_out, n_in)) = stored_transposed(layer) {
        let mut stored = vec![false; mask.len()];
        for o in 0..n_out {
            for i in 0..n_in {
                stored[i * n_out + o] = mask[o * n_in + i];
            }
        }
        return stored;
    }
    let as_f64: Vec<f64> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
    drop(mask);
    to_stored(layer, as_f64).iter().map(|&v| v != 0.0).collect()
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
        DType::F64 => CastFormat::F64,
        _ => CastFormat::F32,
    };
    Some(orthogonality_error_after_cast(
        weight, rows, cols, gain, format,
    ))
}

/// The value source for deferred weights: draws a weight when the save asks
/// for it (or for its bias) — a structured one with a window of those that
/// follow, in parallel — streams it into the output where its scheme allows
/// ([`streamed`](crate::streamed)), and records its report.
pub(crate) struct Deferred<'a> {
    model: &'a Model,
    plan: &'a Plan,
    seed: u64,
    /// Tensor id → index into `plan.weights`, for weights and their biases.
    owners: HashMap<TensorId, usize>,
    /// Statistics of the old values, by weight index.
    before: HashMap<usize, Stats>,
    /// Draws whose weight or bias is still to be written, by weight index.
    open: Mutex<HashMap<usize, OpenDraw>>,
    done: Mutex<Vec<(usize, Option<Realized>)>>,
    /// The draw of each deferred weight, made by whichever thread comes
    /// first (the writer, or a look-ahead), taken once into `open`.
    draws: HashMap<usize, OnceLock<Mutex<Option<DrawResult>>>>,
    /// Deferred weights of the structured schemes, in the order the save asks
    /// for them, with their position there: they are drawn a window at a
    /// time, in parallel, the next window while the last of one is written
    /// (their QR / Givens work is the slow part).
    dense_order: Vec<usize>,
    dense_position: HashMap<usize, usize>,
    /// Runs once per weight written (a progress bar).
    tick: &'a (dyn Fn() + Sync),
    /// The refine step's transforms, by weight.
    refinements: HashMap<TensorId, Refinement>,
}

type DrawResult = Result<Option<Prepared>, Error>;

/// A deferred weight ready to be written.
enum Prepared {
    /// An i.i.d. weight, drawn as it is streamed.
    Lazy(Drawn),
    /// A structured weight made whole on the pool — values (canonical when
    /// stored as its plain transpose, else in stored layout), report with
    /// its orthogonality check, mask — with its scheme's new bias.
    Whole {
        realized: Box<Realized>,
        scheme: Scheme,
        bias: Option<Vec<f64>>,
    },
}

/// Most f64 values of structured weights drawn ahead at once (each needs
/// about two more matrices of its size while it is drawn).
const WINDOW_VALUES: usize = 16 << 20;

/// A drawn weight whose weight or bias the save has not reached yet.
struct OpenDraw {
    /// `None` once the weight is written.
    weight: Option<Prepared>,
    /// The new bias and its report (`None`: no bias, or the scheme keeps it).
    bias: Option<(TensorId, Vec<f64>, WeightReport)>,
    bias_written: bool,
    /// The weight's record, once it is written.
    record: Option<Realized>,
}

impl OpenDraw {
    fn complete(&self) -> bool {
        self.weight.is_none() && (self.bias.is_none() || self.bias_written)
    }

    fn into_record(self) -> Option<Realized> {
        let bias = self.bias;
        self.record.map(|r| Realized { bias, ..r })
    }
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
        let draws = applied
            .deferred
            .iter()
            .map(|&i| (i, OnceLock::new()))
            .collect();
        let dense_order = save_order(model, plan, &applied.deferred)
            .into_iter()
            .filter(|&i| !plan.weights[i].scheme.draws_iid())
            .collect::<Vec<_>>();
        let dense_position = dense_order
            .iter()
            .enumerate()
            .map(|(k, &i)| (i, k))
            .collect();
        Deferred {
            model,
            plan,
            seed: applied.report.seed,
            owners,
            before: applied.deferred_before.clone(),
            open: Mutex::default(),
            done: Mutex::default(),
            draws,
            dense_order,
            dense_position,
            tick: &|| {},
            refinements: applied.refinements.clone(),
        }
    }

    /// Calls `tick` once per weight written.
    pub fn with_progress(self, tick: &'a (dyn Fn() + Sync)) -> Self {
        Deferred { tick, ..self }
    }

    /// The draw of deferred weight `index`, made now unless another thread
    /// made (or is making) it.
    fn draw_cell(&self, index: usize) -> &Mutex<Option<DrawResult>> {
        self.draws[&index].get_or_init(|| {
            let w = &self.plan.weights[index];
            let before = self.before.get(&index).copied();
            let prepared = draw(
                self.model,
                w,
                self.seed,
                before,
                self.refinements.get(&w.tensor),
            )
            .map(|drawn| drawn.map(|drawn| prepare(self.model, self.plan, w, drawn)));
            Mutex::new(Some(prepared))
        })
    }

    fn is_drawn(&self, index: usize) -> bool {
        self.draws
            .get(&index)
            .is_some_and(|cell| cell.get().is_some())
    }

    /// Draws the structured weights from position `k` of `dense_order` on, in
    /// parallel: as many as [`WINDOW_VALUES`] allows, at least one, at most
    /// two per thread.
    fn draw_window(&self, k: usize) {
        let most = 2 * rayon::current_num_threads().max(1);
        let mut values = 0;
        let end = self.dense_order[k..]
            .iter()
            .take(most)
            .take_while(|&&i| {
                values += self.model.tensor(self.plan.weights[i].tensor).numel();
                values <= WINDOW_VALUES
            })
            .count()
            .max(1);
        self.dense_order[k..(k + end).min(self.dense_order.len())]
            .par_iter()
            .for_each(|&i| {
                self.draw_cell(i);
            });
    }

    /// Draws every deferred weight not yet written (for a dry run), keeping
    /// only its statistics: streamable weights are never held whole.
    pub fn fill_remaining(&self, applied: &Applied) -> Result<(), Error> {
        for &i in &applied.deferred {
            let produced = lock(&self.done)?.iter().any(|(j, _)| *j == i);
            if !produced {
                self.write_weight(i, &mut streamed::Discard)
                    .map_err(Error::Save)?;
            }
        }
        Ok(())
    }

    /// Moves the recorded reports, masks and kept entries into `applied`.
    pub fn finish(self, applied: &mut Applied) {
        let mut done = self.done.into_inner().unwrap_or_default();
        for (i, open) in self.open.into_inner().unwrap_or_default() {
            if let Some(record) = open.into_record() {
                done.push((i, Some(record)));
            }
        }
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

    /// Draws weight `index` unless it is drawn already; `false` when its
    /// scheme (and fallback) do not cover it.
    fn open_draw(&self, index: usize) -> Result<bool, Error> {
        {
            let open = lock(&self.open)?;
            if open.contains_key(&index) {
                return Ok(true);
            }
            if let Some((_, record)) = lock(&self.done)?.iter().find(|(j, _)| *j == index) {
                return Ok(record.is_some());
            }
        }
        // Drawn outside the locks: a look-ahead may be drawing another weight.
        let cell = self.draw_cell(index);
        let mut open = lock(&self.open)?;
        let Some(result) = lock(cell)?.take() else {
            // Taken by another caller between the check and here.
            return Ok(open.contains_key(&index));
        };
        let Some(mut prepared) = result? else {
            lock(&self.done)?.push((index, None));
            return Ok(false);
        };
        let w = &self.plan.weights[index];
        let (bias, scheme) = match &mut prepared {
            Prepared::Lazy(drawn) => (drawn.init.bias.take(), drawn.scheme),
            Prepared::Whole { bias, scheme, .. } => (bias.take(), *scheme),
        };
        let bias = bias_entry(self.model, self.plan, w, bias, scheme)?;
        open.insert(
            index,
            OpenDraw {
                weight: Some(prepared),
                bias,
                bias_written: false,
                record: None,
            },
        );
        Ok(true)
    }

    /// Writes weight `index` into `out` and records it; `false` when the
    /// scheme does not cover it. A structured weight not drawn yet is drawn
    /// with the window that starts at it; while the last weight of a window
    /// is written, the next window is drawn.
    fn write_weight(
        &self,
        index: usize,
        out: &mut dyn streamed::Emit,
    ) -> Result<bool, reinit_onnx::Error> {
        let Some(&k) = self.dense_position.get(&index) else {
            return self.write_weight_now(index, out);
        };
        if !self.is_drawn(index) {
            self.draw_window(k);
        }
        match self.dense_order.get(k + 1) {
            // A failed look-ahead is dropped here and reported when the save
            // asks for that weight (its cell keeps the error).
            Some(&next) if !self.is_drawn(next) => {
                rayon::join(
                    || self.write_weight_now(index, out),
                    || self.draw_window(k + 1),
                )
                .0
            }
            _ => self.write_weight_now(index, out),
        }
    }

    /// Writes weight `index` into `out` (streamed where it can be) and
    /// records it; `false` when the scheme does not cover it.
    fn write_weight_now(
        &self,
        index: usize,
        out: &mut dyn streamed::Emit,
    ) -> Result<bool, reinit_onnx::Error> {
        let w = &self.plan.weights[index];
        let to_onnx = |e| self.to_onnx(e, w.tensor);
        if !self.open_draw(index).map_err(to_onnx)? {
            return Ok(false);
        }
        let taken = lock(&self.open)
            .map_err(to_onnx)?
            .get_mut(&index)
            .and_then(|o| o.weight.take());
        let Some(prepared) = taken else {
            return Ok(true); // written already
        };
        let record = write_prepared(self.model, self.plan, w, prepared, out)?;
        let mut open = lock(&self.open).map_err(to_onnx)?;
        let entry = open.get_mut(&index).expect("drawn above");
        entry.record = Some(record);
        self.close_if_complete(&mut open, index).map_err(to_onnx)?;
        (self.tick)();
        Ok(true)
    }

    /// Writes the new bias `id` of weight `index`; `false` when it keeps its values.
    fn write_bias(
        &self,
        index: usize,
        id: TensorId,
        out: &mut dyn streamed::Emit,
    ) -> Result<bool, reinit_onnx::Error> {
        let to_onnx = |e| self.to_onnx(e, id);
        if !self.open_draw(index).map_err(to_onnx)? {
            return Ok(false);
        }
        let mut open = lock(&self.open).map_err(to_onnx)?;
        let Some(entry) = open.get_mut(&index) else {
            return Ok(false);
        };
        match &entry.bias {
            Some((bias, values, _)) if *bias == id && !entry.bias_written => out.values(values)?,
            _ => return Ok(false),
        }
        entry.bias_written = true;
        self.close_if_complete(&mut open, index).map_err(to_onnx)?;
        Ok(true)
    }

    /// Moves a draw whose weight and bias are both written to `done`.
    fn close_if_complete(
        &self,
        open: &mut HashMap<usize, OpenDraw>,
        index: usize,
    ) -> Result<(), Error> {
        if open.get(&index).is_some_and(OpenDraw::complete) {
            let record = open.remove(&index).and_then(OpenDraw::into_record);
            lock(&self.done)?.push((index, record));
        }
        Ok(())
    }

    fn to_onnx(&self, e: Error, id: TensorId) -> reinit_onnx::Error {
        match e {
            Error::Load(e) | Error::Save(e) => e,
            other => reinit_onnx::Error::Tensor {
                path: self.model.path().to_path_buf(),
                tensor: self.model.tensor(id).name.clone(),
                reason: other.to_string(),
            },
        }
    }
}

/// Deferred weights in the order a save asks for them: external ones first,
/// by data file and offset (the data file is written before the model), then
/// embedded ones by position in the model file.
fn save_order(model: &Model, plan: &Plan, deferred: &[usize]) -> Vec<usize> {
    let mut order = deferred.to_vec();
    order.sort_by_key(|&i| {
        let id = plan.weights[i].tensor;
        match &model.tensor(id).storage {
            Storage::External(r) => (0, r.location.clone(), r.offset, id.0),
            _ => (1, String::new(), 0, id.0),
        }
    });
    order
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>, Error> {
    m.lock()
        .map_err(|_| Error::Internal("a fill thread panicked (poisoned lock)".into()))
}

impl DeferredValues for Deferred<'_> {
    fn write_values(
        &self,
        id: TensorId,
        out: &mut ValueSink<'_>,
    ) -> Result<(), reinit_onnx::Error> {
        let written = match self.owners.get(&id) {
            Some(&index) if self.plan.weights[index].tensor == id => {
                self.write_weight(index, out)?
            }
            Some(&index) => self.write_bias(index, id, out)?,
            None => false,
        };
        if !written {
            // Not covered by the scheme, or a bias the scheme keeps.
            out.put(&self.model.read_f64(id)?)?;
        }
        Ok(())
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
