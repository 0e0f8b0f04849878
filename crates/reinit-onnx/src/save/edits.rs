//! The edit protocol between the facade and a save: [`Edits`] (new values,
//! encoded payloads, tensors marked deferred, metadata) and, for deferred
//! tensors, the [`DeferredValues`] source that writes their values into a
//! counting [`ValueSink`] as the save reaches them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::Sink;
use crate::error::Error;
use crate::model::{Model, TensorId};

/// New values for tensors, and metadata to record. Values are given as f64 and
/// written in each tensor's own dtype (round to nearest, ties to even) and storage.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    pub(crate) values: BTreeMap<TensorId, Vec<f64>>,
    /// New values already encoded in the tensor's dtype and storage form
    /// (half the memory of f64 for an f32 model, encoded off the save path).
    pub(crate) payloads: BTreeMap<TensorId, Vec<u8>>,
    /// Tensors whose values a [`DeferredValues`] source produces while the
    /// save writes them (external data, or an embedded payload of known length).
    pub(crate) deferred: BTreeSet<TensorId>,
    pub(crate) metadata: Vec<(String, String)>,
}

/// Produces the new values of deferred tensors during a save, one tensor at a
/// time and in pieces, so rewriting a model with gigabytes of external data
/// needs memory for at most one tensor, not for the model.
pub trait DeferredValues: Sync {
    /// Writes the new values of tensor `id`, in stored order, into `out`, in
    /// as many pieces as the source likes: `numel` values in all.
    fn write_values(&self, id: TensorId, out: &mut ValueSink<'_>) -> Result<(), Error>;
}

/// Where a deferred tensor's values go while the data file is written. It
/// counts what it is given: too many or too few values are an error naming
/// the tensor, never a misplaced data file.
pub struct ValueSink<'a> {
    pub(crate) model: &'a Model,
    pub(crate) id: TensorId,
    pub(crate) out: &'a mut dyn Sink,
    pub(crate) values: usize,
    pub(crate) scratch: Vec<u8>,
}

impl ValueSink<'_> {
    /// The tensor being written.
    pub fn tensor(&self) -> &crate::TensorEntry {
        self.model.tensor(self.id)
    }

    /// An error naming the model file and this tensor.
    pub fn error(&self, reason: String) -> Error {
        self.model.tensor_error(self.model.tensor(self.id), reason)
    }

    /// Appends `values`, rounded to the tensor's dtype.
    pub fn put(&mut self, values: &[f64]) -> Result<(), Error> {
        self.count(values.len())?;
        let entry = self.model.tensor(self.id);
        let size = entry.dtype.size().unwrap_or(0);
        self.scratch.resize(values.len() * size, 0);
        entry
            .dtype
            .write_le(values, &mut self.scratch)
            .map_err(|reason| self.model.tensor_error(entry, reason))?;
        self.out.put(&self.scratch)
    }

    /// Appends values already encoded little-endian in the tensor's dtype
    /// (by [`DType::write_le`](crate::DType::write_le)).
    pub fn put_encoded(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let entry = self.model.tensor(self.id);
        let size = entry.dtype.size().unwrap_or(1).max(1);
        if !bytes.len().is_multiple_of(size) {
            return Err(self.model.tensor_error(
                entry,
                format!(
                    "{} encoded bytes are not whole {} values",
                    bytes.len(),
                    entry.dtype
                ),
            ));
        }
        self.count(bytes.len() / size)?;
        self.out.put(bytes)
    }

    fn count(&mut self, n: usize) -> Result<(), Error> {
        self.values += n;
        let entry = self.model.tensor(self.id);
        if self.values > entry.numel() {
            return Err(self.model.tensor_error(
                entry,
                format!("more than its {} values were produced", entry.numel()),
            ));
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<(), Error> {
        let entry = self.model.tensor(self.id);
        if self.values != entry.numel() {
            return Err(self.model.tensor_error(
                entry,
                format!(
                    "{} new values for a tensor of {} elements",
                    self.values,
                    entry.numel()
                ),
            ));
        }
        Ok(())
    }
}

/// The source used by [`Model::save`]: there are no deferred tensors.
pub(crate) struct NoDeferred;

impl DeferredValues for NoDeferred {
    fn write_values(&self, id: TensorId, _: &mut ValueSink<'_>) -> Result<(), Error> {
        Err(Error::Refused {
            path: PathBuf::from(format!("tensor #{}", id.0)),
            reason: "deferred tensor saved without a value source".into(),
        })
    }
}

impl Edits {
    pub fn set(&mut self, id: TensorId, values: Vec<f64>) {
        self.deferred.remove(&id);
        self.payloads.remove(&id);
        self.values.insert(id, values);
    }

    /// Sets a tensor's new values from a payload made by [`Model::encode`].
    pub fn set_payload(&mut self, payload: Payload) {
        self.deferred.remove(&payload.id);
        self.values.remove(&payload.id);
        self.payloads.insert(payload.id, payload.bytes);
    }

    /// The encoded payload of a tensor set with [`Edits::set_payload`].
    pub fn payload(&self, id: TensorId) -> Option<&[u8]> {
        self.payloads.get(&id).map(Vec::as_slice)
    }

    /// Marks a tensor whose values come from the [`DeferredValues`] passed to
    /// [`Model::save_deferred`] (or [`Model::to_bytes_deferred`]) as the save
    /// reaches it; it must be one that [`Model::can_defer`].
    pub fn defer(&mut self, id: TensorId) {
        self.values.remove(&id);
        self.payloads.remove(&id);
        self.deferred.insert(id);
    }

    pub fn is_deferred(&self, id: TensorId) -> bool {
        self.deferred.contains(&id)
    }

    /// Whether `id` is edited (eagerly or deferred).
    pub fn contains(&self, id: TensorId) -> bool {
        self.values.contains_key(&id)
            || self.payloads.contains_key(&id)
            || self.deferred.contains(&id)
    }

    pub fn get(&self, id: TensorId) -> Option<&[f64]> {
        self.values.get(&id).map(Vec::as_slice)
    }

    /// Sets `metadata_props[key]`, replacing an existing entry of that key.
    pub fn set_metadata(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        self.metadata.retain(|(k, _)| *k != key);
        self.metadata.push((key, value.into()));
    }

    pub fn len(&self) -> usize {
        self.values.len() + self.payloads.len() + self.deferred.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.metadata.is_empty()
    }

    /// Every edited tensor, eager or deferred, in id order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorId> + '_ {
        let mut all: Vec<TensorId> = self
            .values
            .keys()
            .chain(self.payloads.keys())
            .chain(&self.deferred)
            .copied()
            .collect();
        all.sort();
        all.into_iter()
    }
}

/// A tensor's new values, checked and encoded by [`Model::encode`] in the
/// tensor's own dtype and storage form.
#[derive(Debug, Clone)]
pub struct Payload {
    pub(crate) id: TensorId,
    pub(crate) bytes: Vec<u8>,
}
