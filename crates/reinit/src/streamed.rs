//! Writing weights into an output without holding an extra copy.
//!
//! An i.i.d. weight ([`WeightValues::Iid`], or zeros) has no structure, so
//! its values are drawn in the tensor's stored order, whatever the layout (a
//! `MatMul(X, W)` weight needs no transpose): a batch of RNG chunks at a
//! time, chunks in parallel, encoded in parallel, the next batch drawn while
//! this one is written. Memory: two encoded batches. Banded orthogonal weights
//! ([`write_orthogonal`]) and sparse ones (EOI, IDInit: [`write_sparse`]) are
//! produced piece by piece in stored order too, in canonical or plainly
//! transposed layout. The other structured schemes are built whole in
//! canonical layout; a `MatMul(X, W)` one is written as encoded transposed
//! bands ([`write_transposed`]), the others converted by the graph's layout
//! (see `session::draw`).

use rayon::prelude::*;
use reinit_onnx::{DType, ValueSink};
use reinit_schemes::{
    CastFormat, HaarBands, IidFill, OrthogonalityCheck, SparseWeight, WeightValues,
};

use crate::report::{STATS_BLOCK, Stats, StatsAcc};

/// Chunks per batch: 16 × 65,536 values (4 MiB encoded as f32).
const BATCH_CHUNKS: usize = 16;
const BATCH: usize = BATCH_CHUNKS * IidFill::CHUNK;

/// Where streamed values go: the data file, or nowhere (a dry run's statistics).
pub(crate) trait Emit: Send {
    fn values(&mut self, values: &[f64]) -> Result<(), reinit_onnx::Error>;
    fn encoded(&mut self, bytes: &[u8]) -> Result<(), reinit_onnx::Error>;
    /// An error about the tensor being written.
    fn error(&self, reason: String) -> reinit_onnx::Error;
}

impl Emit for ValueSink<'_> {
    fn values(&mut self, values: &[f64]) -> Result<(), reinit_onnx::Error> {
        self.put(values)
    }
    fn encoded(&mut self, bytes: &[u8]) -> Result<(), reinit_onnx::Error> {
        self.put_encoded(bytes)
    }
    fn error(&self, reason: String) -> reinit_onnx::Error {
        ValueSink::error(self, reason)
    }
}

/// Collects the little-endian encoding (an embedded weight's new payload).
pub(crate) struct Bytes {
    pub dtype: DType,
    pub bytes: Vec<u8>,
}

impl Emit for Bytes {
    fn values(&mut self, values: &[f64]) -> Result<(), reinit_onnx::Error> {
        let start = self.bytes.len();
        let size = self.dtype.size().unwrap_or(0);
        self.bytes.resize(start + values.len() * size, 0);
        self.dtype
            .write_le(values, &mut self.bytes[start..])
            .map_err(|reason| self.error(reason))
    }
    fn encoded(&mut self, bytes: &[u8]) -> Result<(), reinit_onnx::Error> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }
    fn error(&self, reason: String) -> reinit_onnx::Error {
        Discard.error(reason)
    }
}

/// Collects the values (before rounding to the tensor's dtype): a payload encoded
/// afterwards. Takes values only.
#[derive(Default)]
pub(crate) struct Values(pub Vec<f64>);

impl Emit for Values {
    fn values(&mut self, values: &[f64]) -> Result<(), reinit_onnx::Error> {
        self.0.extend_from_slice(values);
        Ok(())
    }
    fn encoded(&mut self, _: &[u8]) -> Result<(), reinit_onnx::Error> {
        Err(self.error("encoded bytes given where values were expected".into()))
    }
    fn error(&self, reason: String) -> reinit_onnx::Error {
        Discard.error(reason)
    }
}

/// Drops everything; for statistics only.
pub(crate) struct Discard;

impl Emit for Discard {
    fn values(&mut self, _: &[f64]) -> Result<(), reinit_onnx::Error> {
        Ok(())
    }
    fn encoded(&mut self, _: &[u8]) -> Result<(), reinit_onnx::Error> {
        Ok(())
    }
    fn error(&self, reason: String) -> reinit_onnx::Error {
        reinit_onnx::Error::Invalid {
            path: Default::default(),
            reason,
        }
    }
}

/// Whether `values` can be streamed in any layout: an i.i.d. fill or zeros.
pub(crate) fn streamable(values: &WeightValues) -> bool {
    matches!(values, WeightValues::Iid(_) | WeightValues::Zeros(_))
}

/// How a banded orthogonal or sparse weight ([`WeightValues::Orthogonal`],
/// [`WeightValues::Sparse`]) is stored, when it can be written piece by piece:
/// `Some(false)` in canonical layout, `Some(true)` as the plain transpose
/// (`MatMul(X, W)`); `None` for any other layout (made whole).
pub(crate) fn plain_layout(layer: &reinit_graph::Layer) -> Option<bool> {
    if layer.stored_is_canonical() {
        Some(false)
    } else {
        layer.stored_as_transpose().map(|_| true)
    }
}

/// The format `dtype` rounds values to, for the orthogonality check after the cast.
pub(crate) fn cast_format(dtype: DType) -> CastFormat {
    match dtype {
        DType::F16 => CastFormat::F16,
        DType::BF16 => CastFormat::Bf16,
        DType::F64 => CastFormat::F64,
        _ => CastFormat::F32,
    }
}

/// Statistics taken in blocks of [`STATS_BLOCK`] values counted from the first, whatever
/// the pieces pushed (so they equal [`Stats::of`] on the whole).
#[derive(Default)]
struct BlockedStats {
    acc: StatsAcc,
    carry: Vec<f64>,
}

impl BlockedStats {
    fn push(&mut self, values: &[f64]) {
        let mut values = values;
        if !self.carry.is_empty() {
            let take = (STATS_BLOCK - self.carry.len()).min(values.len());
            self.carry.extend_from_slice(&values[..take]);
            values = &values[take..];
            if self.carry.len() < STATS_BLOCK {
                return;
            }
            self.acc.push(&self.carry);
            self.carry.clear();
        }
        let whole = values.len() / STATS_BLOCK * STATS_BLOCK;
        self.acc.push(&values[..whole]);
        self.carry.extend_from_slice(&values[whole..]);
    }

    fn finish(mut self) -> Stats {
        self.acc.push(&self.carry);
        self.acc.finish()
    }
}

/// Writes a sparse weight (EOI, IDInit) in its stored order — canonical, or the plain
/// transpose of the canonical `(n_out, n_in)` — a batch of zeros with its entries at a
/// time, and returns the statistics of its values. Holds the entries (re-sorted for a
/// transpose) and one batch.
pub(crate) fn write_sparse(
    sparse: &SparseWeight,
    transpose_of: Option<(usize, usize)>,
    out: &mut dyn Emit,
) -> Result<Stats, reinit_onnx::Error> {
    let transposed;
    let entries = match transpose_of {
        None => &sparse.entries,
        Some((n_out, n_in)) => {
            let mut e: Vec<(usize, f64)> = sparse
                .entries
                .iter()
                .map(|&(k, v)| ((k % n_in) * n_out + k / n_in, v))
                .collect();
            e.sort_unstable_by_key(|e| e.0);
            transposed = e;
            &transposed
        }
    };
    let len = sparse.len;
    let mut stats = BlockedStats::default();
    let mut buf = vec![0.0; BATCH.min(len)];
    let mut next = 0;
    for start in (0..len).step_by(BATCH) {
        let piece = &mut buf[..BATCH.min(len - start)];
        piece.fill(0.0);
        let end = start + piece.len();
        while let Some(&(k, v)) = entries.get(next).filter(|e| e.0 < end) {
            piece[k - start] = v;
            next += 1;
        }
        stats.push(piece);
        out.values(piece)?;
    }
    Ok(stats.finish())
}

/// Past this many flops (`numel · min(rows, cols)`) a weight's orthogonality goes
/// unchecked: the check would cost as much as the QR (as for whole weights, `record.rs`).
const CHECK_FLOPS: usize = 1 << 31;
/// Short-major weights are checked only when their cast values fit in this many values
/// (the check needs every row at once, and the point of banding is not to hold them).
const CHECK_HELD: usize = 1 << 21;

/// Writes a banded orthogonal weight in its stored order (`transposed`: row-major `Mᵀ`),
/// band by band, and returns the statistics of its values and, where it is affordable,
/// its orthogonality error after the cast to `dtype` (`max |MMᵀ − I|` or `|MᵀM − I|` of
/// `M / gain`, the smaller Gram matrix).
pub(crate) fn write_orthogonal(
    bands: &HaarBands,
    transposed: bool,
    dtype: DType,
    out: &mut dyn Emit,
) -> Result<(Stats, Option<f64>), reinit_onnx::Error> {
    let short = bands.rows().min(bands.cols());
    let long_major = bands.long_major(transposed);
    let affordable = bands.len().saturating_mul(short) <= CHECK_FLOPS;
    let (format, gain) = (cast_format(dtype), bands.gain());
    let unit = move |x: f64| format.round(x) / gain;
    let mut check = (affordable && long_major).then(|| OrthogonalityCheck::new(short));
    let mut held = (affordable && !long_major && bands.len() <= CHECK_HELD).then(Vec::new);
    let mut stats = BlockedStats::default();
    bands.for_each_stored(transposed, |piece| {
        stats.push(piece);
        if let Some(check) = &mut check {
            check.add_rows(piece, unit);
        }
        if let Some(held) = &mut held {
            held.extend(piece.iter().map(|&x| unit(x)));
        }
        out.values(piece)
    })?;
    let error = match (check, held) {
        (Some(check), _) => Some(check.finish()),
        // row-major Aᵀ: `short` rows of `len / short` values
        (_, Some(held)) => Some(reinit_schemes::orthogonality_error(
            &held,
            short,
            bands.len() / short.max(1),
        )),
        _ => None,
    };
    Ok((stats.finish(), error))
}

/// Writes `values` (an i.i.d. fill or zeros), in order, into `out` and
/// returns their statistics, taken in blocks like [`Stats::of`] on the whole
/// weight (so reports do not depend on whether a weight was streamed).
pub(crate) fn stream(
    values: &WeightValues,
    dtype: DType,
    out: &mut dyn Emit,
) -> Result<Stats, reinit_onnx::Error> {
    let len = values.len();
    let mut stats = StatsAcc::default();
    let mut produce = |start: usize, bytes: &mut Vec<u8>| -> Result<(), String> {
        for block in encode_batch(values, dtype, start, BATCH.min(len - start), bytes)? {
            stats.merge(block);
        }
        Ok(())
    };
    // Double-buffered: the next batch is drawn (on the pool) while this one
    // is written.
    let (mut current, mut next) = (Vec::new(), Vec::new());
    if len > 0 {
        produce(0, &mut current).map_err(|r| out.error(r))?;
    }
    for start in (0..len).step_by(BATCH) {
        let following = start + BATCH;
        let (written, drawn) = rayon::join(
            || out.encoded(&current),
            || {
                if following < len {
                    produce(following, &mut next)
                } else {
                    Ok(())
                }
            },
        );
        written?;
        drawn.map_err(|r| out.error(r))?;
        std::mem::swap(&mut current, &mut next);
    }
    Ok(stats.finish())
}

/// Values `start .. start + n` (`start` chunk-aligned) encoded into `bytes`,
/// one RNG chunk per task: drawn into a per-thread scratch buffer, its
/// statistics block taken, encoded in place. Returns the blocks in order.
fn encode_batch(
    values: &WeightValues,
    dtype: DType,
    start: usize,
    n: usize,
    bytes: &mut Vec<u8>,
) -> Result<Vec<StatsAcc>, String> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let size = dtype.size().unwrap_or(1).max(1);
    bytes.resize(n * size, 0);
    let first = start / IidFill::CHUNK;
    bytes
        .par_chunks_mut(IidFill::CHUNK * size)
        .enumerate()
        .map(|(k, out)| {
            SCRATCH.with_borrow_mut(|scratch| {
                scratch.resize(out.len() / size, 0.0);
                draw(values, first + k, scratch);
                let block = StatsAcc::block(scratch);
                dtype.write_le(scratch, out)?;
                Ok(block)
            })
        })
        .collect()
}

/// Chunk `k` of `values` (its first `buf.len()` values).
fn draw(values: &WeightValues, k: usize, buf: &mut [f64]) {
    match values {
        WeightValues::Iid(fill) => fill.draw_chunk(k, buf),
        WeightValues::Zeros(_) => buf.fill(0.0),
        WeightValues::Dense(v) => {
            let start = k * IidFill::CHUNK;
            buf.copy_from_slice(&v[start..start + buf.len()])
        }
        WeightValues::Orthogonal(_) | WeightValues::Sparse(_) => {
            unreachable!("banded orthogonal and sparse weights have writers of their own")
        }
    }
}

/// Writes a structured weight's canonical `(n_out, n_in)` matrix as its
/// stored `(n_in, n_out)` transpose (`MatMul(X, W)`), encoded, in bands of
/// about 4 MiB: no transposed f64 copy is made. Within a band, groups of 8
/// stored rows (8 canonical columns: one cache line per canonical row) are
/// gathered in parallel.
pub(crate) fn write_transposed(
    canonical: &[f64],
    n_out: usize,
    n_in: usize,
    dtype: DType,
    out: &mut dyn Emit,
) -> Result<(), reinit_onnx::Error> {
    thread_local! {
        static ROWS: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    const GROUP: usize = 8;
    let size = dtype.size().unwrap_or(1).max(1);
    let row_bytes = n_out * size;
    let band_rows = ((4 << 20) / row_bytes.max(1)).max(GROUP) / GROUP * GROUP;
    let mut band = Vec::new();
    for i0 in (0..n_in).step_by(band_rows) {
        let rows = band_rows.min(n_in - i0);
        band.resize(rows * row_bytes, 0u8);
        band.par_chunks_mut(GROUP * row_bytes)
            .enumerate()
            .try_for_each(|(g, bytes)| {
                let first = i0 + g * GROUP;
                let count = bytes.len() / row_bytes;
                ROWS.with_borrow_mut(|scratch| {
                    scratch.resize(count * n_out, 0.0);
                    for o in 0..n_out {
                        let src = &canonical[o * n_in + first..o * n_in + first + count];
                        for (r, &v) in src.iter().enumerate() {
                            scratch[r * n_out + o] = v;
                        }
                    }
                    dtype.write_le(scratch, bytes)
                })
            })
            .map_err(|reason| out.error(reason))?;
        out.encoded(&band)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reinit_schemes::{Law, Stream};

    /// Collects what is emitted, decoding encoded bytes as f32.
    #[derive(Default)]
    struct Collect(Vec<f64>);

    impl Emit for Collect {
        fn values(&mut self, values: &[f64]) -> Result<(), reinit_onnx::Error> {
            self.0.extend(values.iter().map(|&v| v as f32 as f64));
            Ok(())
        }
        fn encoded(&mut self, bytes: &[u8]) -> Result<(), reinit_onnx::Error> {
            self.0.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64),
            );
            Ok(())
        }
        fn error(&self, reason: String) -> reinit_onnx::Error {
            Discard.error(reason)
        }
    }

    fn fill(len: usize) -> WeightValues {
        WeightValues::Iid(Stream::new(3, "w", "he").iid(Law::Normal { std: 0.5 }, len))
    }

    #[test]
    fn direct_streaming_equals_the_whole_fill() {
        let len = BATCH + 3 * IidFill::CHUNK + 11;
        let values = fill(len);
        let mut got = Collect::default();
        let stats = stream(&values, DType::F32, &mut got).unwrap();
        let whole = values.clone().into_vec();
        let rounded: Vec<f64> = whole.iter().map(|&v| v as f32 as f64).collect();
        assert_eq!(got.0, rounded);
        assert_eq!(stats, Stats::of(&whole));
    }

    #[test]
    fn transposed_writes_are_the_stored_transpose() {
        for (n_out, n_in) in [(3, 5), (130, 70), (700, 1200), (5, 9000)] {
            let canonical: Vec<f64> = (0..n_out * n_in).map(|k| k as f64 * 0.25).collect();
            let mut got = Collect::default();
            write_transposed(&canonical, n_out, n_in, DType::F32, &mut got).unwrap();
            assert_eq!(got.0.len(), canonical.len());
            for i in 0..n_in {
                for o in 0..n_out {
                    assert_eq!(
                        got.0[i * n_out + o],
                        canonical[o * n_in + i] as f32 as f64,
                        "({n_out}×{n_in}) stored ({i}, {o})"
                    );
                }
            }
        }
    }
}
