//! Stream v1: ChaCha8 (`rand_chacha`, pinned) words and a ziggurat normal.
//!
//! Kept bit-exact so that outputs made with v1 (every release before stream v2) stay
//! reproducible with `--stream v1`. Nothing here may change values; the golden tests in
//! `tests/determinism.rs` and `crates/reinit/tests/golden_hashes.txt` guard it.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use std::sync::OnceLock;

use super::{FILL_CHUNK, Law, unit_f64};

/// The sequential stream: ChaCha8 keyed by the tensor's key, stream id 0.
pub(super) fn sequential(key: [u8; 32]) -> ChaCha8Rng {
    ChaCha8Rng::from_seed(key)
}

/// A source of 64-bit words for the transforms below.
pub(super) trait WordSource {
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

/// Chunk `k` of fill number `fill` (its first `buf.len()` values).
pub(super) fn draw_chunk(key: [u8; 32], fill: u64, law: Law, k: u64, buf: &mut [f64]) {
    debug_assert!(buf.len() <= FILL_CHUNK);
    let rng = &mut Words::new(sub_rng(key, fill, k));
    match law {
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

/// One standard normal from the sequential stream.
pub(super) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    std_normal(rng, ziggurat())
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
