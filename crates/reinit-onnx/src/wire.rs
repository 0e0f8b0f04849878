//! A minimal protobuf wire-format reader and varint writer.
//!
//! prost gives us typed messages but no byte positions and no unknown fields. To
//! splice new tensor payloads into the original bytes we need to know where each
//! field sits, so this module walks messages field by field, yielding absolute
//! byte ranges into the buffer. It validates every length against the bytes
//! actually present and never allocates.

use std::ops::Range;

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
const SGROUP: u8 = 3;
const EGROUP: u8 = 4;
pub(crate) const FIXED32: u8 = 5;

/// One field of a message, with absolute positions into the scanned buffer.
#[derive(Debug, Clone)]
pub(crate) struct Field {
    pub number: u32,
    pub wire_type: u8,
    /// Where the field's tag starts: `start..value.end` is the whole field.
    pub start: usize,
    /// The value bytes: a LEN field's payload, a varint's bytes, fixed bytes.
    pub value: Range<usize>,
    /// For LEN fields, the bytes of the length varint.
    pub len_prefix: Option<Range<usize>>,
}

#[cfg(test)]
impl Field {
    /// The varint value of a VARINT field.
    pub fn varint(&self, buf: &[u8]) -> Option<u64> {
        (self.wire_type == VARINT)
            .then(|| read_varint(buf, self.value.start).map(|(v, _)| v))
            .flatten()
    }
}

/// Reads a varint at `pos`; returns the value and the position after it.
pub(crate) fn read_varint(buf: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *buf.get(pos)?;
        pos += 1;
        if shift == 63 && byte > 1 {
            return None;
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((value, pos));
        }
    }
    None
}

pub(crate) fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
pub(crate) fn varint_len(value: u64) -> usize {
    let mut buf = Vec::with_capacity(10);
    write_varint(value, &mut buf);
    buf.len()
}

/// Iterates the fields of the message occupying `range` of `buf`.
pub(crate) struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    failed: bool,
}

pub(crate) fn fields(buf: &[u8], range: Range<usize>) -> Fields<'_> {
    Fields {
        buf,
        pos: range.start,
        end: range.end.min(buf.len()),
        failed: false,
    }
}

impl Iterator for Fields<'_> {
    type Item = Result<Field, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.end {
            return None;
        }
        let result = self.next_field();
        if result.is_err() {
            self.failed = true;
        }
        Some(result)
    }
}

impl Fields<'_> {
    fn next_field(&mut self) -> Result<Field, String> {
        let at = self.pos;
        let (tag, pos) = read_varint(&self.buf[..self.end], at)
            .ok_or_else(|| format!("truncated field tag at byte {at}"))?;
        let number = u32::try_from(tag >> 3).map_err(|_| format!("bad field tag at byte {at}"))?;
        let wire_type = (tag & 7) as u8;
        if number == 0 {
            return Err(format!("field number 0 at byte {at}"));
        }
        let field = match wire_type {
            VARINT => {
                let (_, end) = read_varint(&self.buf[..self.end], pos)
                    .ok_or_else(|| format!("truncated varint at byte {pos}"))?;
                self.plain(number, wire_type, at, pos..end)
            }
            FIXED64 => self.plain(number, wire_type, at, pos..pos + 8),
            FIXED32 => self.plain(number, wire_type, at, pos..pos + 4),
            LEN => {
                let (len, start) = read_varint(&self.buf[..self.end], pos)
                    .ok_or_else(|| format!("truncated length at byte {pos}"))?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|len| start.checked_add(len))
                    .filter(|&end| end <= self.end)
                    .ok_or_else(|| {
                        format!(
                            "field {number} at byte {at} declares {len} bytes, only {} remain",
                            self.end.saturating_sub(start)
                        )
                    })?;
                Field {
                    number,
                    wire_type,
                    start: at,
                    value: start..end,
                    len_prefix: Some(pos..start),
                }
            }
            SGROUP => {
                let end = self.skip_group(number, pos)?;
                self.plain(number, wire_type, at, pos..end)
            }
            _ => return Err(format!("unknown wire type {wire_type} at byte {at}")),
        };
        if field.value.end > self.end {
            return Err(format!("field {number} at byte {at} runs past the message"));
        }
        self.pos = field.value.end;
        if wire_type == SGROUP {
            // Skip the closing EGROUP tag that `skip_group` located.
            let (_, after) = read_varint(&self.buf[..self.end], self.pos)
                .ok_or_else(|| format!("truncated group end at byte {}", self.pos))?;
            self.pos = after;
        }
        Ok(field)
    }

    fn plain(&self, number: u32, wire_type: u8, start: usize, value: Range<usize>) -> Field {
        Field {
            number,
            wire_type,
            start,
            value,
            len_prefix: None,
        }
    }

    /// Returns the position of the EGROUP tag closing group `number`.
    fn skip_group(&self, number: u32, start: usize) -> Result<usize, String> {
        let mut inner = Fields {
            buf: self.buf,
            pos: start,
            end: self.end,
            failed: false,
        };
        loop {
            let at = inner.pos;
            let (tag, _) = read_varint(&self.buf[..self.end], at)
                .ok_or_else(|| format!("unterminated group {number}"))?;
            if (tag & 7) as u8 == EGROUP {
                if (tag >> 3) as u32 == number {
                    return Ok(at);
                }
                return Err(format!("mismatched group end at byte {at}"));
            }
            inner.next_field()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut b = Vec::new();
            write_varint(v, &mut b);
            assert_eq!(read_varint(&b, 0), Some((v, b.len())));
            assert_eq!(varint_len(v), b.len());
        }
        assert_eq!(read_varint(&[0x80, 0x80], 0), None);
        assert_eq!(read_varint(&[0xff; 11], 0), None);
    }

    #[test]
    fn length_past_end_is_an_error_not_a_panic() {
        // field 1, LEN, declares 100 bytes but has 2
        let buf = [0x0a, 100, 1, 2];
        let got: Vec<_> = fields(&buf, 0..buf.len()).collect();
        assert_eq!(got.len(), 1);
        assert!(got[0].is_err());
    }

    #[test]
    fn groups_are_skipped() {
        // field 2 SGROUP { field 1 varint 5 } EGROUP, then field 3 varint 7
        let buf = [0x13, 0x08, 0x05, 0x14, 0x18, 0x07];
        let got: Vec<_> = fields(&buf, 0..buf.len()).map(|f| f.unwrap()).collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].number, 3);
        assert_eq!(got[1].varint(&buf), Some(7));
    }
}
