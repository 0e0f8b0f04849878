//! The rewrite session: one object that owns a rewrite from its plan to the
//! bytes it writes, so no step can be skipped or run twice.
//!
//! ```text
//! Session::new(model, plan, seed)
//!   refine   LSUV's data pass on a draft (`lsuv`) → a Refinement per weight
//!   draw     eager weights drawn now (refined), deferred ones marked, norms set
//!   ─ consumed by one of ─
//!   write(path) / to_bytes() / dry_run()
//!   emit     the save reaches each deferred weight → drawn (refined) → written
//!            → Rewritten { report (every weight), masks, saved }
//! ```
//!
//! Masks (EOI's trainable mask, random-mask's zero pattern: one byte a value)
//! are kept only when [`SessionOptions::masks`] asks for them — the CLI does
//! only for `--mask-out` — since on a large sparse model they outweigh
//! everything else the rewrite holds.
//!
//! Every weight's values come out of [`draw::draw`], which applies the
//! weight's refinement, so LSUV's scales and EOI's masks reach eager and
//! deferred weights, embedded and external, whichever way the session ends.
//! Each weight has its own stream, so results depend neither on the order
//! nor on the thread count. Weights are drawn at one of two moments:
//! - *deferred*, during the save ([`deferred`]): every external weight, and
//!   every embedded weight whose new payload length is known in advance.
//!   I.i.d. weights are streamed into the output ([`streamed`](crate::streamed))
//!   and never held whole; the structured schemes' weights are drawn a window
//!   at a time, in parallel, ahead of the writer;
//! - *eager*, up front and in parallel across layers: the rest (embedded
//!   tensors in `int32_data` and the like), kept as encoded payloads.

mod deferred;
mod draw;
mod masks;
mod norms;
mod record;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use reinit_onnx::{Edits, Model, SaveOptions, SaveReport, TensorId};
use reinit_schemes::StreamVersion;

use crate::error::Error;
use crate::plan::Plan;
use crate::report::{Report, Stats, Timings};
use deferred::Deferred;
pub(crate) use draw::Refinement;
pub use masks::{Mask, write_masks};

/// A rewrite in progress: the plan refined and its eager weights drawn; one
/// of [`Session::write`], [`Session::to_bytes`] or [`Session::dry_run`]
/// draws the rest and ends it.
pub struct Session<'m> {
    drawing: Drawing<'m>,
    /// The eager weights' payloads, the norms' values, the deferred marks.
    edits: Edits,
    /// Complete for the eager weights, the norms and LSUV; the deferred
    /// weights' entries join it as they are written.
    report: Report,
    masks: Vec<Mask>,
    tick: &'m (dyn Fn() + Sync),
}

/// What the deferred weights are drawn from, shared with the save's value
/// source.
struct Drawing<'m> {
    model: &'m Model,
    plan: &'m Plan,
    seed: u64,
    /// Indices into `plan.weights` of the weights drawn during the save.
    deferred: Vec<usize>,
    /// Whether masks are computed and kept for [`Rewritten::masks`].
    masks: bool,
    /// Statistics of the deferred weights' old values, taken up front in
    /// parallel so that the writer only draws and writes.
    deferred_before: HashMap<usize, Stats>,
    /// The refine step's transforms (LSUV's scales), by weight.
    refinements: HashMap<TensorId, Refinement>,
}

/// A finished rewrite.
#[derive(Debug)]
pub struct Rewritten {
    /// Every planned weight's entry, the norms reset, LSUV's section, timings.
    pub report: Report,
    /// EOI masks in stored layout, by initializer name (empty unless
    /// [`SessionOptions::masks`]).
    pub masks: Vec<Mask>,
    /// The save's own report (`None` for `to_bytes` and a dry run).
    pub saved: Option<SaveReport>,
}

/// What a session does besides the rewrite itself.
#[derive(Clone, Copy)]
pub struct SessionOptions<'m> {
    /// Called once per weight drawn (up front, or later during the save) — a
    /// progress bar.
    pub tick: &'m (dyn Fn() + Sync),
    /// Whether the masks are computed and kept for [`Rewritten::masks`]
    /// (`--mask-out`, `verify`'s frozen entries). The written model is the
    /// same either way.
    pub masks: bool,
}

impl Default for SessionOptions<'_> {
    /// No progress, masks kept.
    fn default() -> Self {
        SessionOptions {
            tick: &|| {},
            masks: true,
        }
    }
}

impl<'m> Session<'m> {
    /// Refines `plan` (LSUV's data pass, when it has LSUV weights and the
    /// crate is built with `verify`) and draws the weights the save cannot
    /// draw itself, all from `seed`; keeps the masks.
    pub fn new(model: &'m Model, plan: &'m Plan, seed: u64) -> Result<Session<'m>, Error> {
        Self::with_options(model, plan, seed, SessionOptions::default())
    }

    /// As [`Session::new`], calling `tick` once per weight drawn (up front,
    /// or later during the save) — a progress bar.
    pub fn with_progress(
        model: &'m Model,
        plan: &'m Plan,
        seed: u64,
        tick: &'m (dyn Fn() + Sync),
    ) -> Result<Session<'m>, Error> {
        let options = SessionOptions {
            tick,
            ..SessionOptions::default()
        };
        Self::with_options(model, plan, seed, options)
    }

    /// As [`Session::new`], with a progress callback and the choice of
    /// keeping masks.
    pub fn with_options(
        model: &'m Model,
        plan: &'m Plan,
        seed: u64,
        options: SessionOptions<'m>,
    ) -> Result<Session<'m>, Error> {
        let start = Instant::now();
        #[cfg(feature = "verify")]
        let refined = crate::lsuv::refine(model, plan, seed)?;
        #[cfg(not(feature = "verify"))]
        let refined = Refined::default();
        let mut session = Self::drawn(model, plan, seed, refined.refinements, options)?;
        session.report.lsuv = refined.report;
        session.report.warnings.extend(refined.warnings);
        session.report.timings_ms.init = start.elapsed().as_secs_f64() * 1e3;
        Ok(session)
    }

    /// The unrefined rewrite LSUV's data pass runs on.
    #[cfg(feature = "verify")]
    pub(crate) fn draft(model: &'m Model, plan: &'m Plan, seed: u64) -> Result<Session<'m>, Error> {
        let options = SessionOptions {
            masks: false,
            ..SessionOptions::default()
        };
        Self::drawn(model, plan, seed, HashMap::new(), options)
    }

    /// Draws every weight that is not deferred and prepares the deferred
    /// ones, each with its refinement; sets the planned norms.
    fn drawn(
        model: &'m Model,
        plan: &'m Plan,
        seed: u64,
        refinements: HashMap<TensorId, Refinement>,
        options: SessionOptions<'m>,
    ) -> Result<Session<'m>, Error> {
        let start = Instant::now();
        let SessionOptions { tick, masks: keep } = options;
        let (deferred, eager): (Vec<usize>, Vec<usize>) =
            (0..plan.weights.len()).partition(|&i| draw::is_deferred(model, plan, i));
        // Draw and encode in parallel: the edits keep the encoded payload (4
        // bytes a value for f32) rather than the f64 values.
        let drawn: Vec<_> = eager
            .par_iter()
            .map(|&i| {
                let w = &plan.weights[i];
                let refinement = refinements.get(&w.tensor);
                let result = draw::draw_encoded(model, plan, w, seed, keep, refinement);
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
        for (&i, result) in eager.iter().zip(drawn) {
            let outcome = match result? {
                Some((mut realized, payload)) => {
                    edits.set_payload(payload);
                    if let Some((id, values, _)) = &mut realized.bias {
                        edits.set(*id, std::mem::take(values));
                    }
                    Some(realized)
                }
                None => None,
            };
            record::add(&mut report, &mut masks, &plan.weights[i], outcome);
        }
        for &i in &deferred {
            let w = &plan.weights[i];
            edits.defer(w.tensor);
            if let Some(bias) = plan.analysis.layers[w.layer].bias {
                edits.defer(bias);
            }
        }
        for norm in &plan.norms {
            norms::set_norm(model, norm, &plan.options.norms, &mut edits, &mut report);
        }
        let deferred_before = deferred
            .par_iter()
            .map(|&i| {
                let stats = Stats::of_tensor(model, plan.weights[i].tensor).map_err(Error::Load)?;
                Ok((i, stats))
            })
            .collect::<Result<HashMap<_, _>, Error>>()?;
        report.timings_ms.init = start.elapsed().as_secs_f64() * 1e3;
        Ok(Session {
            drawing: Drawing {
                model,
                plan,
                seed,
                deferred,
                masks: keep,
                deferred_before,
                refinements,
            },
            edits,
            report,
            masks,
            tick,
        })
    }

    /// Whether tensor `id` is drawn as the save reaches it (a deferred
    /// weight or its bias), rather than held by the session.
    pub fn is_deferred(&self, id: TensorId) -> bool {
        self.edits.is_deferred(id)
    }

    /// Whether the session holds new values for tensor `id` (an eager
    /// weight's encoded payload, a reset norm's values).
    pub fn holds_values(&self, id: TensorId) -> bool {
        self.edits.payload(id).is_some() || self.edits.get(id).is_some()
    }

    /// Saves the rewritten model to `path` (atomically; see
    /// [`Model::save`]), recording the run in `metadata_props`
    /// (`reinit.version`, `reinit.scheme`, `reinit.seed`, `reinit.options`).
    pub fn write(self, path: &Path, options: &SaveOptions) -> Result<Rewritten, Error> {
        let model = self.drawing.model;
        let mut done = self.emit(|edits, source| {
            model
                .save_deferred(path, edits, source, options)
                .map(Some)
                .map_err(Error::Save)
        })?;
        done.report.output = Some(path.display().to_string());
        Ok(done)
    }

    /// The rewritten model as bytes (a model without external data), with
    /// the run's metadata.
    pub fn to_bytes(self) -> Result<(Rewritten, Vec<u8>), Error> {
        let model = self.drawing.model;
        let mut bytes = Vec::new();
        let done = self.emit(|edits, source| {
            bytes = model
                .to_bytes_deferred(edits, source)
                .map_err(Error::Save)?;
            Ok(None)
        })?;
        Ok((done, bytes))
    }

    /// Draws the deferred weights one at a time for their statistics and
    /// writes nothing: the report of a `--dry-run`.
    pub fn dry_run(self) -> Result<Rewritten, Error> {
        let mut done = self.emit(|_, source| source.fill_remaining().map(|()| None))?;
        done.report.dry_run = true;
        Ok(done)
    }

    /// Runs `save` with the edits (and the run's metadata) and the deferred
    /// weights' source, then completes the report with their entries.
    fn emit(
        self,
        save: impl FnOnce(&Edits, &Deferred<'_>) -> Result<Option<SaveReport>, Error>,
    ) -> Result<Rewritten, Error> {
        let start = Instant::now();
        let Session {
            drawing,
            mut edits,
            mut report,
            mut masks,
            tick,
        } = self;
        add_metadata(&mut edits, &drawing, &report);
        let source = Deferred::new(&drawing, tick);
        let saved = save(&edits, &source)?;
        for (i, outcome) in source.finish() {
            record::add(&mut report, &mut masks, &drawing.plan.weights[i], outcome);
        }
        report.timings_ms.write = start.elapsed().as_secs_f64() * 1e3;
        Ok(Rewritten {
            report,
            masks,
            saved,
        })
    }
}

/// Without `verify` there is no data pass: nothing is refined.
#[cfg(not(feature = "verify"))]
#[derive(Default)]
struct Refined {
    refinements: HashMap<TensorId, Refinement>,
    report: Option<crate::report::LsuvReport>,
    warnings: Vec<String>,
}

/// Records the run in `metadata_props`. The schemes' parameters come from
/// the eager weights' entries and, for the deferred ones, from the plan (the
/// metadata is written before them).
fn add_metadata(edits: &mut Edits, drawing: &Drawing<'_>, report: &Report) {
    edits.set_metadata("reinit.version", env!("CARGO_PKG_VERSION"));
    edits.set_metadata("reinit.scheme", report.scheme.clone());
    edits.set_metadata("reinit.seed", report.seed.to_string());
    // v1 left no entry (every release before v2), and its bytes stay as they were.
    let stream = drawing.plan.options.stream;
    if stream != StreamVersion::V1 {
        edits.set_metadata("reinit.stream", stream.number().to_string());
    }
    if !report.norms_reset.is_empty() {
        let nodes: Vec<&str> = report.norms_reset.iter().map(|n| n.node.as_str()).collect();
        edits.set_metadata(
            "reinit.norms_reset",
            serde_json::to_string(&nodes).unwrap_or_default(),
        );
    }
    let deferred: Vec<(String, String)> = drawing
        .deferred
        .iter()
        .map(|&i| drawing.plan.weights[i].scheme)
        .map(|s| (s.name().to_string(), format!("{s:?}")))
        .collect();
    let options: BTreeMap<&str, &str> = report
        .weights
        .iter()
        .map(|w| (w.scheme.as_str(), w.params.as_str()))
        .chain(deferred.iter().map(|(n, p)| (n.as_str(), p.as_str())))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    edits.set_metadata(
        "reinit.options",
        serde_json::to_string(&options).unwrap_or_default(),
    );
}
