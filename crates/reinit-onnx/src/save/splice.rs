//! Splices: the byte ranges of the input a save replaces — edited tensors'
//! payload fields, external-data entries pointing at the new data file, the
//! metadata we record — with the length prefixes of every enclosing message
//! rewritten, innermost first; and the writer that streams the input with
//! them applied (deferred payloads produced as it reaches them).

use std::borrow::Cow;
use std::ops::Range;

use prost::Message;

use super::Sink;
use super::data_file::DataLayout;
use super::edits::{DeferredValues, Edits, ValueSink};
use crate::codec::{self, DType, Storage};
use crate::error::Error;
use crate::index::{self, LenField};
use crate::model::{Model, TensorId};
use crate::wire;

/// One replacement of a byte range of the original: given bytes, or a
/// deferred tensor's payload of known length, produced while it is written.
#[derive(Debug, Clone)]
pub(crate) struct Splice<'a> {
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

impl Model {
    /// Streams the model's bytes with every splice applied into `out`.
    pub(crate) fn spliced(
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

fn string_field(number: u32, value: &str) -> Vec<u8> {
    let mut out = Vec::new();
    wire::write_varint(u64::from(number << 3 | 2), &mut out);
    wire::write_varint(value.len() as u64, &mut out);
    out.extend_from_slice(value.as_bytes());
    out
}

/// A `StringStringEntryProto` body.
pub(crate) fn entry_field(key: &str, value: &str) -> Vec<u8> {
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
