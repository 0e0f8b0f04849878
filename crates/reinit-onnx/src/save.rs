//! Saving: splice new payloads into the original bytes.
//!
//! The rule (ARCHITECTURE.md, "Fidelity"): the output is the input's bytes with
//! only (a) the payload fields of edited tensors, (b) the external-data entries
//! that must point at the new data file, (c) the `metadata_props` we add, and
//! (d) the length prefixes of the messages enclosing (a)–(c) replaced. Nothing
//! is re-encoded, so unknown fields, field order and non-canonical encodings
//! survive, and a model saved without edits is byte-identical.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::atomic::{PendingFile, ReadyFile};
use crate::codec::{self, DType, Storage};
use crate::error::Error;
use crate::external;
use crate::index::{self, LenField};
use crate::model::{Model, TensorId};
use crate::wire;

/// New values for tensors, and metadata to record. Values are given as f64 and
/// written in each tensor's own dtype (round to nearest, ties to even) and storage.
#[derive(Debug, Default, Clone)]
pub struct Edits {
    values: BTreeMap<TensorId, Vec<f64>>,
    /// New values already encoded in the tensor's dtype and storage form
    /// (half the memory of f64 for an f32 model, encoded off the save path).
    payloads: BTreeMap<TensorId, Vec<u8>>,
    /// Tensors whose values a [`DeferredValues`] source produces while the
    /// save writes them (external data, or an embedded payload of known length).
    deferred: BTreeSet<TensorId>,
    metadata: Vec<(String, String)>,
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
    model: &'a Model,
    id: TensorId,
    out: &'a mut dyn Sink,
    values: usize,
    scratch: Vec<u8>,
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

    fn finish(self) -> Result<(), Error> {
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
struct NoDeferred;

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
    id: TensorId,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
pub struct SaveOptions {
    /// Replace an existing output file (other than the input).
    pub overwrite: bool,
    /// Allow the output to be the input file itself.
    pub in_place: bool,
    /// File name of the external data written beside the output; default
    /// `<output file name>.data`. Only used when the model has external data.
    pub data_file: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SaveReport {
    pub model_path: PathBuf,
    pub data_path: Option<PathBuf>,
    pub bytes_written: u64,
    pub tensors_changed: usize,
}

/// One replacement of a byte range of the original: given bytes, or a
/// deferred tensor's payload of known length, produced while it is written.
#[derive(Debug, Clone)]
struct Splice<'a> {
    range: Range<usize>,
    bytes: Cow<'a, [u8]>,
    /// `(tensor, payload length)`: the source writes the payload (`bytes` is empty).
    deferred: Option<(TensorId, usize)>,
}

impl Splice<'_> {
    fn len(&self) -> usize {
        self.deferred.map_or(self.bytes.len(), |(_, len)| len)
    }

    fn delta(&self) -> isize {
        self.len() as isize - self.range.len() as isize
    }
}

/// How external tensors are laid out in the new data file: each source file is
/// copied whole, at a 4096-aligned base, so tensors keep their alignment.
struct DataLayout {
    name: String,
    path: PathBuf,
    /// The data file of the model being replaced, removed once the new model
    /// is in place (the new one is written under another name; see
    /// `default_data_name`).
    stale: Option<PathBuf>,
    /// Source location → base offset in the new file, in first-use order.
    bases: Vec<(String, u64)>,
}

const DATA_ALIGNMENT: u64 = 4096;

impl Model {
    /// Writes the model with `edits` applied to `path`, atomically.
    pub fn save(
        &self,
        path: impl AsRef<Path>,
        edits: &Edits,
        options: &SaveOptions,
    ) -> Result<SaveReport, Error> {
        self.save_deferred(path, edits, &NoDeferred, options)
    }

    /// As [`Model::save`], asking `source` for the values of deferred tensors
    /// as the data file is written (one tensor in memory at a time).
    pub fn save_deferred(
        &self,
        path: impl AsRef<Path>,
        edits: &Edits,
        source: &dyn DeferredValues,
        options: &SaveOptions,
    ) -> Result<SaveReport, Error> {
        let path = path.as_ref();
        self.check_target(path, options)?;
        let layout = self.data_layout(path, options)?;

        let data = match &layout {
            Some(layout) => Some(self.write_data(layout, edits, source)?),
            None => None,
        };
        let mut model = PendingFile::create(path)?;
        self.spliced(edits, layout.as_ref(), source, &mut model)?;
        let model_bytes = model.written();
        let model = model.finish()?;
        let data_bytes = data.as_ref().map_or(0, |(_, n)| *n);
        let data_path = match data {
            Some((ready, _)) => Some(ready.commit()?),
            None => None,
        };
        fault::before_model_commit();
        let model_path = model.commit()?;
        if let Some(stale) = layout.and_then(|l| l.stale) {
            // Best effort: the new model no longer refers to it.
            let _ = std::fs::remove_file(stale);
        }
        Ok(SaveReport {
            model_path,
            data_path,
            bytes_written: model_bytes + data_bytes,
            tensors_changed: edits.len(),
        })
    }

    /// The edited model as bytes, for models without external data.
    pub fn to_bytes(&self, edits: &Edits) -> Result<Vec<u8>, Error> {
        self.to_bytes_deferred(edits, &NoDeferred)
    }

    /// As [`Model::to_bytes`], asking `source` for the values of deferred tensors.
    pub fn to_bytes_deferred(
        &self,
        edits: &Edits,
        source: &dyn DeferredValues,
    ) -> Result<Vec<u8>, Error> {
        if self.has_external_data() {
            return Err(Error::Refused {
                path: self.path().to_path_buf(),
                reason: "a model with external data must be saved to a file".into(),
            });
        }
        let mut out = Vec::with_capacity(self.bytes().len());
        self.spliced(edits, None, source, &mut out)?;
        Ok(out)
    }

    pub fn has_external_data(&self) -> bool {
        self.tensors()
            .iter()
            .any(|t| matches!(t.storage, Storage::External(_)))
    }

    fn check_target(&self, path: &Path, options: &SaveOptions) -> Result<(), Error> {
        let refuse = |reason: &str| Error::Refused {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        if meta.is_dir() {
            return Err(refuse("the output is a directory"));
        }
        if same_file(path, self.path()) {
            if !options.in_place {
                return Err(refuse(
                    "the output is the input file; pass the in-place option to overwrite it",
                ));
            }
        } else if !options.overwrite {
            return Err(refuse(
                "the output file exists; pass the force option to replace it",
            ));
        }
        if let Some(base) = self.base_dir() {
            for location in self.external.locations() {
                if same_file(path, &external::resolved(base, location)) {
                    return Err(refuse("the output is an external data file of the input"));
                }
            }
        }
        Ok(())
    }

    fn data_layout(&self, path: &Path, options: &SaveOptions) -> Result<Option<DataLayout>, Error> {
        if !self.has_external_data() {
            return Ok(None);
        }
        let file_name = path
            .file_name()
            .ok_or_else(|| Error::Refused {
                path: path.to_path_buf(),
                reason: "the output has no file name".into(),
            })?
            .to_string_lossy();
        let (name, mut stale) = match &options.data_file {
            Some(name) => (name.clone(), None),
            None => default_data_name(path, &file_name),
        };
        // Never remove the input's own data, unless the input is the model
        // being replaced (in place).
        if let (Some(old), Some(base)) = (&stale, self.base_dir())
            && !same_file(path, self.path())
            && self
                .external
                .locations()
                .any(|l| same_file(old, &external::resolved(base, l)))
        {
            stale = None;
        }
        external::check_location(&name).map_err(|reason| Error::Refused {
            path: path.to_path_buf(),
            reason: format!("data file name '{name}': {reason}"),
        })?;
        let data_path = path.with_file_name(&name);
        if same_file(&data_path, path) {
            return Err(Error::Refused {
                path: data_path,
                reason: "the data file would overwrite the model".into(),
            });
        }
        let mut bases: Vec<(String, u64)> = Vec::new();
        let mut next = 0u64;
        for entry in self.tensors() {
            if let Storage::External(reference) = &entry.storage
                && !bases.iter().any(|(l, _)| *l == reference.location)
            {
                let len = self
                    .external
                    .get(&reference.location)
                    .map_or(0, |m| m.len() as u64);
                bases.push((reference.location.clone(), next));
                next = (next + len).div_ceil(DATA_ALIGNMENT) * DATA_ALIGNMENT;
            }
        }
        Ok(Some(DataLayout {
            name,
            path: data_path,
            stale,
            bases,
        }))
    }

    /// Streams the new data file: each source file copied in turn, edited
    /// tensors' ranges replaced. Memory use is bounded by one tensor.
    fn write_data(
        &self,
        layout: &DataLayout,
        edits: &Edits,
        source: &dyn DeferredValues,
    ) -> Result<(ReadyFile, u64), Error> {
        let mut out = PendingFile::create(&layout.path)?;
        for (location, base) in &layout.bases {
            let padding = base - out.written();
            out.write(&vec![0u8; padding as usize])?;
            let Some(map) = self.external.get(location) else {
                continue;
            };
            let mut replaced: Vec<(Range<usize>, TensorId)> = self
                .ids()
                .filter(|&id| edits.contains(id))
                .filter_map(|id| match &self.tensor(id).storage {
                    Storage::External(r) if r.location == *location => {
                        external::byte_range(r, map.len() as u64)
                            .ok()
                            .map(|range| (range, id))
                    }
                    _ => None,
                })
                .collect();
            replaced.sort_by_key(|(range, _)| range.start);
            let mut pos = 0;
            for (range, id) in replaced {
                if range.start < pos {
                    return Err(self.tensor_error(
                        self.tensor(id),
                        "overlaps another tensor's external data".into(),
                    ));
                }
                copy_and_release(&mut out, map, pos..range.start)?;
                if let Some(payload) = edits.payload(id) {
                    out.write(payload)?;
                    pos = range.end;
                    continue;
                }
                match edits.get(id) {
                    Some(values) => self.write_encoded(&mut out, id, values)?,
                    None => {
                        if !self.tensor(id).dtype.is_float() {
                            return Err(self.tensor_error(
                                self.tensor(id),
                                format!("cannot rewrite a {} tensor", self.tensor(id).dtype),
                            ));
                        }
                        let mut sink = ValueSink {
                            model: self,
                            id,
                            out: &mut out,
                            values: 0,
                            scratch: Vec::new(),
                        };
                        source.write_values(id, &mut sink)?;
                        sink.finish()?;
                    }
                }
                pos = range.end;
            }
            copy_and_release(&mut out, map, pos..map.len())?;
        }
        let written = out.written();
        Ok((out.finish()?, written))
    }

    /// Streams the little-endian encoding of `values` in chunks, so no second
    /// copy of a large tensor is built.
    fn write_encoded(
        &self,
        out: &mut PendingFile,
        id: TensorId,
        values: &[f64],
    ) -> Result<(), Error> {
        self.check_values(id, values)?;
        let entry = self.tensor(id);
        for chunk in values.chunks(1 << 16) {
            let bytes = codec::encode(chunk, entry.dtype, &Storage::Raw)
                .map_err(|reason| self.tensor_error(entry, reason))?;
            out.write(&bytes)?;
        }
        Ok(())
    }

    fn check_values(&self, id: TensorId, values: &[f64]) -> Result<(), Error> {
        let entry = self.tensor(id);
        if !entry.dtype.is_float() {
            return Err(
                self.tensor_error(entry, format!("cannot rewrite a {} tensor", entry.dtype))
            );
        }
        if values.len() != entry.numel() {
            return Err(self.tensor_error(
                entry,
                format!(
                    "{} new values for a tensor of {} elements",
                    values.len(),
                    entry.numel()
                ),
            ));
        }
        Ok(())
    }

    /// Checks `values` against tensor `id` and encodes them in its dtype and
    /// storage form (little-endian for `raw_data` and external data, the
    /// packed payload for typed fields), ready for [`Edits::set_payload`].
    pub fn encode(&self, id: TensorId, values: &[f64]) -> Result<Payload, Error> {
        self.check_values(id, values)?;
        let entry = self.tensor(id);
        let storage = match entry.storage {
            Storage::External(_) => &Storage::Raw,
            ref other => other,
        };
        let bytes = codec::encode(values, entry.dtype, storage)
            .map_err(|reason| self.tensor_error(entry, reason))?;
        Ok(Payload { id, bytes })
    }

    /// Whether float tensor `id`'s storage holds its values as plain
    /// little-endian bytes of its dtype (see [`Model::payload_from_le`]).
    pub fn holds_le_bytes(&self, id: TensorId) -> bool {
        let entry = self.tensor(id);
        match (&entry.storage, entry.dtype) {
            (Storage::Raw | Storage::External(_), dtype) => dtype.is_float(),
            (Storage::FloatData, DType::F32) | (Storage::DoubleData, DType::F64) => true,
            _ => false,
        }
    }

    /// A payload from values already encoded little-endian in the tensor's
    /// dtype (by [`DType::write_le`](crate::DType::write_le)), for tensors
    /// whose storage holds exactly those bytes (`raw_data`, external data,
    /// f32 `float_data`, f64 `double_data`); `None` for the others (halves
    /// in `int32_data` are varints: use [`Model::encode`]).
    pub fn payload_from_le(&self, id: TensorId, bytes: Vec<u8>) -> Result<Option<Payload>, Error> {
        if !self.holds_le_bytes(id) {
            return Ok(None);
        }
        let entry = self.tensor(id);
        let expected = entry.numel() * entry.dtype.size().unwrap_or(0);
        if bytes.len() != expected {
            return Err(self.tensor_error(
                entry,
                format!("{} encoded bytes for {expected}", bytes.len()),
            ));
        }
        Ok(Some(Payload { id, bytes }))
    }

    /// The new values of an edited tensor, whether they were given as values
    /// or as an encoded payload (`None` when the tensor is not edited or deferred).
    pub fn edited_values(&self, edits: &Edits, id: TensorId) -> Result<Option<Vec<f64>>, Error> {
        if let Some(values) = edits.get(id) {
            return Ok(Some(values.to_vec()));
        }
        let Some(payload) = edits.payload(id) else {
            return Ok(None);
        };
        let entry = self.tensor(id);
        let decoded = match (&entry.storage, entry.dtype) {
            (Storage::Int32Data, dtype @ (DType::F16 | DType::BF16)) => {
                let bits: Vec<i32> = codec::decode_varints(payload)
                    .into_iter()
                    .map(|v| v as i32)
                    .collect();
                Some(codec::decode_half_bits(&bits, dtype))
            }
            (_, dtype) => codec::decode_le(payload, dtype),
        };
        decoded
            .map(Some)
            .ok_or_else(|| self.tensor_error(entry, "cannot decode its new payload".into()))
    }

    /// The new payload of an edited tensor: as given, or encoded now.
    fn encoded<'e>(&self, id: TensorId, edits: &'e Edits) -> Result<Cow<'e, [u8]>, Error> {
        if let Some(payload) = edits.payload(id) {
            return Ok(Cow::Borrowed(payload));
        }
        let Some(values) = edits.get(id) else {
            return Err(self.tensor_error(
                self.tensor(id),
                "deferred values are only supported for external tensors".into(),
            ));
        };
        Ok(Cow::Owned(self.encode(id, values)?.bytes))
    }

    /// Streams the model's bytes with every splice applied into `out`.
    fn spliced(
        &self,
        edits: &Edits,
        layout: Option<&DataLayout>,
        source: &dyn DeferredValues,
        out: &mut dyn Sink,
    ) -> Result<(), Error> {
        let buf = self.bytes();
        let mut splices = Vec::new();
        let mut ancestors: Vec<LenField> = Vec::new();
        for id in edits.tensors() {
            if matches!(self.tensor(id).storage, Storage::External(_)) {
                if let Some(values) = edits.get(id) {
                    self.check_values(id, values)?; // written with the data file
                } else if edits.payload(id).is_some() {
                    // checked when it was encoded
                } else if !self.tensor(id).dtype.is_float() {
                    return Err(self.tensor_error(
                        self.tensor(id),
                        "cannot rewrite a non-float tensor".into(),
                    ));
                }
                continue;
            }
            let site = &self.sites[id.0];
            splices.extend(self.payload_splices(id, edits)?);
            ancestors.extend(site.ancestors.iter().cloned());
        }
        if let Some(layout) = layout {
            for id in self.ids() {
                if let Storage::External(reference) = &self.tensor(id).storage {
                    let base = layout
                        .bases
                        .iter()
                        .find(|(l, _)| *l == reference.location)
                        .map_or(0, |(_, b)| *b);
                    let site = &self.sites[id.0];
                    let (rewrites, entries) = external_splices(
                        buf,
                        site,
                        &layout.name,
                        reference.offset + base,
                        base != 0,
                    );
                    if !rewrites.is_empty() {
                        splices.extend(rewrites);
                        ancestors.extend(entries);
                        ancestors.extend(site.ancestors.iter().cloned());
                    }
                }
            }
        }
        let mut appended = Vec::new();
        for (key, value) in &edits.metadata {
            let field = entry_field(key, value);
            match self.metadata.iter().find(|m| m.key == *key) {
                Some(site) => {
                    let value_field = string_field(index::ENTRY_VALUE, value);
                    splices.push(Splice {
                        range: site.value_field.clone(),
                        bytes: value_field.into(),
                        deferred: None,
                    });
                    ancestors.push(site.entry.clone());
                }
                None => {
                    // Appended after everything, outside every message: kept out of
                    // the splices so that a message ending at the end of the file
                    // (a graph written last) does not count it as its own.
                    wire::write_varint(u64::from(index::MODEL_METADATA << 3 | 2), &mut appended);
                    wire::write_varint(field.len() as u64, &mut appended);
                    appended.extend_from_slice(&field);
                }
            }
        }
        let splices = with_length_prefixes(splices, ancestors)
            .map_err(|reason| Error::invalid(self.path(), reason))?;
        let mut produce = |id: TensorId, out: &mut dyn Sink| {
            let mut sink = ValueSink {
                model: self,
                id,
                out,
                values: 0,
                scratch: Vec::new(),
            };
            source.write_values(id, &mut sink)?;
            sink.finish()
        };
        emit(buf, &splices, out, &mut produce, &|done| {
            self.release_bytes(done)
        })?;
        out.put(&appended)
    }

    /// Whether tensor `id`'s new values can be produced by a
    /// [`DeferredValues`] source while the save writes it: float tensors in
    /// external data, and embedded ones whose values are one length-delimited
    /// field of little-endian bytes (`raw_data`, packed f32 `float_data`,
    /// packed f64 `double_data`), whose new length is known in advance.
    pub fn can_defer(&self, id: TensorId) -> bool {
        match self.tensor(id).storage {
            Storage::External(_) => self.tensor(id).dtype.is_float(),
            _ => self.streamable_payload_field(id).is_some(),
        }
    }

    /// The single length-delimited payload field of an embedded tensor that
    /// holds little-endian bytes of its dtype.
    fn streamable_payload_field(&self, id: TensorId) -> Option<&wire::Field> {
        let entry = self.tensor(id);
        let number = match (&entry.storage, entry.dtype) {
            (Storage::Raw, dtype) if dtype.is_float() => index::TENSOR_RAW,
            (Storage::FloatData, DType::F32) => index::TENSOR_FLOAT,
            (Storage::DoubleData, DType::F64) => index::TENSOR_DOUBLE,
            _ => return None,
        };
        let mut fields = self.sites[id.0]
            .payload_fields
            .iter()
            .filter(|f| f.number == number);
        match (fields.next(), fields.next()) {
            (Some(f), None) if f.wire_type == wire::LEN && f.len_prefix.is_some() => Some(f),
            _ => None,
        }
    }

    /// Splices replacing an embedded tensor's payload field.
    fn payload_splices<'e>(
        &self,
        id: TensorId,
        edits: &'e Edits,
    ) -> Result<Vec<Splice<'e>>, Error> {
        let entry = self.tensor(id);
        let site = &self.sites[id.0];
        if edits.is_deferred(id) {
            let Some(field) = self.streamable_payload_field(id) else {
                return Err(self.tensor_error(
                    entry,
                    format!(
                        "its {} storage cannot be produced while the model is written",
                        entry.storage.name()
                    ),
                ));
            };
            let len = entry.numel() * entry.dtype.size().unwrap_or(0);
            let mut splices = Vec::new();
            if len != field.value.len() {
                let mut varint = Vec::new();
                wire::write_varint(len as u64, &mut varint);
                splices.push(Splice {
                    range: field.len_prefix.clone().unwrap_or_default(),
                    bytes: varint.into(),
                    deferred: None,
                });
            }
            splices.push(Splice {
                range: field.value.clone(),
                bytes: Cow::Borrowed(&[]),
                deferred: Some((id, len)),
            });
            return Ok(splices);
        }
        let payload = self.encoded(id, edits)?;
        let number = match entry.storage {
            Storage::Raw => index::TENSOR_RAW,
            Storage::FloatData => index::TENSOR_FLOAT,
            Storage::DoubleData => index::TENSOR_DOUBLE,
            Storage::Int32Data => index::TENSOR_INT32,
            _ => {
                return Err(self.tensor_error(
                    entry,
                    format!("cannot rewrite {} storage", entry.storage.name()),
                ));
            }
        };
        let fields: Vec<_> = site
            .payload_fields
            .iter()
            .filter(|f| f.number == number)
            .collect();
        if let [field] = fields.as_slice()
            && field.wire_type == wire::LEN
        {
            let prefix = field.len_prefix.clone().unwrap_or_default();
            let mut splices = Vec::new();
            if payload.len() != field.value.len() {
                let mut varint = Vec::new();
                wire::write_varint(payload.len() as u64, &mut varint);
                splices.push(Splice {
                    range: prefix,
                    bytes: varint.into(),
                    deferred: None,
                });
            }
            splices.push(Splice {
                range: field.value.clone(),
                bytes: payload,
                deferred: None,
            });
            return Ok(splices);
        }
        // Unpacked or split repeated fields: re-encode this one tensor message, but
        // only if doing so reproduces the original bytes exactly (nothing lost).
        let original = &self.bytes()[site.message()];
        if entry.proto.encode_to_vec() != original {
            return Err(self.tensor_error(
                entry,
                "values are stored in an unusual encoding that cannot be rewritten without changing other bytes".into(),
            ));
        }
        let mut proto = entry.proto.clone();
        let decoded = |dtype| codec::decode_le(&payload, dtype).unwrap_or_default();
        match entry.storage {
            Storage::FloatData => {
                proto.float_data = decoded(DType::F32).iter().map(|&v| v as f32).collect()
            }
            Storage::DoubleData => proto.double_data = decoded(DType::F64),
            Storage::Int32Data => {
                proto.int32_data = codec::decode_varints(&payload)
                    .into_iter()
                    .map(|v| v as i32)
                    .collect()
            }
            _ => return Err(self.tensor_error(entry, "repeated raw_data field".into())),
        }
        Ok(vec![Splice {
            range: site.message(),
            bytes: proto.encode_to_vec().into(),
            deferred: None,
        }])
    }
}

/// Splices pointing an external tensor at the new data file, and the entry
/// messages whose lengths they change.
fn external_splices(
    buf: &[u8],
    site: &index::TensorSite,
    name: &str,
    offset: u64,
    moved: bool,
) -> (Vec<Splice<'static>>, Vec<LenField>) {
    let mut splices = Vec::new();
    let mut entries = Vec::new();
    let mut has_offset = false;
    for entry in &site.external {
        let current = |range: &Range<usize>| &buf[range.clone()];
        match entry.key.as_str() {
            "location" => {
                let field = string_field(index::ENTRY_VALUE, name);
                if current(&entry.value_field) != field.as_slice() {
                    splices.push(Splice {
                        range: entry.value_field.clone(),
                        bytes: field.into(),
                        deferred: None,
                    });
                    entries.push(entry.entry.clone());
                }
            }
            "offset" => {
                has_offset = true;
                if moved {
                    let field = string_field(index::ENTRY_VALUE, &offset.to_string());
                    splices.push(Splice {
                        range: entry.value_field.clone(),
                        bytes: field.into(),
                        deferred: None,
                    });
                    entries.push(entry.entry.clone());
                }
            }
            _ => {}
        }
    }
    if moved && !has_offset {
        let entry = entry_field("offset", &offset.to_string());
        let mut bytes = Vec::new();
        wire::write_varint(u64::from(13u32 << 3 | 2), &mut bytes);
        wire::write_varint(entry.len() as u64, &mut bytes);
        bytes.extend_from_slice(&entry);
        let end = site.message().end;
        splices.push(Splice {
            range: end..end,
            bytes: bytes.into(),
            deferred: None,
        });
    }
    (splices, entries)
}

/// The data file name for output `path`: `<file>.data`, unless the model
/// being replaced at `path` refers to that name, then `<file>.1.data` (and
/// back again the next time). Renaming the data file and then the model is
/// two steps; writing the new data under a name the old model does not use
/// means a crash between them leaves the old model with its own data intact.
/// Returns the name and the old data file to remove after the new model is
/// in place.
fn default_data_name(path: &Path, file_name: &str) -> (String, Option<PathBuf>) {
    let primary = format!("{file_name}.data");
    let alternate = format!("{file_name}.1.data");
    let [uses_primary, uses_alternate] = refers_to(path, [&primary, &alternate]);
    match (uses_primary, uses_alternate) {
        (false, uses_alternate) => {
            let stale = uses_alternate.then(|| path.with_file_name(&alternate));
            (primary, stale)
        }
        (true, false) => (alternate, Some(path.with_file_name(&primary))),
        (true, true) => (primary, None),
    }
}

/// For each name, whether the file at `path` (a model about to be replaced)
/// contains it as an external-data location and the file exists beside it.
/// A byte search over one read-only map: a false positive only picks the
/// other name.
fn refers_to<const N: usize>(path: &Path, names: [&str; N]) -> [bool; N] {
    let exists = names.map(|name| path.with_file_name(name).exists());
    let Ok(file) = std::fs::File::open(path) else {
        return [false; N];
    };
    if !exists.contains(&true) || !file.metadata().is_ok_and(|m| m.is_file()) {
        return [false; N];
    }
    // SAFETY: read-only map of a file we only search; a concurrent writer
    // can at worst change the answer, which only picks the other name.
    let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return [false; N];
    };
    let mut found = [false; N];
    for (k, name) in names.iter().enumerate() {
        found[k] = exists[k] && memchr::memmem::find(&map, name.as_bytes()).is_some();
    }
    found
}

fn string_field(number: u32, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_varint(u64::from(number << 3 | 2), &mut out);
    wire::write_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value.as_bytes());
    out
}

/// A `StringStringEntryProto` body.
fn entry_field(key: &str, value: &str) -> Vec<u8> {
    let mut out = string_field(1, key);
    out.extend(string_field(2, value));
    out
}

/// Adds the length-prefix rewrites every enclosing message needs, innermost
/// first, and checks that no two splices overlap.
fn with_length_prefixes(
    mut splices: Vec<Splice>,
    mut ancestors: Vec<LenField>,
) -> Result<Vec<Splice>, String> {
    ancestors.sort_by_key(|a| (a.payload.len(), a.prefix.start));
    ancestors.dedup_by_key(|a| a.prefix.start);
    for ancestor in &ancestors {
        let inside = |s: &Splice| {
            s.range.start >= ancestor.payload.start && s.range.end <= ancestor.payload.end
        };
        let delta: isize = splices
            .iter()
            .filter(|s| inside(s))
            .map(Splice::delta)
            .sum();
        if delta != 0 {
            let new_len = ancestor.payload.len() as isize + delta;
            let new_len =
                u64::try_from(new_len).map_err(|_| "negative message length".to_string())?;
            let mut varint = Vec::new();
            wire::write_varint(new_len, &mut varint);
            splices.push(Splice {
                range: ancestor.prefix.clone(),
                bytes: varint.into(),
                deferred: None,
            });
        }
    }
    splices.sort_by_key(|s| (s.range.start, s.range.end));
    for pair in splices.windows(2) {
        if pair[0].range.end > pair[1].range.start {
            return Err(format!(
                "overlapping rewrites at bytes {:?} and {:?}",
                pair[0].range, pair[1].range
            ));
        }
    }
    Ok(splices)
}

/// Copies `range` of a mapped data file in 64 MiB pieces, telling the kernel
/// after each that we are done with those pages, so resident memory stays
/// bounded while gigabytes stream through.
fn copy_and_release(
    out: &mut PendingFile,
    map: &memmap2::Mmap,
    range: Range<usize>,
) -> Result<(), Error> {
    const PIECE: usize = 64 << 20;
    let mut start = range.start;
    while start < range.end {
        let end = (start + PIECE).min(range.end);
        out.write(&map[start..end])?;
        release(map, start..end);
        start = end;
    }
    Ok(())
}

/// Drops the pages of `range` from this process's resident set.
pub(crate) fn release(map: &memmap2::Mmap, range: Range<usize>) {
    #[cfg(unix)]
    // SAFETY: the mapping is a read-only, file-backed, shared mapping we never
    // write through; MADV_DONTNEED only drops its pages, which the kernel reads
    // back from the file if they are touched again. Failure is harmless.
    unsafe {
        let _ = map.unchecked_advise_range(
            memmap2::UncheckedAdvice::DontNeed,
            range.start,
            range.len(),
        );
    }
}

/// Where spliced bytes go: memory ([`Model::to_bytes`]) or the pending output
/// file ([`Model::save`]), which then never holds a second copy of the model.
pub(crate) trait Sink: Send {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error>;
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl Sink for PendingFile {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.write(bytes)
    }
}

/// Writes `buf` with the splices applied; `release` is told about every range
/// of `buf` that has been written (or replaced) and is not needed again.
fn emit(
    buf: &[u8],
    splices: &[Splice],
    out: &mut dyn Sink,
    produce: &mut dyn FnMut(TensorId, &mut dyn Sink) -> Result<(), Error>,
    release: &dyn Fn(&[u8]),
) -> Result<(), Error> {
    let mut pos = 0;
    for splice in splices {
        out.put(&buf[pos..splice.range.start])?;
        match splice.deferred {
            Some((id, _)) => produce(id, out)?,
            None => out.put(&splice.bytes)?,
        }
        release(&buf[pos..splice.range.end]);
        pos = splice.range.end;
    }
    out.put(&buf[pos..])?;
    release(&buf[pos..]);
    Ok(())
}

/// True when both paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(a), Ok(b)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (a.dev(), a.ino()) == (b.dev(), b.ino());
        }
    }
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Test hook: `REINIT_FAIL_AFTER_BYTES=N` makes every write fail once N bytes
/// of an output have been written, to prove that failures leave no partial file.
/// Only with the `fault-injection` feature (test builds).
#[cfg(feature = "fault-injection")]
pub(crate) mod fault {
    /// Test hook: `REINIT_ABORT_BEFORE_MODEL_COMMIT=1` kills the process
    /// between the data file's rename and the model's (the crash window of a
    /// save with external data).
    pub fn before_model_commit() {
        if std::env::var_os("REINIT_ABORT_BEFORE_MODEL_COMMIT").is_some() {
            std::process::abort();
        }
    }

    pub fn check(written: u64, len: usize) -> std::io::Result<()> {
        static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
        let limit = LIMIT.get_or_init(|| {
            std::env::var("REINIT_FAIL_AFTER_BYTES")
                .ok()
                .and_then(|v| v.parse().ok())
        });
        match limit {
            Some(limit) if written + len as u64 > *limit => Err(std::io::Error::other(
                "injected write failure (REINIT_FAIL_AFTER_BYTES)",
            )),
            _ => Ok(()),
        }
    }
}

/// Without `fault-injection` the hooks do nothing (and read no environment).
#[cfg(not(feature = "fault-injection"))]
pub(crate) mod fault {
    #[inline(always)]
    pub fn before_model_commit() {}

    #[inline(always)]
    pub fn check(_written: u64, _len: usize) -> std::io::Result<()> {
        Ok(())
    }
}
