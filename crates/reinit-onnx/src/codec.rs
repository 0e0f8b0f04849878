//! Tensor element types and storage fields, and the conversions between stored
//! bytes and f64/f32 values. Writing rounds to nearest, ties to even. The
//! model-level queries (can a tensor's new values be encoded, or produced
//! while it is written, in its own storage?) are in `queries`.

use half::{bf16, f16};

use crate::external::ExternalRef;
use crate::wire;

/// ONNX element type (`TensorProto.DataType`). Only the floating types can be
/// rewritten; the integer types can be read, for shape tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    Bool,
    /// Any other `DataType` number (strings, 8-bit floats, complex, 4-bit …).
    Other(i32),
}

impl DType {
    pub fn from_onnx(code: i32) -> DType {
        match code {
            1 => DType::F32,
            2 => DType::U8,
            3 => DType::I8,
            4 => DType::U16,
            5 => DType::I16,
            6 => DType::I32,
            7 => DType::I64,
            9 => DType::Bool,
            10 => DType::F16,
            11 => DType::F64,
            12 => DType::U32,
            13 => DType::U64,
            16 => DType::BF16,
            other => DType::Other(other),
        }
    }

    pub fn onnx_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::U8 => 2,
            DType::I8 => 3,
            DType::U16 => 4,
            DType::I16 => 5,
            DType::I32 => 6,
            DType::I64 => 7,
            DType::Bool => 9,
            DType::F16 => 10,
            DType::F64 => 11,
            DType::U32 => 12,
            DType::U64 => 13,
            DType::BF16 => 16,
            DType::Other(code) => code,
        }
    }

    /// Bytes per element in `raw_data`, for the fixed-size types.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::Other(_) => return None,
        })
    }

    /// Whether reinit can rewrite tensors of this type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    pub fn name(self) -> String {
        match self {
            DType::F32 => "float32".into(),
            DType::F64 => "float64".into(),
            DType::F16 => "float16".into(),
            DType::BF16 => "bfloat16".into(),
            DType::I64 => "int64".into(),
            DType::I32 => "int32".into(),
            DType::I16 => "int16".into(),
            DType::I8 => "int8".into(),
            DType::U8 => "uint8".into(),
            DType::U16 => "uint16".into(),
            DType::U32 => "uint32".into(),
            DType::U64 => "uint64".into(),
            DType::Bool => "bool".into(),
            DType::Other(code) => format!("onnx-type-{code}"),
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

/// Which field of the `TensorProto` holds the values. Rewrites keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Raw,
    FloatData,
    DoubleData,
    /// `int32_data`: also where f16/bf16 bit patterns live in typed form.
    Int32Data,
    Int64Data,
    /// Other typed fields (`uint64_data`, `string_data`), read-only.
    OtherTyped,
    External(ExternalRef),
    /// No values at all (a zero-element tensor, or a malformed one).
    Empty,
}

impl Storage {
    pub fn name(&self) -> &'static str {
        match self {
            Storage::Raw => "raw_data",
            Storage::FloatData => "float_data",
            Storage::DoubleData => "double_data",
            Storage::Int32Data => "int32_data",
            Storage::Int64Data => "int64_data",
            Storage::OtherTyped => "typed",
            Storage::External(_) => "external",
            Storage::Empty => "empty",
        }
    }
}

/// Decodes little-endian `bytes` of `dtype` into f64 values; `None` for a
/// ragged length or an unknown type.
pub(crate) fn decode_le(bytes: &[u8], dtype: DType) -> Option<Vec<f64>> {
    let mut out = vec![0.0; bytes.len() / dtype.size()?];
    dtype.read_le(bytes, &mut out).ok().map(|()| out)
}

/// Decodes little-endian integer `bytes` exactly (no f64 detour).
pub(crate) fn decode_le_i64(bytes: &[u8], dtype: DType) -> Option<Vec<i64>> {
    let size = dtype.size()?;
    if !bytes.len().is_multiple_of(size) {
        return None;
    }
    let values = bytes.chunks_exact(size);
    Some(match dtype {
        DType::I64 | DType::U64 => values
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or_default()))
            .collect(),
        DType::I32 => values
            .map(|c| i32::from_le_bytes(c.try_into().unwrap_or_default()) as i64)
            .collect(),
        DType::U32 => values
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default()) as i64)
            .collect(),
        DType::I16 => values
            .map(|c| i16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        DType::U16 => values
            .map(|c| u16::from_le_bytes([c[0], c[1]]) as i64)
            .collect(),
        DType::I8 => values.map(|c| c[0] as i8 as i64).collect(),
        DType::U8 | DType::Bool => values.map(|c| c[0] as i64).collect(),
        _ => return None,
    })
}

/// f16/bf16 bit patterns held one per `int32_data` element.
pub(crate) fn decode_half_bits(bits: &[i32], dtype: DType) -> Vec<f64> {
    bits.iter()
        .map(|&b| match dtype {
            DType::BF16 => bf16::from_bits(b as u16).to_f64(),
            _ => f16::from_bits(b as u16).to_f64(),
        })
        .collect()
}

/// Values rounded to `dtype` (nearest, ties to even), as their bit patterns.
fn half_bits(values: &[f64], dtype: DType) -> impl Iterator<Item = u16> + '_ {
    values.iter().map(move |&v| match dtype {
        DType::BF16 => bf16::from_f64(v).to_bits(),
        _ => f16::from_f64(v).to_bits(),
    })
}

/// Encodes values as the bytes of `storage` for `dtype`: little-endian for
/// `raw_data`/external data, the packed field payload for typed fields.
pub(crate) fn encode(values: &[f64], dtype: DType, storage: &Storage) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    match (storage, dtype) {
        (Storage::Raw | Storage::External(_), _) => encode_le(values, dtype, &mut out)?,
        (Storage::FloatData, DType::F32) => encode_le(values, DType::F32, &mut out)?,
        (Storage::DoubleData, DType::F64) => encode_le(values, DType::F64, &mut out)?,
        (Storage::Int32Data, DType::F16 | DType::BF16) => {
            for bits in half_bits(values, dtype) {
                wire::write_varint(u64::from(bits), &mut out);
            }
        }
        _ => {
            return Err(format!(
                "cannot write {dtype} values into {}",
                storage.name()
            ));
        }
    }
    Ok(out)
}

/// Reads a run of varints (a packed `int32_data` payload).
pub(crate) fn decode_varints(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some((value, next)) = wire::read_varint(bytes, pos) {
        out.push(value);
        pos = next;
    }
    out
}

fn encode_le(values: &[f64], dtype: DType, out: &mut Vec<u8>) -> Result<(), String> {
    let size = dtype
        .size()
        .filter(|_| dtype.is_float())
        .ok_or_else(|| format!("cannot write {dtype} values"))?;
    let start = out.len();
    out.resize(start + values.len() * size, 0);
    dtype.write_le(values, &mut out[start..])
}

impl DType {
    /// Reads little-endian values of this dtype from `bytes`, which must hold
    /// exactly `out.len() × size` bytes, into `out` (exact for every numeric
    /// type up to 2^53).
    pub fn read_le(self, bytes: &[u8], out: &mut [f64]) -> Result<(), String> {
        let size = self
            .size()
            .ok_or_else(|| format!("cannot read {self} values"))?;
        if bytes.len() != out.len() * size {
            return Err(format!(
                "{} bytes for {} {self} values",
                bytes.len(),
                out.len()
            ));
        }
        fn each<const N: usize>(bytes: &[u8], out: &mut [f64], f: impl Fn([u8; N]) -> f64) {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(N)) {
                *o = f(c.try_into().expect("chunks_exact yields N bytes"));
            }
        }
        match self {
            DType::F32 => each(bytes, out, |b| f32::from_le_bytes(b) as f64),
            DType::F64 => each(bytes, out, f64::from_le_bytes),
            DType::F16 => each(bytes, out, |b| f16::from_le_bytes(b).to_f64()),
            DType::BF16 => each(bytes, out, |b| bf16::from_le_bytes(b).to_f64()),
            DType::I64 => each(bytes, out, |b| i64::from_le_bytes(b) as f64),
            DType::U64 => each(bytes, out, |b| u64::from_le_bytes(b) as f64),
            DType::I32 => each(bytes, out, |b| i32::from_le_bytes(b) as f64),
            DType::U32 => each(bytes, out, |b| u32::from_le_bytes(b) as f64),
            DType::I16 => each(bytes, out, |b| i16::from_le_bytes(b) as f64),
            DType::U16 => each(bytes, out, |b| u16::from_le_bytes(b) as f64),
            DType::I8 => each(bytes, out, |b: [u8; 1]| b[0] as i8 as f64),
            DType::U8 | DType::Bool => each(bytes, out, |b: [u8; 1]| b[0] as f64),
            DType::Other(_) => return Err(format!("cannot read {self} values")),
        }
        Ok(())
    }

    /// Writes `values` rounded to this float dtype (nearest, ties to even) as
    /// little-endian bytes into `out`, which must hold exactly
    /// `values.len() × size` bytes.
    pub fn write_le(self, values: &[f64], out: &mut [u8]) -> Result<(), String> {
        let size = self
            .size()
            .filter(|_| self.is_float())
            .ok_or_else(|| format!("cannot write {self} values"))?;
        if out.len() != values.len() * size {
            return Err(format!(
                "{} bytes for {} {self} values",
                out.len(),
                values.len()
            ));
        }
        match self {
            DType::F32 => {
                for (o, &v) in out.chunks_exact_mut(4).zip(values) {
                    o.copy_from_slice(&(v as f32).to_le_bytes());
                }
            }
            DType::F64 => {
                for (o, &v) in out.chunks_exact_mut(8).zip(values) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => {
                for (o, b) in out.chunks_exact_mut(2).zip(half_bits(values, self)) {
                    o.copy_from_slice(&b.to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

/// Codec queries about a model's tensors: whether and how new values can be
/// encoded into a tensor's own storage, and decoded back from an edit.
mod queries {
    use std::borrow::Cow;

    use super::{DType, Storage};
    use crate::error::Error;
    use crate::index;
    use crate::model::{Model, TensorId};
    use crate::save::{Edits, Payload};
    use crate::wire;

    impl Model {
        pub(crate) fn check_values(&self, id: TensorId, values: &[f64]) -> Result<(), Error> {
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
            let bytes = super::encode(values, entry.dtype, storage)
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
        pub fn payload_from_le(
            &self,
            id: TensorId,
            bytes: Vec<u8>,
        ) -> Result<Option<Payload>, Error> {
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
        pub fn edited_values(
            &self,
            edits: &Edits,
            id: TensorId,
        ) -> Result<Option<Vec<f64>>, Error> {
            if let Some(values) = edits.get(id) {
                return Ok(Some(values.to_vec()));
            }
            let Some(payload) = edits.payload(id) else {
                return Ok(None);
            };
            let entry = self.tensor(id);
            let decoded = match (&entry.storage, entry.dtype) {
                (Storage::Int32Data, dtype @ (DType::F16 | DType::BF16)) => {
                    let bits: Vec<i32> = super::decode_varints(payload)
                        .into_iter()
                        .map(|v| v as i32)
                        .collect();
                    Some(super::decode_half_bits(&bits, dtype))
                }
                (_, dtype) => super::decode_le(payload, dtype),
            };
            decoded
                .map(Some)
                .ok_or_else(|| self.tensor_error(entry, "cannot decode its new payload".into()))
        }

        /// The new payload of an edited tensor: as given, or encoded now.
        pub(crate) fn encoded<'e>(
            &self,
            id: TensorId,
            edits: &'e Edits,
        ) -> Result<Cow<'e, [u8]>, Error> {
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
        pub(crate) fn streamable_payload_field(&self, id: TensorId) -> Option<&wire::Field> {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_rounding_is_nearest_even() {
        // 1 + 2^-11 lies exactly halfway between f16 1.0 and 1 + 2^-10: ties to even -> 1.0
        let tie_down = 1.0 + 2f64.powi(-11);
        // 1 + 3·2^-11 lies halfway between 1 + 2^-10 and 1 + 2^-9: ties to even -> 1 + 2^-9
        let tie_up = 1.0 + 3.0 * 2f64.powi(-11);
        let bytes = encode(&[tie_down, tie_up], DType::F16, &Storage::Raw).unwrap();
        let back = decode_le(&bytes, DType::F16).unwrap();
        assert_eq!(back, vec![1.0, 1.0 + 2f64.powi(-9)]);
        // bf16 keeps 7 mantissa bits: 1 + 2^-8 is the tie between 1 and 1 + 2^-7
        let bytes = encode(
            &[1.0 + 2f64.powi(-8), 1.0 + 3.0 * 2f64.powi(-8)],
            DType::BF16,
            &Storage::Raw,
        )
        .unwrap();
        let back = decode_le(&bytes, DType::BF16).unwrap();
        assert_eq!(back, vec![1.0, 1.0 + 2f64.powi(-6)]);
    }

    #[test]
    fn int32_data_holds_half_bits_as_varints() {
        let bytes = encode(&[1.0, -2.0], DType::F16, &Storage::Int32Data).unwrap();
        let mut bits = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (v, next) = wire::read_varint(&bytes, pos).unwrap();
            bits.push(v as i32);
            pos = next;
        }
        assert_eq!(bits, vec![0x3c00, 0xc000]);
        assert_eq!(decode_half_bits(&bits, DType::F16), vec![1.0, -2.0]);
    }

    #[test]
    fn refuses_mismatched_storage() {
        assert!(encode(&[1.0], DType::F64, &Storage::FloatData).is_err());
        assert!(encode(&[1.0], DType::I64, &Storage::Raw).is_err());
    }
}
