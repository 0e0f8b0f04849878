//! Portable, order-independent random streams.
//!
//! One [`Stream`] per (seed, tensor name, scheme id): the 32-byte ChaCha8 key is
//! `SHA-256("reinit-stream" ‖ version ‖ seed ‖ len ‖ name ‖ len ‖ scheme)`, so a tensor's
//! values do not depend on which tensors were drawn before it nor on the thread count.
//! The generator (`rand_chacha::ChaCha8Rng`, pinned with `=`) is a named portable one; the
//! uniform and normal (ziggurat) transforms are our own and use the pure-Rust `libm`
//! (pinned) for `exp`/`ln`, so outputs are bit-identical across platforms. Golden-value
//! tests guard both.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// Bump when the derivation or a transform changes (values change with it).
pub const STREAM_VERSION: u32 = 1;

/// Values per independent sub-stream in the bulk fills; fixed so results do not depend on
/// the thread count.
const FILL_CHUNK: usize = 1 << 16;

/// A seeded random stream for one tensor.
#[derive(Debug, Clone)]
pub struct Stream {
    key: [u8; 32],
    rng: ChaCha8Rng,
    fills: u64,
}

impl Stream {
    /// The stream of tensor `tensor_name` under scheme `scheme_id` for the user's `seed`.
    pub fn new(seed: u64, tensor_name: &str, scheme_id: &str) -> Self {
        let mut h = Sha256::new();
        h.update(b"reinit-stream");
        h.update(STREAM_VERSION.to_le_bytes());
        h.update(seed.to_le_bytes());
        h.update((tensor_name.len() as u64).to_le_bytes());
        h.update(tensor_name.as_bytes());
        h.update((scheme_id.len() as u64).to_le_bytes());
        h.update(scheme_id.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        Stream {
            key,
            rng: ChaCha8Rng::from_seed(key),
            fills: 0,
        }
    }

    /// An independent stream for a secondary draw of the same tensor (e.g. EOI's mask
    /// top-up): keyed by this stream's key and `purpose`, so its values depend only on
    /// (seed, tensor name, scheme id, purpose) — not on how much of this stream was used,
    /// and drawing from it leaves this stream's values unchanged.
    pub fn substream(&self, purpose: &str) -> Stream {
        let mut h = Sha256::new();
        h.update(b"reinit-substream");
        h.update(self.key);
        h.update((purpose.len() as u64).to_le_bytes());
        h.update(purpose.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        Stream {
            key,
            rng: ChaCha8Rng::from_seed(key),
            fills: 0,
        }
    }

    /// Next raw 64-bit word.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        unit_f64(self.rng.next_u64())
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `0..n` (`n > 0`), unbiased (Lemire's widening multiply with
    /// rejection).
    pub fn below(&mut self, n: u64) -> u64 {
        below(&mut self.rng, n)
    }

    /// Standard normal (ziggurat, see [`Stream::fill_normal`]).
    pub fn normal(&mut self) -> f64 {
        std_normal(&mut self.rng, ziggurat())
    }

    /// Fills `out` with `N(0, std²)`. Large buffers are split into fixed chunks, each from
    /// its own ChaCha stream (same key, stream id from a per-call counter and the chunk
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
/// Chunk `k` (values `k·CHUNK .. (k+1)·CHUNK`) is drawn from its own ChaCha
/// stream (the tensor's key, stream id `(fill << 32) | k`), so any range of
/// chunks can be produced alone, in any order, in parallel, and equals the
/// same range of the whole fill. This is what lets a multi-GB weight be
/// written straight to disk without ever being in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct IidFill {
    key: [u8; 32],
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
        let rng = &mut Words::new(sub_rng(self.key, self.fill, k as u64));
        match self.law {
            Law::Normal { std } => {
                let z = ziggurat();
                for x in buf {
                    *x = std_normal(rng, z) * std;
                }
            }
            Law::Uniform { lo, hi } => {
                for x in buf {
                    *x = lo + (hi - lo) * unit_f64(rng.next_word());
                }
            }
            Law::TruncatedNormal { std } => {
                let z = ziggurat();
                for x in buf {
                    *x = loop {
                        let v = std_normal(rng, z);
                        if v.abs() < 2.0 {
                            break v * std;
                        }
                    };
                }
            }
        }
    }
}

/// A source of 64-bit words for the transforms below.
trait WordSource {
    fn next_word(&mut self) -> u64;
}

impl WordSource for ChaCha8Rng {
    #[inline]
    fn next_word(&mut self) -> u64 {
        self.next_u64()
    }
}

/// A ChaCha stream read 64 words at a time: the same words, in the same
/// order, as `next_u64` (which costs ~2.5× as much per word as a bulk
/// `fill_bytes`), for the bulk fills, which consume nothing but whole words.
struct Words {
    rng: ChaCha8Rng,
    buf: [u64; 64],
    pos: usize,
}

impl Words {
    fn new(rng: ChaCha8Rng) -> Self {
        Words {
            rng,
            buf: [0; 64],
            pos: 64,
        }
    }

    #[cold]
    fn refill(&mut self) {
        let mut bytes = [0u8; 512];
        self.rng.fill_bytes(&mut bytes);
        for (w, b) in self.buf.iter_mut().zip(bytes.chunks_exact(8)) {
            *w = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        }
        self.pos = 0;
    }
}

impl WordSource for Words {
    #[inline]
    fn next_word(&mut self) -> u64 {
        if self.pos == self.buf.len() {
            self.refill();
        }
        let w = self.buf[self.pos];
        self.pos += 1;
        w
    }
}

fn sub_rng(key: [u8; 32], fill: u64, chunk: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::from_seed(key);
    // Stream 0 is the sequential stream; fills use ids (fill << 32) | chunk, fill ≥ 1.
    rng.set_stream((fill << 32) | chunk);
    rng
}

#[inline]
fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Layers of the ziggurat (Marsaglia & Tsang 2000, in Doornik's 2005 "ZIGNOR" form).
const ZIG_C: usize = 128;
const ZIG_R: f64 = 3.442_619_855_899;
const ZIG_V: f64 = 9.912_563_035_262_17e-3;

/// Ziggurat tables: layer edges `x[i]` and ratios `x[i+1]/x[i]`, built once with the
/// pure-Rust `libm` so they are identical on every platform.
struct Ziggurat {
    x: [f64; ZIG_C + 1],
    ratio: [f64; ZIG_C],
}

fn ziggurat() -> &'static Ziggurat {
    static Z: OnceLock<Ziggurat> = OnceLock::new();
    Z.get_or_init(|| {
        let mut x = [0.0; ZIG_C + 1];
        let mut f = libm::exp(-0.5 * ZIG_R * ZIG_R);
        x[0] = ZIG_V / f;
        x[1] = ZIG_R;
        x[ZIG_C] = 0.0;
        for i in 2..ZIG_C {
            x[i] = libm::sqrt(-2.0 * libm::log(ZIG_V / x[i - 1] + f));
            f = libm::exp(-0.5 * x[i] * x[i]);
        }
        let mut ratio = [0.0; ZIG_C];
        for i in 0..ZIG_C {
            ratio[i] = x[i + 1] / x[i];
        }
        Ziggurat { x, ratio }
    })
}

/// One standard normal by the ziggurat: one 64-bit word per draw on the fast path (~99%):
/// the layer from its low 7 bits, a signed uniform from its top 53 bits. The fast path is
/// inlined into the fill loops; the rest is out of line (it is rare, and its register
/// pressure would otherwise cost every draw a stack frame).
#[inline(always)]
fn std_normal(rng: &mut impl WordSource, z: &Ziggurat) -> f64 {
    let bits = rng.next_word();
    let i = (bits & 0x7f) as usize;
    let u = 2.0 * unit_f64(bits) - 1.0;
    if u.abs() < z.ratio[i] {
        return u * z.x[i];
    }
    std_normal_slow(rng, z, i, u)
}

/// The ziggurat's base/tail and wedge cases for layer `i` and signed uniform `u`, then
/// fresh draws until one is accepted.
#[cold]
#[inline(never)]
fn std_normal_slow(rng: &mut impl WordSource, z: &Ziggurat, mut i: usize, mut u: f64) -> f64 {
    loop {
        if i == 0 {
            // tail beyond R (Marsaglia 1964)
            loop {
                let a = libm::log(1.0 - unit_f64(rng.next_word())) / ZIG_R;
                let b = libm::log(1.0 - unit_f64(rng.next_word()));
                if -2.0 * b >= a * a {
                    return if u < 0.0 { a - ZIG_R } else { ZIG_R - a };
                }
            }
        }
        let x = u * z.x[i];
        let f0 = libm::exp(-0.5 * (z.x[i] * z.x[i] - x * x));
        let f1 = libm::exp(-0.5 * (z.x[i + 1] * z.x[i + 1] - x * x));
        if f1 + unit_f64(rng.next_word()) * (f0 - f1) < 1.0 {
            return x;
        }
        let bits = rng.next_word();
        i = (bits & 0x7f) as usize;
        u = 2.0 * unit_f64(bits) - 1.0;
        if u.abs() < z.ratio[i] {
            return u * z.x[i];
        }
    }
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    let threshold = n.wrapping_neg() % n;
    loop {
        let m = (rng.next_u64() as u128) * (n as u128);
        if (m as u64) >= threshold {
            return (m >> 64) as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_of_order_and_named() {
        let mut a = Stream::new(7, "conv1.weight", "he");
        let mut b = Stream::new(7, "conv1.weight", "he");
        let mut c = Stream::new(7, "conv2.weight", "he");
        let mut d = Stream::new(7, "conv1.weight", "xavier");
        let mut e = Stream::new(8, "conv1.weight", "he");
        let x = a.next_u64();
        assert_eq!(x, b.next_u64());
        assert_ne!(x, c.next_u64());
        assert_ne!(x, d.next_u64());
        assert_ne!(x, e.next_u64());
        // name/scheme boundaries are length-prefixed: ("ab","c") ≠ ("a","bc")
        assert_ne!(
            Stream::new(1, "ab", "c").next_u64(),
            Stream::new(1, "a", "bc").next_u64()
        );
    }

    #[test]
    fn uniform_and_below_are_in_range() {
        let mut s = Stream::new(1, "t", "s");
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

    #[test]
    fn normal_moments() {
        let mut s = Stream::new(3, "t", "s");
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

    #[test]
    fn normal_cdf_matches_including_the_tail() {
        // Empirical CDF at fixed points vs Φ (5σ binomial tolerance), over 2M draws; the
        // points beyond R = 3.4426 exercise the ziggurat's tail branch.
        let n = 2_000_000;
        let mut buf = vec![0.0; n];
        Stream::new(17, "cdf", "test").fill_normal(&mut buf, 1.0);
        let phi = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        for t in [-4.0, -3.5, -2.0, -1.0, -0.3, 0.0, 0.5, 1.5, 2.5, 3.5, 4.0] {
            let p = phi(t);
            let got = buf.iter().filter(|&&x| x < t).count() as f64 / n as f64;
            let tol = 5.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-7;
            assert!((got - p).abs() < tol, "P(z < {t}) = {got}, want {p}");
        }
    }

    #[test]
    fn truncated_normal_stays_within_two_sigma() {
        let mut s = Stream::new(3, "t", "s");
        let mut buf = vec![0.0; 100_001];
        s.fill_truncated_normal(&mut buf, 0.5);
        assert!(buf.iter().all(|x| x.abs() < 1.0));
        let var = buf.iter().map(|x| x * x).sum::<f64>() / buf.len() as f64;
        // std of a unit normal truncated to (−2, 2) is 0.87962566103423978
        assert!((var.sqrt() / 0.5 - 0.879_625_661_034_239_8).abs() < 0.01);
    }

    #[test]
    fn any_chunk_range_of_a_fill_equals_the_whole_fill() {
        let len = 3 * FILL_CHUNK + 123;
        for law in [
            Law::Normal { std: 0.3 },
            Law::Uniform { lo: -2.0, hi: 1.0 },
            Law::TruncatedNormal { std: 1.5 },
        ] {
            let mut s = Stream::new(5, "w", "he");
            let _ = s.next_u64(); // the sequential stream does not move fills
            let whole = {
                let mut t = Stream::new(5, "w", "he");
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

    #[test]
    #[should_panic(expected = "not chunk-aligned")]
    fn unaligned_fill_ranges_are_refused() {
        let fill = Stream::new(1, "w", "he").iid(Law::Normal { std: 1.0 }, 2 * FILL_CHUNK);
        fill.fill_at(7, &mut [0.0; 4]);
    }

    #[test]
    fn fills_do_not_depend_on_thread_count() {
        let run = || {
            let mut s = Stream::new(11, "w", "he");
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
