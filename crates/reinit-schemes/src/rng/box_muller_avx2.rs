//! Stream v2's f32 Box–Muller (`philox::box_muller`, `docs/stream.md`) on four vectors
//! of 8 lanes at once, for the AVX2 bulk fills in `philox_avx2.rs`.
//!
//! Every floating-point step is the specified IEEE operation in the specified order.
//! The arithmetic goes through small `asm!` blocks that apply one instruction to all
//! four vectors (`vmulps`, `vaddps`, `vsubps`, `vsqrtps`): the transform is a few long
//! dependency chains (the logarithm's 8-step Horner polynomial alone is 16 dependent
//! operations), and LLVM's scheduler orders intrinsics chain after chain, so the CPU's
//! scheduler fills with one chain's waiting operations and the others' do not get in.
//! In one block the four chains advance together: with the same intrinsics otherwise,
//! the Horner steps alone in `asm!` took a normal from 2.2 to 1.8 ns of CPU time
//! (`examples/fill_cputime.rs`, 16K values, load 6), every operation 1.7 ns. The blocks
//! are also what guarantees that a product and a sum are never fused.
#![allow(unused_unsafe)] // rust-version 1.85 needs `unsafe` around intrinsics even in avx2 fns

use core::arch::asm;
use core::arch::x86_64::*;

use super::philox::{ANGLE_STEP, COS_P, LN2_HI, LN2_LO, LOG_P, SIN_P, SQRT_HALF, TWO_POW_M31};

/// Four vectors of 8 f32 lanes, one per independent chain.
type F4 = [__m256; 4];

/// `$name(a, b)`: `a[j] OP b[j]`; `$name_c(a, c)`: `a[j] OP c` (for the f32 `c` in
/// every lane) — one instruction per vector, in one `asm!` block.
macro_rules! lanewise {
    ($name:ident, $name_c:ident, $ins:literal) => {
        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn $name(a: F4, b: F4) -> F4 {
            let [mut a0, mut a1, mut a2, mut a3] = a;
            unsafe {
                asm!(
                    concat!($ins, " {a0}, {a0}, {b0}"),
                    concat!($ins, " {a1}, {a1}, {b1}"),
                    concat!($ins, " {a2}, {a2}, {b2}"),
                    concat!($ins, " {a3}, {a3}, {b3}"),
                    a0 = inout(ymm_reg) a0,
                    a1 = inout(ymm_reg) a1,
                    a2 = inout(ymm_reg) a2,
                    a3 = inout(ymm_reg) a3,
                    b0 = in(ymm_reg) b[0],
                    b1 = in(ymm_reg) b[1],
                    b2 = in(ymm_reg) b[2],
                    b3 = in(ymm_reg) b[3],
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            [a0, a1, a2, a3]
        }

        #[target_feature(enable = "avx2")]
        #[inline]
        unsafe fn $name_c(a: F4, c: f32) -> F4 {
            let [mut a0, mut a1, mut a2, mut a3] = a;
            unsafe {
                asm!(
                    concat!($ins, " {a0}, {a0}, {c}"),
                    concat!($ins, " {a1}, {a1}, {c}"),
                    concat!($ins, " {a2}, {a2}, {c}"),
                    concat!($ins, " {a3}, {a3}, {c}"),
                    a0 = inout(ymm_reg) a0,
                    a1 = inout(ymm_reg) a1,
                    a2 = inout(ymm_reg) a2,
                    a3 = inout(ymm_reg) a3,
                    c = in(ymm_reg) _mm256_set1_ps(c),
                    options(pure, nomem, nostack, preserves_flags),
                );
            }
            [a0, a1, a2, a3]
        }
    };
}

lanewise!(mul, mul_c, "vmulps");
lanewise!(add, add_c, "vaddps");
lanewise!(sub, sub_c, "vsubps");

/// `√a[j]`, correctly rounded (`vsqrtps`).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sqrt(a: F4) -> F4 {
    let [mut a0, mut a1, mut a2, mut a3] = a;
    unsafe {
        asm!(
            "vsqrtps {a0}, {a0}",
            "vsqrtps {a1}, {a1}",
            "vsqrtps {a2}, {a2}",
            "vsqrtps {a3}, {a3}",
            a0 = inout(ymm_reg) a0,
            a1 = inout(ymm_reg) a1,
            a2 = inout(ymm_reg) a2,
            a3 = inout(ymm_reg) a3,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    [a0, a1, a2, a3]
}

/// `f(j)` for j = 0..4.
macro_rules! each {
    (|$j:ident| $e:expr) => {
        [0usize, 1, 2, 3].map(|$j| $e)
    };
}

/// `((c[0]·z + c[1])·z + c[2])·z`, each product and sum rounded.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn poly3_times_z(c: [f32; 3], z: F4) -> F4 {
    unsafe { mul(add_c(mul(add_c(mul_c(z, c[0]), c[1]), z), c[2]), z) }
}

/// `philox::box_muller` on 4 × 8 lanes: `[r·cos θ, r·sin θ]` with the radius from
/// word `a[j]`, the angle from word `b[j]`.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn box_muller4(a: &[__m256i; 4], b: &[__m256i; 4]) -> [[__m256; 2]; 4] {
    unsafe {
        // u = (f32(a >> 1) + 0.5) × 2^-31; then ln u as `philox::ln_unit`
        let f = each!(|j| _mm256_cvtepi32_ps(_mm256_srli_epi32::<1>(a[j])));
        let u = mul_c(add_c(f, 0.5), TWO_POW_M31);
        let bits = u.map(|u| _mm256_castps_si256(u));
        let m = bits.map(|b| {
            _mm256_castsi256_ps(_mm256_or_si256(
                _mm256_and_si256(b, _mm256_set1_epi32(0x007F_FFFF)),
                _mm256_set1_epi32(0x3F00_0000),
            ))
        });
        let below = m.map(|m| _mm256_cmp_ps::<_CMP_LT_OQ>(m, _mm256_set1_ps(SQRT_HALF)));
        // (m + m) − 1 where below, m − 1 elsewhere: the same subtraction of the chosen
        let twice = add(m, m);
        let x = sub_c(each!(|j| _mm256_blendv_ps(m[j], twice[j], below[j])), 1.0);
        // e = exponent − 126, less 1 where below (the mask is −1 there)
        let fe = each!(|j| {
            let e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits[j]), _mm256_set1_epi32(126));
            _mm256_cvtepi32_ps(_mm256_add_epi32(e, _mm256_castps_si256(below[j])))
        });
        let mut p = [_mm256_set1_ps(LOG_P[0]); 4];
        for &c in &LOG_P[1..] {
            p = add_c(mul(p, x), c);
        }
        let z = mul(x, x);
        let y = mul(mul(p, x), z);
        let y = add(y, mul_c(fe, LN2_LO));
        let y = sub(y, mul_c(z, 0.5));
        let ln = add(add(x, y), mul_c(fe, LN2_HI));
        let r = sqrt(mul_c(ln, -2.0));

        // (cos θ, sin θ) as `philox::sincos`
        let s = b.map(|b| {
            _mm256_cvtepi32_ps(_mm256_sub_epi32(
                _mm256_and_si256(_mm256_srli_epi32::<6>(b), _mm256_set1_epi32(0x00FF_FFFF)),
                _mm256_set1_epi32(0x0080_0000),
            ))
        });
        let phi = mul_c(add_c(s, 0.5), ANGLE_STEP);
        let z = mul(phi, phi);
        let sin = add(mul(poly3_times_z(SIN_P, z), phi), phi);
        let cos = add_c(sub(mul(poly3_times_z(COS_P, z), z), mul_c(z, 0.5)), 1.0);
        // quadrant q = b >> 30: swap where q is odd (bit 30, moved to the sign bit that
        // blendv reads), negate the cosine slot where q ∈ {1, 2} (bit 31 ≠ bit 30) and
        // the sine slot where q ∈ {2, 3} (bit 31)
        let sign = _mm256_set1_epi32(i32::MIN);
        let (c, s): (F4, F4) = (
            each!(|j| {
                let shifted = _mm256_slli_epi32::<1>(b[j]);
                let c = _mm256_blendv_ps(cos[j], sin[j], _mm256_castsi256_ps(shifted));
                let neg = _mm256_and_si256(_mm256_xor_si256(b[j], shifted), sign);
                _mm256_xor_ps(c, _mm256_castsi256_ps(neg))
            }),
            each!(|j| {
                let odd = _mm256_castsi256_ps(_mm256_slli_epi32::<1>(b[j]));
                let s = _mm256_blendv_ps(sin[j], cos[j], odd);
                _mm256_xor_ps(s, _mm256_castsi256_ps(_mm256_and_si256(b[j], sign)))
            }),
        );
        let (rc, rs) = (mul(r, c), mul(r, s));
        each!(|j| [rc[j], rs[j]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::philox::box_muller;

    #[test]
    fn equals_the_scalar_transform_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return eprintln!("no AVX2 on this CPU: nothing to compare");
        }
        // the radius' extremes and the rounding boundaries of f32(a >> 1) (2^24 and
        // up), every quadrant boundary of the angle word, then 2^22 pseudo-random pairs
        let mut special = vec![
            0u32,
            1,
            2,
            3,
            u32::MAX,
            u32::MAX - 1,
            0x8000_0000,
            0x7FFF_FFFF,
        ];
        for e in 24..32 {
            let p = 1u32 << e;
            special.extend([p - 2, p - 1, p, p + 1, p + 2, p | 1 << (e - 24), p | 3]);
        }
        for q in 0..4u32 {
            let base = q << 30;
            special.extend([
                base,
                base + 63,
                base + 64,
                base | 0x3FFF_FFC0,
                base | 0x3FFF_FFFF,
            ]);
            special.extend([base | 0x2000_0000, (base | 0x2000_0000) - 64]);
        }
        let mut pairs: Vec<(u32, u32)> = special
            .iter()
            .flat_map(|&a| special.iter().map(move |&b| (a, b)))
            .collect();
        let mut x = 0x1234_5678_9ABC_DEF0u64;
        pairs.extend((0..1 << 22).map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            (r as u32, (r >> 32) as u32)
        }));
        pairs.resize(pairs.len().next_multiple_of(32), (0, 0));
        for batch in pairs.chunks_exact(32) {
            let (mut a, mut b) = ([[0u32; 8]; 4], [[0u32; 8]; 4]);
            for (i, &(x, y)) in batch.iter().enumerate() {
                (a[i / 8][i % 8], b[i / 8][i % 8]) = (x, y);
            }
            // SAFETY: AVX2 checked above; [u32; 8] and __m256i have the same size
            let got: [[[f32; 8]; 2]; 4] = unsafe {
                std::mem::transmute(box_muller4(
                    &std::mem::transmute::<[[u32; 8]; 4], [__m256i; 4]>(a),
                    &std::mem::transmute::<[[u32; 8]; 4], [__m256i; 4]>(b),
                ))
            };
            for (i, &(x, y)) in batch.iter().enumerate() {
                let (c, s) = box_muller(x, y);
                let (gc, gs) = (got[i / 8][0][i % 8], got[i / 8][1][i % 8]);
                assert_eq!(
                    (gc.to_bits(), gs.to_bits()),
                    (c.to_bits(), s.to_bits()),
                    "words {x:#x} {y:#x}: {gc} {gs} vs {c} {s}"
                );
            }
        }
    }
}
