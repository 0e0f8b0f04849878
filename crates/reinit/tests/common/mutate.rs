//! A deterministic, structure-aware corruptor of ONNX (protobuf) files, shared by
//! `crates/reinit/tests/mutation_cli.rs` and `crates/reinit-onnx/tests/mutation.rs`
//! (included there with `#[path]`). No dependencies: its own xorshift PRNG and a
//! tolerant wire-format scanner that finds tags, length prefixes and varints.
#![allow(dead_code)]

use std::ops::Range;

/// xorshift64*; deterministic across platforms.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len())])
    }
}

/// One field found by the scanner (absolute byte positions).
#[derive(Debug, Clone)]
pub struct FieldPos {
    pub tag: Range<usize>,
    pub wire_type: u8,
    /// LEN fields: the length varint.
    pub len_prefix: Option<Range<usize>>,
    /// The value: varint bytes, fixed bytes, or LEN payload.
    pub value: Range<usize>,
    pub depth: u8,
}

fn varint(buf: &[u8], mut pos: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(pos)?;
        pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some((v, pos));
        }
    }
    None
}

pub fn encode_varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Parses `buf[range]` as a message; on success appends its fields (and, for LEN
/// payloads that parse as messages themselves, theirs) to `out`.
fn scan_message(buf: &[u8], range: Range<usize>, depth: u8, out: &mut Vec<FieldPos>) -> bool {
    let mut fields = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let start = pos;
        let Some((key, after_tag)) = varint(buf, pos) else {
            return false;
        };
        let (number, wt) = (key >> 3, (key & 7) as u8);
        if number == 0 || after_tag > range.end {
            return false;
        }
        let (len_prefix, value) = match wt {
            0 => match varint(buf, after_tag) {
                Some((_, end)) if end <= range.end => (None, after_tag..end),
                _ => return false,
            },
            1 => (None, after_tag..after_tag + 8),
            5 => (None, after_tag..after_tag + 4),
            2 => match varint(buf, after_tag) {
                Some((len, start)) if (len as usize) <= range.end.saturating_sub(start) => {
                    (Some(after_tag..start), start..start + len as usize)
                }
                _ => return false,
            },
            _ => return false,
        };
        if value.end > range.end {
            return false;
        }
        pos = value.end;
        fields.push(FieldPos {
            tag: start..after_tag,
            wire_type: wt,
            len_prefix,
            value,
            depth,
        });
    }
    let nested: Vec<Range<usize>> = fields
        .iter()
        .filter(|f| f.wire_type == 2 && depth < 10 && f.value.len() >= 2)
        .map(|f| f.value.clone())
        .collect();
    out.extend(fields);
    for r in nested {
        let mark = out.len();
        if !scan_message(buf, r, depth + 1, out) {
            out.truncate(mark);
        }
    }
    true
}

/// Every field of a well-formed protobuf buffer, nested messages included.
pub fn scan(buf: &[u8]) -> Vec<FieldPos> {
    let mut out = Vec::new();
    scan_message(buf, 0..buf.len(), 0, &mut out);
    out
}

pub const KINDS: &[&str] = &[
    "bit_flips",
    "truncate",
    "truncate_in_field",
    "length_prefix",
    "overlong_length",
    "swap_tags",
    "retag",
    "insert_garbage",
    "duplicate_field",
    "delete_field",
    "huge_varint",
    "fill_range",
];

/// A mutated copy of `original` (kind chosen by `kind % KINDS.len()`).
pub fn mutate(original: &[u8], fields: &[FieldPos], kind: usize, rng: &mut Rng) -> Vec<u8> {
    let mut b = original.to_vec();
    let len_fields: Vec<&FieldPos> = fields.iter().filter(|f| f.len_prefix.is_some()).collect();
    let varint_fields: Vec<&FieldPos> = fields.iter().filter(|f| f.wire_type == 0).collect();
    let splice = |b: &mut Vec<u8>, r: Range<usize>, with: &[u8]| {
        b.splice(r, with.iter().copied());
    };
    match KINDS[kind % KINDS.len()] {
        "bit_flips" => {
            for _ in 0..1 + rng.below(4) {
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        "truncate" => {
            let cut = rng.below(b.len());
            b.truncate(cut);
        }
        "truncate_in_field" => {
            if let Some(f) = rng.pick(fields) {
                let cut = f.tag.start + rng.below(f.value.end - f.tag.start + 1);
                b.truncate(cut);
            }
        }
        "length_prefix" => {
            if let Some(f) = rng.pick(&len_fields) {
                let old = f.value.len() as u64;
                let new = match rng.below(9) {
                    0 => 0,
                    1 => old + 1,
                    2 => old.saturating_sub(1),
                    3 => old * 2 + 1,
                    4 => old + 1 + rng.below(1 << 20) as u64,
                    5 => u64::from(u32::MAX),
                    6 => u64::MAX,
                    7 => 1 << 62,
                    _ => (b.len() as u64).saturating_sub(f.value.start as u64) + 1,
                };
                splice(&mut b, f.len_prefix.clone().unwrap(), &encode_varint(new));
            }
        }
        "overlong_length" => {
            // Same value, non-minimal (10-byte) encoding: enclosing lengths go stale.
            if let Some(f) = rng.pick(&len_fields) {
                let v = f.value.len() as u64;
                let mut enc: Vec<u8> = (0..9)
                    .map(|i| ((v >> (7 * i)) as u8 & 0x7f) | 0x80)
                    .collect();
                enc.push((v >> 63) as u8);
                splice(&mut b, f.len_prefix.clone().unwrap(), &enc);
            }
        }
        "swap_tags" => {
            let (Some(a), Some(c)) = (rng.pick(fields), rng.pick(fields)) else {
                return b;
            };
            if a.tag.len() == c.tag.len() {
                let (ta, tc) = (
                    original[a.tag.clone()].to_vec(),
                    original[c.tag.clone()].to_vec(),
                );
                splice(&mut b, c.tag.clone(), &ta);
                splice(&mut b, a.tag.clone(), &tc);
            } else {
                let tc = original[c.tag.clone()].to_vec();
                splice(&mut b, a.tag.clone(), &tc);
            }
        }
        "retag" => {
            if let Some(f) = rng.pick(fields) {
                let range = if rng.below(4) == 0 { 2000 } else { 25 };
                let number = 1 + rng.below(range) as u64;
                let wt = [0u64, 1, 2, 5, 3, 4, 6, 7][rng.below(8)];
                splice(&mut b, f.tag.clone(), &encode_varint(number << 3 | wt));
            }
        }
        "insert_garbage" => {
            let at = match rng.pick(fields) {
                Some(f) if rng.below(2) == 0 => f.tag.start,
                _ => rng.below(b.len() + 1),
            };
            let n = 1 + rng.below(64);
            let garbage: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            splice(&mut b, at..at, &garbage);
        }
        "duplicate_field" => {
            if let Some(f) = rng.pick(fields) {
                let bytes = original[f.tag.start..f.value.end].to_vec();
                let at = f.value.end;
                splice(&mut b, at..at, &bytes);
            }
        }
        "delete_field" => {
            if let Some(f) = rng.pick(fields) {
                splice(&mut b, f.tag.start..f.value.end, &[]);
            }
        }
        "huge_varint" => {
            if let Some(f) = rng.pick(&varint_fields) {
                let v = [
                    u64::MAX,
                    1 << 62,
                    1 << 40,
                    u64::from(u32::MAX),
                    (-1i64) as u64,
                    0,
                ][rng.below(6)];
                splice(&mut b, f.value.clone(), &encode_varint(v));
            }
        }
        _ => {
            // fill_range
            let start = rng.below(b.len());
            let n = (1 + rng.below(256)).min(b.len() - start);
            let fill = [0u8, 0xff, 0x80][rng.below(3)];
            b[start..start + n].fill(fill);
        }
    }
    b
}
