//! Drawing one weight: its scheme (or fallback) run on its own stream, the
//! refine step's transform applied, and the values brought to the stored
//! layout — the one place a weight's values are produced, whether the save
//! asks for them (deferred) or they are drawn up front (eager).

use reinit_onnx::{Model, Payload, Storage, TensorId};
use reinit_schemes::{
    LayerInit, LazyLayerInit, Scheme, SchemeError, Stream, StreamVersion, WeightValues,
    init_layer_lazy,
};

use super::masks::Mask;
use super::record::{self, Realized};
use crate::error::Error;
use crate::plan::{Plan, PlannedWeight};
use crate::report::Stats;
use crate::streamed;

/// What the refine step does to one weight's drawn values.
#[derive(Debug, Clone)]
pub(crate) struct Refinement {
    /// Every value is multiplied by it.
    pub scale: f64,
    /// Replaces the pre-init's note in the weight's report.
    pub note: String,
}

/// A weight's scheme run (or its fallback's), the weight possibly not yet
/// drawn (an i.i.d. fill), with what its report needs.
pub(super) struct Drawn {
    pub scheme: Scheme,
    pub init: LazyLayerInit,
    pub before: Stats,
}

/// A drawn weight ready to be written.
pub(super) enum Prepared {
    /// An i.i.d. weight, drawn as it is streamed.
    Lazy(Drawn),
    /// A structured weight made whole — values (canonical when stored as its
    /// plain transpose, else in stored layout), report with its
    /// orthogonality check, mask — with its scheme's new bias.
    Whole {
        realized: Box<Realized>,
        scheme: Scheme,
        bias: Option<Vec<f64>>,
    },
}

/// Which weights are drawn during the save, as the writer reaches them:
/// those in external data (so a model with gigabytes of it needs memory for
/// a window of tensors), and embedded weights whose payload length is known
/// in advance (drawn into the output as it is written, so the new weights
/// are never all in memory next to the model). A weight is deferred only
/// with its bias.
pub(super) fn is_deferred(model: &Model, plan: &Plan, index: usize) -> bool {
    let w = &plan.weights[index];
    let external = |id: TensorId| matches!(model.tensor(id).storage, Storage::External(_));
    let bias = plan.analysis.layers[w.layer].bias;
    if external(w.tensor) {
        return bias.is_none_or(external);
    }
    model.can_defer(w.tensor) && bias.is_none_or(|b| !external(b) && model.can_defer(b))
}

/// Runs the scheme (or its fallback) for one weight and applies its
/// refinement; `None` when neither scheme covers it. Without `masks` no mask
/// is computed (EOI) or kept (random-mask); the values are the same.
pub(super) fn draw(
    model: &Model,
    w: &PlannedWeight,
    seed: u64,
    stream: StreamVersion,
    masks: bool,
    before: Option<Stats>,
    refinement: Option<&Refinement>,
) -> Result<Option<Drawn>, Error> {
    // Statistics of the old values first, so that the old and the new values
    // of a large tensor are never in memory at the same time.
    let before = match before {
        Some(stats) => stats,
        None => Stats::of_tensor(model, w.tensor).map_err(Error::Load)?,
    };
    // The scheme as planned stays the weight's (its report, the metadata);
    // only the run goes without the mask.
    let run = |scheme: &Scheme| {
        let mut stream = Stream::versioned(stream, seed, &w.name, scheme.name());
        let scheme = if masks {
            *scheme
        } else {
            scheme.without_mask()
        };
        init_layer_lazy(&scheme, &w.spec, &mut stream)
    };
    let scheme_error = |scheme: &Scheme, source| Error::Scheme {
        tensor: w.name.clone(),
        scheme: scheme.name().into(),
        source: Box::new(source),
    };
    let (scheme, mut init) = match run(&w.scheme) {
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
    if !masks {
        init.mask = None;
    }
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
        WeightValues::Iid(_) | WeightValues::Orthogonal(_) | WeightValues::Sparse(_) => {
            return Err(Error::Internal(format!(
                "weight '{}': a refinement for a lazy draw (LSUV weights are dense)",
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
pub(super) fn draw_encoded(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    seed: u64,
    masks: bool,
    refinement: Option<&Refinement>,
) -> Result<Option<(Realized, Payload)>, Error> {
    let stream = plan.options.stream;
    let Some(mut drawn) = draw(model, w, seed, stream, masks, None, refinement)? else {
        return Ok(None);
    };
    let bias = drawn.init.bias.take();
    let scheme = drawn.scheme;
    let banded = matches!(drawn.init.weight, WeightValues::Orthogonal(_))
        && streamed::plain_layout(&plan.analysis.layers[w.layer]).is_some();
    let (mut realized, payload) = if model.holds_le_bytes(w.tensor) {
        let prepared = prepare(model, plan, w, drawn);
        let mut realized = None;
        let payload = le_payload(model, w.tensor, |out| {
            realized = Some(write_prepared(model, plan, w, prepared, out)?);
            Ok(())
        })?;
        let realized = realized.ok_or_else(|| {
            Error::Internal(format!("weight '{}': the fill wrote nothing", w.name))
        })?;
        (realized, payload)
    } else if banded {
        // Values in the order the streamed writer makes them (so they equal it bit for
        // bit), then encoded.
        let prepared = prepare(model, plan, w, drawn);
        let mut values = streamed::Values::default();
        let realized =
            write_prepared(model, plan, w, prepared, &mut values).map_err(Error::Save)?;
        let payload = model.encode(w.tensor, &values.0).map_err(Error::Save)?;
        (realized, payload)
    } else {
        let mut r = realize(model, plan, w, drawn, true);
        let payload = model.encode(r.tensor, &r.stored).map_err(Error::Save)?;
        r.stored = Vec::new();
        (r, payload)
    };
    realized.bias = record::bias_entry(model, plan, w, bias, scheme)?;
    Ok(Some((realized, payload)))
}

/// An i.i.d. draw stays lazy, and so does a banded orthogonal one stored in
/// canonical or transposed layout; other structured ones are made whole (on
/// whichever thread calls this).
pub(super) fn prepare(model: &Model, plan: &Plan, w: &PlannedWeight, mut drawn: Drawn) -> Prepared {
    let lazy = match &drawn.init.weight {
        WeightValues::Orthogonal(_) | WeightValues::Sparse(_) => {
            streamed::plain_layout(&plan.analysis.layers[w.layer]).is_some()
        }
        values => streamed::streamable(values),
    };
    if lazy {
        return Prepared::Lazy(drawn);
    }
    let bias = drawn.init.bias.take();
    let scheme = drawn.scheme;
    // A plain transpose is written from the canonical matrix in bands.
    let transposed = plan.analysis.layers[w.layer]
        .stored_as_transpose()
        .is_some();
    Prepared::Whole {
        realized: Box::new(realize(model, plan, w, drawn, !transposed)),
        scheme,
        bias,
    }
}

/// Writes a prepared weight into `out` in its stored layout (streamed where
/// it is i.i.d.) and returns its record, bias aside.
pub(super) fn write_prepared(
    model: &Model,
    plan: &Plan,
    w: &PlannedWeight,
    prepared: Prepared,
    out: &mut dyn streamed::Emit,
) -> Result<Realized, reinit_onnx::Error> {
    let dtype = model.tensor(w.tensor).dtype;
    Ok(match prepared {
        Prepared::Lazy(mut drawn) => match &drawn.init.weight {
            WeightValues::Orthogonal(bands) => {
                let layer = &plan.analysis.layers[w.layer];
                let transposed = streamed::plain_layout(layer) == Some(true);
                let (after, error) = streamed::write_orthogonal(bands, transposed, dtype, out)?;
                // (reported for the schemes whose whole weights report it: not
                // delta-orthogonal's)
                let reported = record::reports_orthogonality(&drawn.scheme);
                let mut realized = record::streamed(model, plan, w, drawn, after);
                realized.report.orthogonality_error = error.filter(|_| reported);
                realized
            }
            WeightValues::Sparse(sparse) => {
                let layer = &plan.analysis.layers[w.layer];
                let after = streamed::write_sparse(sparse, layer.stored_as_transpose(), out)?;
                let mask = drawn.init.mask.take();
                let mut realized = record::streamed(model, plan, w, drawn, after);
                realized.mask = mask.map(|mask| Mask {
                    name: w.name.clone(),
                    shape: model.tensor(w.tensor).dims.clone(),
                    values: layer.mask_to_stored(mask),
                });
                realized
            }
            values => {
                let after = streamed::stream(values, dtype, out)?;
                record::streamed(model, plan, w, drawn, after)
            }
        },
        Prepared::Whole { mut realized, .. } => {
            match plan.analysis.layers[w.layer].stored_as_transpose() {
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
    model
        .payload_from_le(id, out.bytes)
        .map_err(Error::Save)?
        .ok_or_else(|| {
            Error::Internal(format!(
                "tensor '{}': its storage holds no little-endian bytes",
                entry.name
            ))
        })
}

/// A draw made whole (its bias aside): values — in stored layout, or left
/// canonical when `convert` is false and the draw is structured — report
/// with the orthogonality check, mask.
fn realize(model: &Model, plan: &Plan, w: &PlannedWeight, drawn: Drawn, convert: bool) -> Realized {
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
    let orthogonality_error = record::orthogonality(&scheme, &init, w, entry.dtype);
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
        values: layer.mask_to_stored(mask),
    });
    let mut report = record::weight_report(model, plan, w, scheme, notes, before, after);
    report.orthogonality_error = orthogonality_error;
    Realized {
        tensor: w.tensor,
        stored: if in_stored_order || !convert {
            weight
        } else {
            layer.canonical_into_stored(weight)
        },
        report,
        bias: None,
        mask,
    }
}
