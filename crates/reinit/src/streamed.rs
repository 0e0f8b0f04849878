//! Writing a weight in stored order without holding it as f64.
//!
//! An i.i.d. weight ([`WeightValues::Iid`]) is drawn a batch of chunks at a
//! time (chunks in parallel), so a weight whose stored layout is its canonical
//! layout (Gemm `transB=1`, Conv) goes to the data file with memory for one
//! batch. A `MatMul(X, W)` weight is stored transposed: its values are drawn in
//! canonical order (so they do not depend on where the weight is stored),
//! encoded in the tensor's dtype into a staging buffer of the tensor's own
//! size, and written column by column: memory for one stored tensor.
//! Other layouts, and the dense schemes, take the general path (f64 values,
//! then the graph's layout conversion).

use rayon::prelude::*;
use reinit_graph::{Layer, OperandLayout};
use reinit_onnx::{DType, ValueSink};
use reinit_schemes::{IidFill, WeightValues};

use crate::report::{Stats, StatsAcc};

/// Chunks per batch: 16 × 65,536 values = 8 MiB of f64.
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

/// How a weight can be streamed, if at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Stored order is canonical order (or the values are all zeros).
    Direct,
    /// Stored `(n_in, n_out)`, canonical `(n_out, n_in)`.
    Transposed { n_out: usize, n_in: usize },
}

/// The streaming route for `values` of `layer`, or `None` when the weight must
/// be converted as a whole (a dense scheme, a grouped or reshaped layout).
pub(crate) fn route(layer: &Layer, values: &WeightValues) -> Option<Route> {
    let plain = layer.layout.steps.is_empty() && layer.groups == 1 && layer.kernel.is_empty();
    match (values, layer.layout.operand) {
        (WeightValues::Dense(_), _) => None,
        (WeightValues::Zeros(_), _) => Some(Route::Direct),
        (_, OperandLayout::OutIn | OperandLayout::Conv) if layer.layout.steps.is_empty() => {
            Some(Route::Direct)
        }
        (_, OperandLayout::InOut) if plain => Some(Route::Transposed {
            n_out: layer.n_out,
            n_in: layer.n_in,
        }),
        _ => None,
    }
}

/// Writes `values` (an i.i.d. fill or zeros) along `route` into `out` and
/// returns their statistics, taken in canonical order like
/// [`Stats::of`] on the whole weight (so reports do not depend on the route).
pub(crate) fn stream(
    values: &WeightValues,
    route: Route,
    dtype: DType,
    out: &mut dyn Emit,
) -> Result<Stats, reinit_onnx::Error> {
    let len = values.len();
    let size = dtype.size().unwrap_or(0);
    let mut stats = StatsAcc::default();
    let mut produce = |start: usize, batch: &mut Batch| -> Result<(), String> {
        let n = BATCH.min(len - start);
        batch.values.resize(n, 0.0);
        batch.bytes.resize(n * size, 0);
        draw(values, start, &mut batch.values);
        stats.push(&batch.values);
        encode_parallel(dtype, &batch.values, &mut batch.bytes)
    };
    match route {
        Route::Direct => {
            // Double-buffered: the next batch is drawn (on the pool) while
            // this one is written (on the caller's thread).
            let (mut current, mut next) = (Batch::default(), Batch::default());
            if len > 0 {
                produce(0, &mut current).map_err(|r| out.error(r))?;
            }
            for start in (0..len).step_by(BATCH) {
                let following = start + BATCH;
                let (written, drawn) = rayon::join(
                    || out.encoded(&current.bytes),
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
        }
        Route::Transposed { n_out, n_in } => {
            let mut staged = vec![0u8; len * size];
            let mut batch = Batch::default();
            for start in (0..len).step_by(BATCH) {
                produce(start, &mut batch).map_err(|r| out.error(r))?;
                staged[start * size..start * size + batch.bytes.len()]
                    .copy_from_slice(&batch.bytes);
            }
            drop(batch);
            write_transposed(&staged, size, n_out, n_in, out)?;
        }
    }
    Ok(stats.finish())
}

/// One batch of draws and their encoding.
#[derive(Default)]
struct Batch {
    values: Vec<f64>,
    bytes: Vec<u8>,
}

/// Values `start .. start + buf.len()` of `values`.
fn draw(values: &WeightValues, start: usize, buf: &mut [f64]) {
    match values {
        WeightValues::Iid(fill) => fill.fill_at(start, buf),
        WeightValues::Zeros(_) => buf.fill(0.0),
        WeightValues::Dense(v) => buf.copy_from_slice(&v[start..start + buf.len()]),
    }
}

fn encode_parallel(dtype: DType, values: &[f64], out: &mut [u8]) -> Result<(), String> {
    let size = dtype.size().unwrap_or(1);
    out.par_chunks_mut(IidFill::CHUNK * size)
        .zip(values.par_chunks(IidFill::CHUNK))
        .try_for_each(|(o, v)| dtype.write_le(v, o))
}

/// Emits the `(n_out, n_in)` row-major matrix `staged` (elements of `size`
/// bytes) as its `(n_in, n_out)` transpose, a band of stored rows at a time,
/// each band built in cache-sized tiles.
fn write_transposed(
    staged: &[u8],
    size: usize,
    n_out: usize,
    n_in: usize,
    out: &mut dyn Emit,
) -> Result<(), reinit_onnx::Error> {
    // Bands of stored rows of about 4 MiB; the next band is transposed (on
    // the pool) while this one is written.
    let band_rows = ((4 << 20) / (n_out * size).max(1)).clamp(1, n_in.max(1));
    let fill = |i0: usize, band: &mut Vec<u8>| {
        let rows = band_rows.min(n_in - i0);
        band.resize(rows * n_out * size, 0);
        match size {
            2 => transpose_band::<2>(staged, band, n_out, n_in, i0),
            4 => transpose_band::<4>(staged, band, n_out, n_in, i0),
            _ => transpose_band::<8>(staged, band, n_out, n_in, i0),
        }
    };
    let (mut current, mut next) = (Vec::new(), Vec::new());
    if n_in > 0 {
        fill(0, &mut current);
    }
    for i0 in (0..n_in).step_by(band_rows) {
        let following = i0 + band_rows;
        let (written, ()) = rayon::join(
            || out.encoded(&current),
            || {
                if following < n_in {
                    fill(following, &mut next)
                }
            },
        );
        written?;
        std::mem::swap(&mut current, &mut next);
    }
    Ok(())
}

/// `band[(i − i0)·n_out + o] = staged[o·n_in + i]` for the band's rows `i`.
fn transpose_band<const S: usize>(
    staged: &[u8],
    band: &mut [u8],
    n_out: usize,
    n_in: usize,
    i0: usize,
) {
    const TILE: usize = 64;
    // Rows of the band in parallel: each writes its own slice.
    band.par_chunks_mut(TILE * n_out * S)
        .enumerate()
        .for_each(|(t, rows_out)| {
            let first = i0 + t * TILE;
            let count = rows_out.len() / (n_out * S);
            for o0 in (0..n_out).step_by(TILE) {
                for r in 0..count {
                    let i = first + r;
                    for o in o0..(o0 + TILE).min(n_out) {
                        let src = (o * n_in + i) * S;
                        let dst = (r * n_out + o) * S;
                        let v: [u8; S] = staged[src..src + S].try_into().expect("S bytes");
                        rows_out[dst..dst + S].copy_from_slice(&v);
                    }
                }
            }
        });
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
        let stats = stream(&values, Route::Direct, DType::F32, &mut got).unwrap();
        let whole = values.clone().into_vec();
        let rounded: Vec<f64> = whole.iter().map(|&v| v as f32 as f64).collect();
        assert_eq!(got.0, rounded);
        assert_eq!(stats, Stats::of(&whole));
    }

    #[test]
    fn transposed_streaming_is_the_stored_transpose() {
        for (n_out, n_in) in [(3, 5), (130, 70), (700, 1200)] {
            let values = fill(n_out * n_in);
            let mut got = Collect::default();
            let stats = stream(
                &values,
                Route::Transposed { n_out, n_in },
                DType::F32,
                &mut got,
            )
            .unwrap();
            let canonical = values.clone().into_vec();
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
            assert_eq!(stats, Stats::of(&canonical));
        }
    }
}
