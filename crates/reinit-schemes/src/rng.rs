//! Portable, order-independent random streams.
//!
//! One [`Stream`] per (seed, tensor name, scheme id): its 32-byte key is
//! `SHA-256("reinit-stream" ‖ version ‖ seed ‖ len ‖ name ‖ len ‖ scheme)`, so a tensor's
//! values do not depend on which tensors were drawn before it nor on the thread count.
//! Two generators, selected by [`StreamVersion`] and both kept bit-exact:
//!
//! * **v2** (`rng/philox.rs`): Philox4x32-10, counter-based, with an f32 Box–Muller made of
//!   IEEE `+ − × √` only — vectorised (hand-written AVX2 kernels in
//!   `rng/philox_avx2.rs`, `rng/box_muller_avx2.rs`), ~5× faster than v1, and reproducible
//!   bit for bit in numpy (`docs/stream.md` is the specification).
//! * **v1** (`rng/chacha.rs`): ChaCha8 (`rand_chacha`, pinned) and a ziggurat using the
//!   pure-Rust `libm` (pinned); what every release before v2 drew.
//!
//! Golden-value tests (`tests/determinism.rs`) guard both.

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

#[cfg(target_arch = "x86_64")]
mod box_muller_avx2;
mod chacha;
mod philox;
#[cfg(target_arch = "x86_64")]
mod philox_avx2;

pub use philox::{box_muller, philox4x32_10};

/// The newest stream version (what [`StreamVersion::default`] is).
pub const STREAM_VERSION: u32 = 2;

/// Which generator and transforms a [`Stream`] uses. Values differ between versions;
/// within one version they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StreamVersion {
    /// ChaCha8 + ziggurat (releases before stream v2; `--stream v1`).
    V1,
    /// Philox4x32-10 + f32 Box–Muller (the default).
    #[default]
    V2,
}

impl StreamVersion {
    /// The version's number (hashed into every key, recorded in the output's metadata).
    pub fn number(self) -> u32 {
        match self {
            StreamVersion::V1 => 1,
            StreamVersion::V2 => 2,
        }
    }

    /// Every version, oldest first.
    pub const ALL: [StreamVersion; 2] = [StreamVersion::V1, StreamVersion::V2];
}

impl std::fmt::Display for StreamVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.number())
    }
}

impl std::str::FromStr for StreamVersion {
    type Err = String;

    /// `v1`, `v2` (or `1`, `2`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().trim_start_matches(['v', 'V']) {
            "1" => Ok(StreamVersion::V1),
            "2" => Ok(StreamVersion::V2),
            _ => Err(format!("unknown stream version '{s}' (known: v1, v2)")),
        }
    }
}

/// Values per independent sub-stream in the bulk fills; fixed so results do not depend on
/// the thread count.
const FILL_CHUNK: usize = 1 << 16;

/// The sequential generator of a stream.
#[derive(Debug, Clone)]
enum Sequential {
    V1(Box<ChaCha8Rng>),
    V2(philox::Sequential),
}

/// A seeded random stream for one tensor.
#[derive(Debug, Clone)]
pub struct Stream {
    key: [u8; 32],
    version: StreamVersion,
    seq: Sequential,
    fills: u64,
}

impl Stream {
    /// The stream of tensor `tensor_name` under scheme `scheme_id` for the user's `seed`,
    /// in the default [`StreamVersion`].
    pub fn new(seed: u64, tensor_name: &str, scheme_id: &str) -> Self {
        Self::versioned(StreamVersion::default(), seed, tensor_name, scheme_id)
    }

    /// [`Stream::new`] in a given version.
    pub fn versioned(
        version: StreamVersion,
        seed: u64,
        tensor_name: &str,
        scheme_id: &str,
    ) -> Self {
        let mut h = Sha256::new();
        h.update(b"reinit-stream");
        h.update(version.number().to_le_bytes());
        h.update(seed.to_le_bytes());
        h.update((tensor_name.len() as u64).to_le_bytes());
        h.update(tensor_name.as_bytes());
        h.update((scheme_id.len() as u64).to_le_bytes());
        h.update(scheme_id.as_bytes());
        Self::from_key(version, h.finalize().into())
    }

    fn from_key(version: StreamVersion, key: [u8; 32]) -> Self {
        let seq = match version {
            StreamVersion::V1 => Sequential::V1(Box::new(chacha::sequential(key))),
            StreamVersion::V2 => Sequential::V2(philox::Sequential::new(
                philox::PhiloxKey::from_digest(&key),
            )),
        };
        Stream {
            key,
            version,
            seq,
            fills: 0,
        }
    }

    /// The stream's version.
    pub fn version(&self) -> StreamVersion {
        self.version
    }

    /// An independent stream for a secondary draw of the same tensor (e.g. EOI's mask
    /// top-up): keyed by this stream's key and `purpose`, so its values depend only on
    /// (seed, tensor name, scheme id, purpose) — not on how much of this stream was used,
    /// and drawing from it leaves this stream's values unchanged. Same version.
    pub fn substream(&self, purpose: &str) -> Stream {
        let mut h = Sha256::new();
        h.update(b"reinit-substream");
        h.update(self.key);
        h.update((purpose.len() as u64).to_le_bytes());
        h.update(purpose.as_bytes());
        Self::from_key(self.version, h.finalize().into())
    }

    /// Next raw 64-bit word (v2: two 32-bit words, the first one low).
    pub fn next_u64(&mut self) -> u64 {
        match &mut self.seq {
            Sequential::V1(rng) => chacha::WordSource::next_word(rng.as_mut()),
            Sequential::V2(p) => p.next_u64(),
        }
    }

    /// Uniform in `[0, 1)` with 53 random bits (the top 53 of [`Stream::next_u64`]).
    pub fn uniform(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`), unbiased (Lemire's widening multiply with
    /// rejection on [`Stream::next_u64`]).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Standard normal (v1: ziggurat; v2: Box–Muller's cosine of the next two words).
    pub fn normal(&mut self) -> f64 {
        match &mut self.seq {
            Sequential::V1(rng) => chacha::normal(rng.as_mut()),
            Sequential::V2(p) => p.normal(),
        }
    }

    /// Fills `out` with `N(0, std²)`. Large buffers are split into fixed chunks, each from
    /// its own sub-stream (same key, addressed by a per-call counter and the chunk
    /// index), drawn in parallel; the result does not depend on the thread count.
    pub fn fill_normal(&mut self, out: &mut [f64], std: f64) {
        self.iid(Law::Normal { std }, out.len()).fill_at(0, out);
    }

    /// Fills `out` with `U[lo, hi)`, chunked like [`Stream::fill_normal`].
    pub fn fill_uniform(&mut self, out: &mut [f64], lo: f64, hi: f64) {
        self.iid(Law::Uniform { lo, hi }, out.len()).fill_at(0, out);
    }

    /// Fills `out` with a normal truncated to `(−2σ, 2σ)` by rejection (Keras
    /// `truncated_normal`), chunked like [`Stream::fill_normal`].
    pub fn fill_truncated_normal(&mut self, out: &mut [f64], std: f64) {
        self.iid(Law::TruncatedNormal { std }, out.len())
            .fill_at(0, out);
    }

    /// Reserves the next bulk fill of `len` draws from `law` without drawing
    /// it: the returned [`IidFill`] produces any range of it later, equal to
    /// what the corresponding `fill_*` call would have written.
    pub fn iid(&mut self, law: Law, len: usize) -> IidFill {
        self.fills += 1;
        IidFill {
            key: self.key,
            version: self.version,
            fill: self.fills,
            law,
            len,
        }
    }
}

/// The law of i.i.d. draws.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Law {
    /// `N(0, std²)`.
    Normal { std: f64 },
    /// `U[lo, hi)`.
    Uniform { lo: f64, hi: f64 },
    /// `N(0, std²)` truncated to `(−2σ, 2σ)` by rejection.
    TruncatedNormal { std: f64 },
}

/// One bulk fill of a [`Stream`], addressable chunk by chunk.
///
/// Chunk `k` (values `k·CHUNK .. (k+1)·CHUNK`) is drawn from its own sub-stream
/// (v1: the tensor's ChaCha key, stream id `(fill << 32) | k`; v2: Philox
/// counters `(block, k, fill, tag)`), so any range of chunks can be produced
/// alone, in any order, in parallel, and equals the same range of the whole
/// fill. This is what lets a multi-GB weight be written straight to disk
/// without ever being in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct IidFill {
    key: [u8; 32],
    version: StreamVersion,
    fill: u64,
    law: Law,
    len: usize,
}

impl IidFill {
    /// Values per independent chunk; fixed so results do not depend on the
    /// thread count nor on how a caller splits the fill.
    pub const CHUNK: usize = FILL_CHUNK;

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn law(&self) -> Law {
        self.law
    }

    /// Writes values `start .. start + out.len()` of the fill into `out`,
    /// chunks in parallel. `start` must be a multiple of [`IidFill::CHUNK`].
    pub fn fill_at(&self, start: usize, out: &mut [f64]) {
        assert!(
            start.is_multiple_of(FILL_CHUNK) && start + out.len() <= self.len,
            "fill range {start}+{} outside 0..{} or not chunk-aligned",
            out.len(),
            self.len
        );
        let first = start / FILL_CHUNK;
        out.par_chunks_mut(FILL_CHUNK)
            .enumerate()
            .for_each(|(k, buf)| self.draw_chunk(first + k, buf));
    }

    /// Writes values `start .. start + out.len()` of the fill into `out`, any `start`, on
    /// this thread: equal to the same range of [`IidFill::to_vec`]. Stream v2's normal and
    /// uniform laws start drawing at the 32-value group that holds `start`; otherwise the
    /// chunk's values before `start` are drawn and dropped.
    pub fn fill_range(&self, start: usize, out: &mut [f64]) {
        assert!(
            start + out.len() <= self.len,
            "fill range {start}+{} outside 0..{}",
            out.len(),
            self.len
        );
        let addressable =
            self.version == StreamVersion::V2 && !matches!(self.law, Law::TruncatedNormal { .. });
        let group = philox::GROUP_VALUES;
        let (mut pos, mut done) = (start, 0);
        while done < out.len() {
            let (k, offset) = (pos / FILL_CHUNK, pos % FILL_CHUNK);
            let n = (FILL_CHUNK - offset).min(out.len() - done);
            let dst = &mut out[done..done + n];
            if addressable {
                let key = philox::PhiloxKey::from_digest(&self.key);
                let (skip, lead) = (offset / group, offset % group);
                let mut body = 0;
                if lead > 0 {
                    let mut head = [0.0; philox::GROUP_VALUES];
                    let h = (group - lead).min(n);
                    philox::draw_chunk_from(
                        key,
                        self.fill,
                        self.law,
                        k as u64,
                        skip,
                        &mut head[..lead + h],
                    );
                    dst[..h].copy_from_slice(&head[lead..lead + h]);
                    body = h;
                }
                if body < n {
                    let first = skip + usize::from(lead > 0);
                    philox::draw_chunk_from(
                        key,
                        self.fill,
                        self.law,
                        k as u64,
                        first,
                        &mut dst[body..],
                    );
                }
            } else {
                let mut prefix = vec![0.0; offset + n];
                self.draw_chunk(k, &mut prefix);
                dst.copy_from_slice(&prefix[offset..]);
            }
            pos += n;
            done += n;
        }
    }

    /// The whole fill.
    pub fn to_vec(&self) -> Vec<f64> {
        let mut out = vec![0.0; self.len];
        self.fill_at(0, &mut out);
        out
    }

    /// The first `buf.len()` (≤ [`IidFill::CHUNK`]) values of chunk `k`, i.e.
    /// values `k·CHUNK ..` of the fill, drawn on this thread.
    pub fn draw_chunk(&self, k: usize, buf: &mut [f64]) {
        debug_assert!(buf.len() <= FILL_CHUNK);
        match self.version {
            StreamVersion::V1 => chacha::draw_chunk(self.key, self.fill, self.law, k as u64, buf),
            StreamVersion::V2 => philox::draw_chunk(
                philox::PhiloxKey::from_digest(&self.key),
                self.fill,
                self.law,
                k as u64,
                buf,
            ),
        }
    }
}

#[inline]
fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_of_order_and_named() {
        for v in StreamVersion::ALL {
            let mut a = Stream::versioned(v, 7, "conv1.weight", "he");
            let mut b = Stream::versioned(v, 7, "conv1.weight", "he");
            let mut c = Stream::versioned(v, 7, "conv2.weight", "he");
            let mut d = Stream::versioned(v, 7, "conv1.weight", "xavier");
            let mut e = Stream::versioned(v, 8, "conv1.weight", "he");
            let x = a.next_u64();
            assert_eq!(x, b.next_u64());
            assert_ne!(x, c.next_u64());
            assert_ne!(x, d.next_u64());
            assert_ne!(x, e.next_u64());
            // name/scheme boundaries are length-prefixed: ("ab","c") ≠ ("a","bc")
            assert_ne!(
                Stream::versioned(v, 1, "ab", "c").next_u64(),
                Stream::versioned(v, 1, "a", "bc").next_u64()
            );
        }
    }

    #[test]
    fn uniform_and_below_are_in_range() {
        for v in StreamVersion::ALL {
            let mut s = Stream::versioned(v, 1, "t", "s");
            for _ in 0..10_000 {
                let u = s.uniform();
                assert!((0.0..1.0).contains(&u));
                assert!(s.below(7) < 7);
            }
            let mut counts = [0usize; 3];
            for _ in 0..30_000 {
                counts[s.below(3) as usize] += 1;
            }
            for c in counts {
                assert!((c as f64 - 10_000.0).abs() < 500.0, "{counts:?}");
            }
        }
    }

    #[test]
    fn normal_moments() {
        for v in StreamVersion::ALL {
            let mut s = Stream::versioned(v, 3, "t", "s");
            let n = 200_000;
            let mut buf = vec![0.0; n];
            s.fill_normal(&mut buf, 2.0);
            let mean = buf.iter().sum::<f64>() / n as f64;
            let var = buf.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            let kurt = buf.iter().map(|x| ((x - mean) / 2.0).powi(4)).sum::<f64>() / n as f64;
            assert!(mean.abs() < 5.0 * 2.0 / (n as f64).sqrt(), "mean {mean}");
            assert!(
                (var / 4.0 - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(),
                "var {var}"
            );
            assert!((kurt - 3.0).abs() < 0.1, "kurtosis {kurt}");
            let seq: Vec<f64> = (0..n).map(|_| s.normal()).collect();
            let m2 = seq.iter().map(|x| x * x).sum::<f64>() / n as f64;
            assert!((m2 - 1.0).abs() < 0.02);
        }
    }

    #[test]
    fn normal_cdf_matches_including_the_tail() {
        for v in StreamVersion::ALL {
            // Empirical CDF at fixed points vs Φ (5σ binomial tolerance), over 2M draws; the
            // points beyond R = 3.4426 exercise the ziggurat's tail branch.
            let n = 2_000_000;
            let mut buf = vec![0.0; n];
            Stream::versioned(v, 17, "cdf", "test").fill_normal(&mut buf, 1.0);
            let phi = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
            for t in [-4.0, -3.5, -2.0, -1.0, -0.3, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0] {
                let p = phi(t);
                let got = buf.iter().filter(|&&x| x < t).count() as f64 / n as f64;
                let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-7;
                assert!((got - p).abs() < tol, "P(z < {t}) = {got}, want {p}");
            }
        }
    }

    #[test]
    fn truncated_normal_stays_within_two_sigma() {
        for v in StreamVersion::ALL {
            let mut s = Stream::versioned(v, 3, "t", "s");
            let mut buf = vec![0.0; 100_001];
            s.fill_truncated_normal(&mut buf, 0.5);
            assert!(buf.iter().all(|x| x.abs() < 1.0));
            let var = buf.iter().map(|x| x * x).sum::<f64>() / buf.len() as f64;
            // std of a unit normal truncated to (−2, 2) is 0.87962566103423978
            assert!((var.sqrt() / 0.5 - 0.879_625_661_034_239_8).abs() < 0.01);
        }
    }

    #[test]
    fn any_chunk_range_of_a_fill_equals_the_whole_fill() {
        for v in StreamVersion::ALL {
            let len = 3 * FILL_CHUNK + 123;
            for law in [
                Law::Normal { std: 0.3 },
                Law::Uniform { lo: -2.0, hi: 1.0 },
                Law::TruncatedNormal { std: 1.5 },
            ] {
                let mut s = Stream::versioned(v, 5, "w", "he");
                let _ = s.next_u64(); // the sequential stream does not move fills
                let whole = {
                    let mut t = Stream::versioned(v, 5, "w", "he");
                    let mut v = vec![0.0; len];
                    match law {
                        Law::Normal { std } => t.fill_normal(&mut v, std),
                        Law::Uniform { lo, hi } => t.fill_uniform(&mut v, lo, hi),
                        Law::TruncatedNormal { std } => t.fill_truncated_normal(&mut v, std),
                    }
                    v
                };
                let fill = s.iid(law, len);
                assert_eq!(fill.to_vec(), whole);
                // the last chunk alone, then chunks 1..2 alone, and a short prefix of chunk 2
                let mut tail = vec![0.0; 123];
                fill.fill_at(3 * FILL_CHUNK, &mut tail);
                assert_eq!(tail, whole[3 * FILL_CHUNK..]);
                let mut mid = vec![0.0; FILL_CHUNK + 10];
                fill.fill_at(FILL_CHUNK, &mut mid);
                assert_eq!(mid, whole[FILL_CHUNK..2 * FILL_CHUNK + 10]);
                // a second reserved fill is a different draw
                assert_ne!(s.iid(law, len).to_vec(), whole);
            }
        }
    }

    #[test]
    #[should_panic(expected = "not chunk-aligned")]
    fn unaligned_fill_ranges_are_refused() {
        for v in StreamVersion::ALL {
            let fill =
                Stream::versioned(v, 1, "w", "he").iid(Law::Normal { std: 1.0 }, 2 * FILL_CHUNK);
            fill.fill_at(7, &mut [0.0; 4]);
        }
    }

    #[test]
    fn fills_do_not_depend_on_thread_count() {
        for v in StreamVersion::ALL {
            let run = || {
                let mut s = Stream::versioned(v, 11, "w", "he");
                let mut a = vec![0.0; 3 * FILL_CHUNK + 17];
                s.fill_normal(&mut a, 1.0);
                let mut b = vec![0.0; FILL_CHUNK + 1];
                s.fill_uniform(&mut b, -1.0, 1.0);
                (a, b)
            };
            let one = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
                .install(run);
            let many = rayon::ThreadPoolBuilder::new()
                .num_threads(3)
                .build()
                .unwrap()
                .install(run);
            assert_eq!(one, many);
        }
    }
}
