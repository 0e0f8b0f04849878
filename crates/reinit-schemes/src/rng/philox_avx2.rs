//! Stream v2's bulk fills written by hand for x86-64 CPUs with AVX2 (detected at run time
//! by `philox::draw_chunk_from`; `philox.rs` keeps the portable lane loops, which are the
//! reference). The normal transform is in `box_muller_avx2.rs`.
//!
//! Same values bit for bit: every step is the operation `philox.rs` (and
//! `docs/stream.md`) specifies, in the same order, as one IEEE operation per lane; blends
//! and sign-bit XORs stand for the branches. The tests in `philox.rs` compare both paths
//! on millions of values of every law, at chunk remainders and skip offsets.
//!
//! Why by hand (profiled with `perf` on `examples/fill_cputime.rs`): the auto-vectorised
//! lanes kept Philox's 8 lanes as 4 u64 pairs and re-packed both halves of every
//! 32×32→64 product each round (22 vector ops a round), and LLVM ordered the two
//! independent chains of each step one after the other, so the CPU waited on their
//! latency. Here even and odd lanes live in separate registers, in the low half of each
//! 64-bit slot, so a product's low word is already in place and its high word is one
//! shift (16 ops a round), and a round is one `asm!` block that keeps the two chains
//! interleaved. Normals are drawn two groups at a time, so that the transform has four
//! independent vectors. The truncated normal's rejection is a vector left-pack (one
//! permute per 8 values) instead of a scalar loop.
#![allow(unused_unsafe)] // rust-version 1.85 needs `unsafe` around intrinsics even in avx2 fns

use core::arch::asm;
use core::arch::x86_64::*;

use super::Law;
use super::box_muller_avx2::box_muller4;
use super::philox::{GROUP, LANES, M0, M1, PhiloxKey, W0, W1};

/// The 10 round keys of a Philox key, each word broadcast to 8 lanes.
struct RoundKeys([[__m256i; 2]; 10]);

impl RoundKeys {
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn new(key: [u32; 2]) -> Self {
        unsafe {
            let mut rk = [[_mm256_setzero_si256(); 2]; 10];
            let [mut k0, mut k1] = key;
            for (round, r) in rk.iter_mut().enumerate() {
                if round > 0 {
                    k0 = k0.wrapping_add(W0);
                    k1 = k1.wrapping_add(W1);
                }
                *r = [_mm256_set1_epi32(k0 as i32), _mm256_set1_epi32(k1 as i32)];
            }
            RoundKeys(rk)
        }
    }
}

/// One Philox round on the even and the odd lanes of a group, each word in the low 32
/// bits of a 64-bit slot (the high 32 bits are don't-care: `vpmuludq` ignores them and
/// nothing else mixes slots):
/// `(c0, c1, c2, c3) ← (hi(M1·c2) ^ c1 ^ k0, lo(M1·c2), hi(M0·c0) ^ c3 ^ k1, lo(M0·c0))`.
/// One `asm!` block so that the two chains stay interleaved (LLVM orders intrinsics chain
/// after chain), with `c1 ^ k0` taken while the product is still in flight.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn round(even: &mut [__m256i; 4], odd: &mut [__m256i; 4], k: &[__m256i; 2]) {
    let ([e0, e1, e2, e3], [o0, o1, o2, o3]) = (*even, *odd);
    let (mut ne, mut no) = ([e0; 4], [o0; 4]);
    unsafe {
        asm!(
            "vpmuludq {et}, {e0}, {m0}",
            "vpmuludq {ot}, {o0}, {m0}",
            "vpmuludq {e0}, {e2}, {m1}",
            "vpmuludq {o0}, {o2}, {m1}",
            "vpxor {e1}, {e1}, {k0}",
            "vpxor {o1}, {o1}, {k0}",
            "vpxor {e3}, {e3}, {k1}",
            "vpxor {o3}, {o3}, {k1}",
            "vpsrlq {e2}, {e0}, 32",
            "vpsrlq {o2}, {o0}, 32",
            "vpxor {e2}, {e2}, {e1}",
            "vpxor {o2}, {o2}, {o1}",
            "vpsrlq {e1}, {et}, 32",
            "vpsrlq {o1}, {ot}, 32",
            "vpxor {e1}, {e1}, {e3}",
            "vpxor {o1}, {o1}, {o3}",
            // the registers' new roles: M1·c2 (whose low word is the new c1) in e0,
            // the new c2 in e1, the new c0 in e2, M0·c0 (new c3) in et
            e0 = inout(ymm_reg) e0 => ne[1],
            e1 = inout(ymm_reg) e1 => ne[2],
            e2 = inout(ymm_reg) e2 => ne[0],
            e3 = inout(ymm_reg) e3 => _,
            et = out(ymm_reg) ne[3],
            o0 = inout(ymm_reg) o0 => no[1],
            o1 = inout(ymm_reg) o1 => no[2],
            o2 = inout(ymm_reg) o2 => no[0],
            o3 = inout(ymm_reg) o3 => _,
            ot = out(ymm_reg) no[3],
            m0 = in(ymm_reg) _mm256_set1_epi64x(M0 as i64),
            m1 = in(ymm_reg) _mm256_set1_epi64x(M1 as i64),
            k0 = in(ymm_reg) k[0],
            k1 = in(ymm_reg) k[1],
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    (*even, *odd) = (ne, no);
}

/// Blocks `first .. first + 8` of counter `(c0, c1, c2, tag)`: word `i` of block
/// `first + l` is lane `l` of `w[i]` (as `philox::blocks8`). The ten rounds are written
/// out (a loop keeps the state in memory).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn blocks8(first: u32, c1: u32, c2: u32, tag: u32, rk: &RoundKeys) -> [__m256i; 4] {
    unsafe {
        let base = _mm256_set1_epi32(first as i32);
        // even lanes (blocks first + 0, 2, 4, 6) and odd lanes in the low 32 bits of each
        // 64-bit slot; the adds wrap modulo 2^32 as the counter does
        let mut even = [
            _mm256_add_epi32(base, _mm256_setr_epi32(0, 0, 2, 0, 4, 0, 6, 0)),
            _mm256_set1_epi32(c1 as i32),
            _mm256_set1_epi32(c2 as i32),
            _mm256_set1_epi32(tag as i32),
        ];
        let mut odd = even;
        odd[0] = _mm256_add_epi32(base, _mm256_setr_epi32(1, 0, 3, 0, 5, 0, 7, 0));
        macro_rules! rounds {
            ($($r:literal)*) => {$( round(&mut even, &mut odd, &rk.0[$r]); )*};
        }
        rounds!(0 1 2 3 4 5 6 7 8 9);
        let mut w = even;
        for (w, odd) in w.iter_mut().zip(odd) {
            *w = _mm256_blend_epi32::<0xAA>(*w, _mm256_slli_epi64::<32>(odd));
        }
        w
    }
}

/// `G` consecutive groups of [`blocks8`], from block `first`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn blocks<const G: usize>(
    first: u32,
    c1: u32,
    c2: u32,
    tag: u32,
    rk: &RoundKeys,
) -> [[__m256i; 4]; G] {
    unsafe {
        let mut w = [[_mm256_setzero_si256(); 4]; G];
        for (g, w) in w.iter_mut().enumerate() {
            *w = blocks8(first.wrapping_add((LANES * g) as u32), c1, c2, tag, rk);
        }
        w
    }
}

/// Two groups of `philox::normals32` (blocks `first .. first + 16`): group `g`'s 32
/// normals are `z[g][0..4]`, 8 lanes per vector, in output order. Two, so that the
/// transform has four independent vectors to interleave.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn normals64(first: u32, c1: u32, c2: u32, tag: u32, rk: &RoundKeys) -> [[__m256; 4]; 2] {
    unsafe {
        let [v, w] = blocks::<2>(first, c1, c2, tag, rk);
        // the pairs (w0, w1) and (w2, w3) of each group
        let [p, q, r, s] = box_muller4(&[v[0], v[2], w[0], w[2]], &[v[1], v[3], w[1], w[3]]);
        [[p[0], p[1], q[0], q[1]], [r[0], r[1], s[0], s[1]]]
    }
}

/// `f64(v[l]) × std` for the 8 lanes, stored at `dst[0..8]`.
///
/// # Safety
/// `dst` is valid for 8 writes; AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_scaled(dst: *mut f64, v: __m256, std: __m256d) {
    unsafe {
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v));
        _mm256_storeu_pd(dst, _mm256_mul_pd(lo, std));
        _mm256_storeu_pd(dst.add(4), _mm256_mul_pd(hi, std));
    }
}

/// For each 8-bit keep mask, the kept lanes' indices in order, one per byte (the rest 0):
/// the `vpermps` control that packs them to the front.
const LEFT_PACK: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut mask = 0;
    while mask < 256 {
        let (mut lane, mut n) = (0, 0);
        while lane < 8 {
            if mask >> lane & 1 == 1 {
                t[mask] |= (lane as u64) << (8 * n);
                n += 1;
            }
            lane += 1;
        }
        mask += 1;
    }
    t
};

/// Groups drawn per step of the bulk loops (as [`normals64`]).
const BULK: usize = 2;

/// `out[0..32]` ← group `g`'s normals `z[g]` in f64 times `std`, or as many as `out` holds.
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_group(out: &mut [f64], z: &[__m256; 4], std: __m256d) {
    unsafe {
        if out.len() == GROUP {
            for (i, &v) in z.iter().enumerate() {
                // SAFETY: `out` holds 32 values, 8 per vector
                store_scaled(out.as_mut_ptr().add(LANES * i), v, std);
            }
        } else {
            let mut tmp = [0.0; GROUP];
            store_group(&mut tmp, z, std);
            let n = out.len();
            out.copy_from_slice(&tmp[..n]);
        }
    }
}

/// `out[0..32]` ← the uniform values of a group's words `w`, or as many as `out` holds.
///
/// # Safety
/// AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_uniform(out: &mut [f64], w: &[__m256i; 4], lo: f64, hi: f64) {
    const TWO_POW_M32: f64 = 1.0 / 4_294_967_296.0;
    unsafe {
        if out.len() < GROUP {
            let mut tmp = [0.0; GROUP];
            store_uniform(&mut tmp, w, lo, hi);
            let n = out.len();
            out.copy_from_slice(&tmp[..n]);
            return;
        }
        let (lo, width) = (_mm256_set1_pd(lo), _mm256_set1_pd(hi - lo));
        let flip = _mm_set1_epi32(i32::MIN);
        for (i, &w) in w.iter().enumerate() {
            let halves = [_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w)];
            for (h, half) in halves.into_iter().enumerate() {
                // `x as f64` through the signed conversion (exact)
                let x = _mm256_add_pd(
                    _mm256_cvtepi32_pd(_mm_xor_si128(half, flip)),
                    _mm256_set1_pd(2_147_483_648.0),
                );
                let x = _mm256_mul_pd(x, _mm256_set1_pd(TWO_POW_M32));
                let v = _mm256_add_pd(lo, _mm256_mul_pd(width, x));
                // SAFETY: `out` holds 32 values
                _mm256_storeu_pd(out.as_mut_ptr().add(LANES * i + 4 * h), v);
            }
        }
    }
}

/// Chunk `k` of fill `fill`, values `skip · GROUP ..` (as many as `buf` holds): exactly
/// `philox::draw_chunk_lanes`'s output.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn draw_chunk(
    key: PhiloxKey,
    fill: u32,
    law: Law,
    k: u32,
    skip: usize,
    buf: &mut [f64],
) {
    debug_assert!(skip == 0 || !matches!(law, Law::TruncatedNormal { .. }));
    const STEP: u32 = (LANES * BULK) as u32;
    let (tag, mut block) = (key.tag(), (skip * LANES) as u32);
    unsafe {
        let rk = RoundKeys::new(key.key());
        match law {
            Law::Normal { std } => {
                let std = _mm256_set1_pd(std);
                let mut bulk = buf.chunks_exact_mut(GROUP * BULK);
                for out in bulk.by_ref() {
                    let z = normals64(block, k, fill, tag, &rk);
                    for (out, z) in out.chunks_exact_mut(GROUP).zip(&z) {
                        store_group(out, z, std);
                    }
                    block += STEP;
                }
                let rest = bulk.into_remainder();
                if !rest.is_empty() {
                    let z = normals64(block, k, fill, tag, &rk);
                    for (out, z) in rest.chunks_mut(GROUP).zip(&z) {
                        store_group(out, z, std);
                    }
                }
            }
            Law::Uniform { lo, hi } => {
                let mut bulk = buf.chunks_exact_mut(GROUP * BULK);
                for out in bulk.by_ref() {
                    let w = blocks::<BULK>(block, k, fill, tag, &rk);
                    for (out, w) in out.chunks_exact_mut(GROUP).zip(&w) {
                        store_uniform(out, w, lo, hi);
                    }
                    block += STEP;
                }
                for out in bulk.into_remainder().chunks_mut(GROUP) {
                    let [w] = blocks::<1>(block, k, fill, tag, &rk);
                    store_uniform(out, &w, lo, hi);
                    block += LANES as u32;
                }
            }
            Law::TruncatedNormal { std } => {
                let std = _mm256_set1_pd(std);
                let (abs, two) = (
                    _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX)),
                    _mm256_set1_ps(2.0),
                );
                let len = buf.len();
                let mut filled = 0;
                'draws: while filled < len {
                    let z = normals64(block, k, fill, tag, &rk);
                    for &v in z.as_flattened() {
                        let keep = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_and_ps(v, abs), two);
                        let mask = _mm256_movemask_ps(keep) as usize;
                        let order = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(LEFT_PACK[mask] as i64));
                        let packed = _mm256_permutevar8x32_ps(v, order);
                        let n = (mask.count_ones() as usize).min(len - filled);
                        if len - filled >= LANES {
                            // SAFETY: 8 values from `filled` are in `buf`; the ones past
                            // the `n` kept are overwritten by later draws
                            store_scaled(buf.as_mut_ptr().add(filled), packed, std);
                        } else {
                            let mut tmp = [0.0; LANES];
                            store_scaled(tmp.as_mut_ptr(), packed, std);
                            buf[filled..filled + n].copy_from_slice(&tmp[..n]);
                        }
                        filled += n;
                        if filled == len {
                            break 'draws;
                        }
                    }
                    block += STEP;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::philox::philox4x32_10;

    #[test]
    fn lanes_equal_single_blocks_across_the_counter_wrap() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return eprintln!("no AVX2 on this CPU: nothing to compare");
        }
        let key = PhiloxKey::from_digest(&[0x5A; 32]);
        for first in [0, 8, u32::MAX - 3, u32::MAX - 8, 0x8000_0000 - 5] {
            // SAFETY: AVX2 checked above
            let groups = unsafe { blocks::<2>(first, 5, 6, key.tag(), &RoundKeys::new(key.key())) };
            for (g, w) in groups.iter().enumerate() {
                let [w0, w1, w2, w3]: [[u32; 8]; 4] = unsafe { std::mem::transmute(*w) };
                for (l, (((a, b), c), d)) in w0.iter().zip(w1).zip(w2).zip(w3).enumerate() {
                    let c0 = first.wrapping_add((8 * g + l) as u32);
                    let want = philox4x32_10([c0, 5, 6, key.tag()], key.key());
                    assert_eq!([*a, b, c, d], want, "block {c0}");
                }
            }
        }
    }
}
