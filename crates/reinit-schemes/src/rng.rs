//! Portable, order-independent random streams.
//!
//! One [`Stream`] per (seed, tensor name, scheme id): the 32-byte ChaCha8 key is
//! `SHA-256("reinit-stream" ‖ version ‖ seed ‖ len ‖ name ‖ len ‖ scheme)`, so a tensor's
//! values do not depend on which tensors were drawn before it nor on the thread count.
//! The generator (`rand_chacha::ChaCha8Rng`, pinned with `=`) is a named portable one; the
//! uniform and normal transforms are our own and use the pure-Rust `libm` (pinned) for `ln`,
//! so outputs are bit-identical across platforms. Golden-value tests guard both.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

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
    spare_normal: Option<f64>,
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
            spare_normal: None,
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

    /// Standard normal by the Marsaglia polar method (pairs; the second value is kept).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        let (a, b) = polar_pair(&mut self.rng);
        self.spare_normal = Some(b);
        a
    }

    /// Fills `out` with `N(0, std²)`. Large buffers are split into fixed chunks, each from
    /// its own ChaCha stream (same key, stream id from a per-call counter and the chunk
    /// index), drawn in parallel; the result does not depend on the thread count.
    pub fn fill_normal(&mut self, out: &mut [f64], std: f64) {
        let fill = self.next_fill();
        let key = self.key;
        out.par_chunks_mut(FILL_CHUNK)
            .enumerate()
            .for_each(|(chunk, buf)| {
                let mut rng = sub_rng(key, fill, chunk as u64);
                let mut it = buf.chunks_exact_mut(2);
                for pair in &mut it {
                    let (a, b) = polar_pair(&mut rng);
                    pair[0] = a * std;
                    pair[1] = b * std;
                }
                if let [last] = it.into_remainder() {
                    *last = polar_pair(&mut rng).0 * std;
                }
            });
    }

    /// Fills `out` with `U[lo, hi)`, chunked like [`Stream::fill_normal`].
    pub fn fill_uniform(&mut self, out: &mut [f64], lo: f64, hi: f64) {
        let fill = self.next_fill();
        let key = self.key;
        out.par_chunks_mut(FILL_CHUNK)
            .enumerate()
            .for_each(|(chunk, buf)| {
                let mut rng = sub_rng(key, fill, chunk as u64);
                for x in buf {
                    *x = lo + (hi - lo) * unit_f64(rng.next_u64());
                }
            });
    }

    /// Fills `out` with a normal truncated to `(−2σ, 2σ)` by rejection (Keras
    /// `truncated_normal`), chunked like [`Stream::fill_normal`].
    pub fn fill_truncated_normal(&mut self, out: &mut [f64], std: f64) {
        let fill = self.next_fill();
        let key = self.key;
        out.par_chunks_mut(FILL_CHUNK)
            .enumerate()
            .for_each(|(chunk, buf)| {
                let mut rng = sub_rng(key, fill, chunk as u64);
                let mut i = 0;
                while i < buf.len() {
                    let (a, b) = polar_pair(&mut rng);
                    for z in [a, b] {
                        if i < buf.len() && z.abs() < 2.0 {
                            buf[i] = z * std;
                            i += 1;
                        }
                    }
                }
            });
    }

    fn next_fill(&mut self) -> u64 {
        self.fills += 1;
        self.fills
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

#[inline]
fn polar_pair(rng: &mut ChaCha8Rng) -> (f64, f64) {
    loop {
        let u = 2.0 * unit_f64(rng.next_u64()) - 1.0;
        let v = 2.0 * unit_f64(rng.next_u64()) - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            let f = (-2.0 * libm::log(s) / s).sqrt();
            return (u * f, v * f);
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
