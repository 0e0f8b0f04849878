//! The value source for deferred weights: the save asks for a weight (or its
//! bias) when its writer reaches it; a structured weight is drawn with a
//! window of those that follow it in save order, in parallel, the next window
//! while the last of one is written; an i.i.d. one is streamed into the
//! output ([`streamed`](crate::streamed)). Each weight's outcome is kept for
//! the report, which the session completes after the save.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use rayon::prelude::*;
use reinit_onnx::{DeferredValues, Model, Storage, TensorId, ValueSink};

use super::draw::{self, Prepared, Refinement};
use super::record::{self, BiasEntry, Outcome, Realized};
use crate::error::Error;
use crate::heap;
use crate::plan::Plan;
use crate::report::Stats;
use crate::streamed;

pub(super) struct Deferred<'a> {
    model: &'a Model,
    plan: &'a Plan,
    seed: u64,
    /// Whether masks are computed and kept.
    masks: bool,
    /// Indices into `plan.weights` of the deferred weights.
    deferred: &'a [usize],
    /// Tensor id → index into `plan.weights`, for weights and their biases.
    owners: HashMap<TensorId, usize>,
    /// Statistics of the old values, by weight index.
    before: &'a HashMap<usize, Stats>,
    /// The refine step's transforms, by weight.
    refinements: &'a HashMap<TensorId, Refinement>,
    /// Draws whose weight or bias is still to be written, by weight index.
    open: Mutex<HashMap<usize, OpenDraw>>,
    done: Mutex<Vec<(usize, Outcome)>>,
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
}

type DrawResult = Result<Option<Prepared>, Error>;

/// Most f64 values of structured weights drawn ahead at once (each needs
/// about two more matrices of its size while it is drawn).
const WINDOW_VALUES: usize = 16 << 20;

/// A drawn weight whose weight or bias the save has not reached yet.
struct OpenDraw {
    /// `None` once the weight is written.
    weight: Option<Prepared>,
    /// The new bias and its report (`None`: no bias, or the scheme keeps it).
    bias: Option<BiasEntry>,
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
    pub fn new(session: &'a super::Drawing<'a>, tick: &'a (dyn Fn() + Sync)) -> Deferred<'a> {
        let (model, plan) = (session.model, session.plan);
        let mut owners = HashMap::new();
        for &i in &session.deferred {
            let w = &plan.weights[i];
            owners.insert(w.tensor, i);
            if let Some(bias) = plan.analysis.layers[w.layer].bias {
                owners.insert(bias, i);
            }
        }
        let draws = session
            .deferred
            .iter()
            .map(|&i| (i, OnceLock::new()))
            .collect();
        let dense_order = save_order(model, plan, &session.deferred)
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
            seed: session.seed,
            masks: session.masks,
            deferred: &session.deferred,
            owners,
            before: &session.deferred_before,
            refinements: &session.refinements,
            open: Mutex::default(),
            done: Mutex::default(),
            draws,
            dense_order,
            dense_position,
            tick,
        }
    }

    /// The draw of deferred weight `index`, made now unless another thread
    /// made (or is making) it.
    fn draw_cell(&self, index: usize) -> &Mutex<Option<DrawResult>> {
        self.draws[&index].get_or_init(|| {
            let w = &self.plan.weights[index];
            let before = self.before.get(&index).copied();
            let prepared = draw::draw(
                self.model,
                w,
                self.seed,
                self.plan.options.stream,
                self.masks,
                before,
                self.refinements.get(&w.tensor),
            )
            .map(|drawn| drawn.map(|drawn| draw::prepare(self.model, self.plan, w, drawn)));
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
    pub fn fill_remaining(&self) -> Result<(), Error> {
        for &i in self.deferred {
            let produced = lock(&self.done)?.iter().any(|(j, _)| *j == i);
            if !produced {
                self.write_weight(i, &mut streamed::Discard)
                    .map_err(Error::Save)?;
            }
        }
        Ok(())
    }

    /// Every deferred weight's outcome, by weight index.
    pub fn finish(self) -> Vec<(usize, Outcome)> {
        let mut done = self.done.into_inner().unwrap_or_default();
        for (i, open) in self.open.into_inner().unwrap_or_default() {
            if let Some(record) = open.into_record() {
                done.push((i, Some(record)));
            }
        }
        done.sort_by_key(|(i, _)| *i);
        done.dedup_by_key(|(i, _)| *i);
        done
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
        let bias = record::bias_entry(self.model, self.plan, w, bias, scheme)?;
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
        let record = draw::write_prepared(self.model, self.plan, w, prepared, out)?;
        if !w.scheme.draws_iid() && self.model.tensor(w.tensor).numel() >= heap::TRIM_MIN_VALUES {
            heap::release_freed();
        }
        let mut open = lock(&self.open).map_err(to_onnx)?;
        let Some(entry) = open.get_mut(&index) else {
            return Err(to_onnx(Error::Internal(format!(
                "weight '{}': its draw was closed before it was written",
                w.name
            ))));
        };
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

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, Error> {
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
