//! Stream v2: Philox4x32-10 blocks and an f32 Box–Muller built from IEEE
//! `+ − × √` only, so numpy reproduces every value bit for bit
//! (`docs/stream.md` specifies it; `tests/python/test_stream_v2.py` checks it).
//!
//! Philox (Salmon et al., SC'11, "Parallel random numbers: as easy as 1, 2, 3"; the
//! Random123 reference, also cuRAND's and PyTorch's CUDA generator) is counter-based:
//! block `c` of a key is a pure function of `(key, c)`, so any chunk of any fill is
//! produced alone, and eight consecutive blocks are computed lane by lane in SIMD
//! registers. The normal transform works on whole blocks (two Box–Muller pairs each) with
//! no branch and no table, which is what lets it vectorise too.
//!
//! This file is the reference: the portable lane loops, which the compiler vectorises
//! for the baseline target. On x86-64 CPUs with AVX2 the bulk fills run the hand-written
//! kernels of `philox_avx2.rs` and `box_muller_avx2.rs` instead (same bits, ~1.7× faster;
//! the tests below compare the two paths).

use super::{FILL_CHUNK, Law};

/// Philox4x32 round multipliers and key increments (Random123).
pub(super) const M0: u32 = 0xD251_1F53;
pub(super) const M1: u32 = 0xCD9E_8D57;
pub(super) const W0: u32 = 0x9E37_79B9;
pub(super) const W1: u32 = 0xBB67_AE85;

/// A tensor's Philox key and the counter word that carries 32 more bits of its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PhiloxKey {
    key: [u32; 2],
    tag: u32,
}

impl PhiloxKey {
    /// Words 0 and 1 (little-endian) of the digest are the key, word 2 the tag.
    pub(super) fn from_digest(d: &[u8; 32]) -> Self {
        let word = |i: usize| u32::from_le_bytes(d[4 * i..4 * i + 4].try_into().expect("4"));
        PhiloxKey {
            key: [word(0), word(1)],
            tag: word(2),
        }
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the AVX2 kernels' accessors
    pub(super) fn key(&self) -> [u32; 2] {
        self.key
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn tag(&self) -> u32 {
        self.tag
    }
}

/// One Philox4x32-10 block.
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = ctr;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let p0 = M0 as u64 * c0 as u64;
        let p1 = M1 as u64 * c2 as u64;
        (c0, c1, c2, c3) = (
            (p1 >> 32) as u32 ^ c1 ^ k0,
            p1 as u32,
            (p0 >> 32) as u32 ^ c3 ^ k1,
            p0 as u32,
        );
    }
    [c0, c1, c2, c3]
}

pub(super) const LANES: usize = 8;
/// Values per group: 8 blocks of 4 words.
pub(super) const GROUP: usize = 4 * LANES;

/// Blocks `first .. first + 8` of counter `(c0, c1, c2, tag)`, lane `l` holding block
/// `first + l`: `w[i][l]` is word `i` of that block.
///
/// Two lanes share a u64 (even lane low, odd lane high), so the 32×32→64 products are
/// plain u64 multiplies of masked / shifted halves — which the compiler maps onto
/// `vpmuludq` over 4 × 64 bits without any repacking — and the same code is still
/// ordinary integer arithmetic on targets without vectors.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane-wise on purpose: the loops are the vector lanes
fn blocks8(first: u32, c1: u32, c2: u32, k: PhiloxKey) -> [[u32; LANES]; 4] {
    const LO: u64 = 0xFFFF_FFFF;
    const HI: u64 = !LO;
    const PAIRS: usize = LANES / 2;
    let both = |x: u32| x as u64 | (x as u64) << 32;
    let mut w = [[0u64; PAIRS]; 4];
    for m in 0..PAIRS {
        let even = first.wrapping_add(2 * m as u32);
        w[0][m] = even as u64 | (even.wrapping_add(1) as u64) << 32;
        w[1][m] = both(c1);
        w[2][m] = both(c2);
        w[3][m] = both(k.tag);
    }
    let [mut k0, mut k1] = k.key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        let (kk0, kk1) = (both(k0), both(k1));
        let mut n = [[0u64; PAIRS]; 4];
        for m in 0..PAIRS {
            let (pe0, po0) = ((w[0][m] & LO) * M0 as u64, (w[0][m] >> 32) * M0 as u64);
            let (pe1, po1) = ((w[2][m] & LO) * M1 as u64, (w[2][m] >> 32) * M1 as u64);
            let (lo0, hi0) = ((pe0 & LO) | (po0 << 32), (pe0 >> 32) | (po0 & HI));
            let (lo1, hi1) = ((pe1 & LO) | (po1 << 32), (pe1 >> 32) | (po1 & HI));
            n[0][m] = hi1 ^ w[1][m] ^ kk0;
            n[1][m] = lo1;
            n[2][m] = hi0 ^ w[3][m] ^ kk1;
            n[3][m] = lo0;
        }
        w = n;
    }
    let mut out = [[0u32; LANES]; 4];
    for i in 0..4 {
        for m in 0..PAIRS {
            out[i][2 * m] = w[i][m] as u32;
            out[i][2 * m + 1] = (w[i][m] >> 32) as u32;
        }
    }
    out
}

// The constants by their f32 bit patterns (docs/stream.md lists them), so a reimplementation
// needs no decimal parsing; decimal values in the comments are cephes'.

/// `√½` (cephes `SQRTHF`).
pub(super) const SQRT_HALF: f32 = f32::from_bits(0x3F35_04F3);
/// cephes `logf` polynomial, highest degree first: 7.0376836292e-2 … 3.3333331174e-1.
pub(super) const LOG_P: [f32; 9] = [
    f32::from_bits(0x3D90_21BB),
    f32::from_bits(0xBDEB_D1B8),
    f32::from_bits(0x3DEF_251B),
    f32::from_bits(0xBDFE_5D4F),
    f32::from_bits(0x3E11_E9BF),
    f32::from_bits(0xBE2A_AE50),
    f32::from_bits(0x3E4C_CEAC),
    f32::from_bits(0xBE7F_FFFC),
    f32::from_bits(0x3EAA_AAAA),
];
/// `ln 2` split in two (cephes): 0.693359375 and −2.12194440e-4.
pub(super) const LN2_HI: f32 = f32::from_bits(0x3F31_8000);
pub(super) const LN2_LO: f32 = f32::from_bits(0xB95E_8083);
/// cephes `sinf` / `cosf` polynomials on `[−π/4, π/4]`, highest degree first:
/// −1.9515295891e-4, 8.3321608736e-3, −1.6666654611e-1 and 2.443315711809948e-5,
/// −1.388731625493765e-3, 4.166664568298827e-2.
pub(super) const SIN_P: [f32; 3] = [
    f32::from_bits(0xB94C_A1F9),
    f32::from_bits(0x3C08_839E),
    f32::from_bits(0xBE2A_AAA3),
];
pub(super) const COS_P: [f32; 3] = [
    f32::from_bits(0x37CC_F5CE),
    f32::from_bits(0xBAB6_061A),
    f32::from_bits(0x3D2A_AAA5),
];
/// `(π/2)·2⁻²⁴` rounded to f32: one step of the angle grid.
pub(super) const ANGLE_STEP: f32 = (std::f64::consts::FRAC_PI_2 / 16_777_216.0) as f32;
/// `2⁻³¹`.
pub(super) const TWO_POW_M31: f32 = 1.0 / 2_147_483_648.0;

/// `ln u` for `u` in `(0, 1]` (normal f32), cephes `logf`: `u = m·2^e` with `m` in
/// `[√½, √2)`, a degree-9 polynomial in `m − 1`. Every step is one IEEE f32 operation.
#[inline(always)]
fn ln_unit(u: f32) -> f32 {
    let bits = u.to_bits();
    let e = (bits >> 23) as i32 - 126;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F00_0000); // in [0.5, 1)
    let below = m < SQRT_HALF;
    let x = if below { (m + m) - 1.0 } else { m - 1.0 };
    let e = if below { e - 1 } else { e };
    let z = x * x;
    let mut p = LOG_P[0];
    for c in &LOG_P[1..] {
        p = p * x + c;
    }
    let fe = e as f32;
    let y = p * x * z;
    let y = y + LN2_LO * fe;
    let y = y - 0.5 * z;
    let r = x + y;
    r + LN2_HI * fe
}

/// `(cos θ, sin θ)` for the angle of word `b`: quadrant `q = b >> 30`, offset
/// `φ = (s + ½)·ANGLE_STEP` with `s = ((b >> 6) & 0xFFFFFF) − 2²³`, `θ = q·π/2 + φ`.
#[inline(always)]
fn sincos(b: u32) -> (f32, f32) {
    let q = b >> 30;
    let s = ((b >> 6) & 0x00FF_FFFF) as i32 - 0x0080_0000;
    let phi = (s as f32 + 0.5) * ANGLE_STEP;
    let z = phi * phi;
    let sin = ((SIN_P[0] * z + SIN_P[1]) * z + SIN_P[2]) * z * phi + phi;
    let cos = ((COS_P[0] * z + COS_P[1]) * z + COS_P[2]) * z * z - 0.5 * z + 1.0;
    let (c, s) = if q & 1 == 1 { (sin, cos) } else { (cos, sin) };
    let c = if (q ^ (q >> 1)) & 1 == 1 { -c } else { c };
    let s = if q >> 1 == 1 { -s } else { s };
    (c, s)
}

/// Box–Muller: the radius from word `a`, the angle from word `b`; returns
/// `(r·cos θ, r·sin θ)`, two independent standard normals (radius ≤ 6.66).
#[inline(always)]
pub fn box_muller(a: u32, b: u32) -> (f32, f32) {
    let x = ((a >> 1) as i32) as f32;
    let u = (x + 0.5) * TWO_POW_M31; // in (0, 1]
    let r = (-2.0 * ln_unit(u)).sqrt();
    let (c, s) = sincos(b);
    (r * c, r * s)
}

/// The 32 normals of blocks `first .. first + 8`, word-major: positions `0..8` are
/// `r·cos θ` of `box_muller(w0, w1)` of the 8 blocks in order, `8..16` its `r·sin θ`,
/// `16..24` and `24..32` the same of `box_muller(w2, w3)`. (Word-major, not block-major,
/// so that the 8 lanes of a vector register are stored as they are, untransposed.)
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane-wise on purpose
fn normals32(first: u32, c1: u32, c2: u32, k: PhiloxKey) -> [[f32; LANES]; 4] {
    let w = blocks8(first, c1, c2, k);
    let mut z = [[0f32; LANES]; 4];
    for l in 0..LANES {
        (z[0][l], z[1][l]) = box_muller(w[0][l], w[1][l]);
        (z[2][l], z[3][l]) = box_muller(w[2][l], w[3][l]);
    }
    z
}

/// Chunk `k` of fill number `fill`: counter `(block, k, fill, tag)`, blocks from 0; `buf`
/// starts at value `skip · GROUP` of the chunk (`skip` is 0 for the truncated normal, whose
/// rejection makes a value's position depend on every value before it).
#[inline(always)]
fn draw_chunk_lanes(key: PhiloxKey, fill: u32, law: Law, k: u32, skip: usize, buf: &mut [f64]) {
    debug_assert!(skip == 0 || !matches!(law, Law::TruncatedNormal { .. }));
    match law {
        Law::Normal { std } => {
            let whole = buf.len() / GROUP;
            let mut groups = buf.chunks_exact_mut(GROUP);
            for (g, out) in groups.by_ref().enumerate() {
                let z = normals32(((skip + g) * LANES) as u32, k, fill, key);
                for (o, z) in out.chunks_exact_mut(LANES).zip(&z) {
                    for (o, &v) in o.iter_mut().zip(z) {
                        *o = v as f64 * std;
                    }
                }
            }
            let rest = groups.into_remainder();
            if !rest.is_empty() {
                let z = normals32(((skip + whole) * LANES) as u32, k, fill, key);
                for (o, &v) in rest.iter_mut().zip(z.as_flattened()) {
                    *o = v as f64 * std;
                }
            }
        }
        Law::Uniform { lo, hi } => {
            const TWO_POW_M32: f64 = 1.0 / 4_294_967_296.0;
            for (g, out) in buf.chunks_mut(GROUP).enumerate() {
                let w = blocks8(((skip + g) * LANES) as u32, k, fill, key);
                for (o, &x) in out.iter_mut().zip(w.as_flattened()) {
                    // `x as f64`, through the signed conversion vectors have
                    // (exact: every value involved is an integer below 2^53)
                    let x = ((x ^ 0x8000_0000) as i32) as f64 + 2_147_483_648.0;
                    *o = lo + (hi - lo) * (x * TWO_POW_M32);
                }
            }
        }
        Law::TruncatedNormal { std } => {
            let mut filled = 0;
            let mut first = 0u32;
            while filled < buf.len() {
                for &v in normals32(first, k, fill, key).as_flattened() {
                    if v.abs() < 2.0 && filled < buf.len() {
                        buf[filled] = v as f64 * std;
                        filled += 1;
                    }
                }
                first += LANES as u32;
            }
        }
    }
}

/// The portable lane loops (the reference), whatever the CPU; the same values as the
/// AVX2 path (no fused multiply-add is ever formed, and every other operation is exact
/// IEEE).
#[cfg(test)]
pub(super) fn draw_chunk_portable(
    key: PhiloxKey,
    fill: u32,
    law: Law,
    k: u32,
    skip: usize,
    buf: &mut [f64],
) {
    draw_chunk_lanes(key, fill, law, k, skip, buf)
}

/// Chunk `k` of fill number `fill` (its first `buf.len()` values), with AVX2 where the
/// CPU has it.
pub(super) fn draw_chunk(key: PhiloxKey, fill: u64, law: Law, k: u64, buf: &mut [f64]) {
    draw_chunk_from(key, fill, law, k, 0, buf)
}

/// Values per independently addressable group of a chunk (8 Philox blocks).
pub(super) const GROUP_VALUES: usize = GROUP;

/// Values `skip·GROUP_VALUES ..` of chunk `k` (as many as `buf` holds): what
/// [`draw_chunk`] writes there, without drawing what comes before (not for the truncated
/// normal).
pub(super) fn draw_chunk_from(
    key: PhiloxKey,
    fill: u64,
    law: Law,
    k: u64,
    skip: usize,
    buf: &mut [f64],
) {
    debug_assert!(skip * GROUP + buf.len() <= FILL_CHUNK);
    let (fill, k) = (
        u32::try_from(fill).expect("fewer than 2^32 fills of one stream"),
        u32::try_from(k).expect("fewer than 2^32 chunks in one fill"),
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { super::philox_avx2::draw_chunk(key, fill, law, k, skip, buf) };
    }
    draw_chunk_lanes(key, fill, law, k, skip, buf)
}

/// The sequential stream: blocks `0, 1, 2, …` of counter `(b mod 2³², b / 2³², 0, tag)`,
/// read one 32-bit word at a time (word 0 of a block first).
#[derive(Debug, Clone)]
pub(super) struct Sequential {
    key: PhiloxKey,
    block: u64,
    words: [u32; 4],
    pos: usize,
}

impl Sequential {
    pub(super) fn new(key: PhiloxKey) -> Self {
        Sequential {
            key,
            block: 0,
            words: [0; 4],
            pos: 4,
        }
    }

    pub(super) fn next_word(&mut self) -> u32 {
        if self.pos == 4 {
            let b = self.block;
            self.words = philox4x32_10([b as u32, (b >> 32) as u32, 0, self.key.tag], self.key.key);
            self.block += 1;
            self.pos = 0;
        }
        let w = self.words[self.pos];
        self.pos += 1;
        w
    }

    /// Low word first.
    pub(super) fn next_u64(&mut self) -> u64 {
        let lo = self.next_word() as u64;
        lo | (self.next_word() as u64) << 32
    }

    /// `r·cos θ` of the next two words (the sine is not kept).
    pub(super) fn normal(&mut self) -> f64 {
        let a = self.next_word();
        let b = self.next_word();
        box_muller(a, b).0 as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_matches_the_random123_known_answers() {
        // kat_vectors of Random123 1.09, philox4x32 with 10 rounds
        let kat = [
            (
                [0u32; 4],
                [0u32; 2],
                [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8],
            ),
            (
                [u32::MAX; 4],
                [u32::MAX; 2],
                [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd],
            ),
            (
                [0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344],
                [0xa409_3822, 0x299f_31d0],
                [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1],
            ),
        ];
        for (ctr, key, want) in kat {
            assert_eq!(philox4x32_10(ctr, key), want, "ctr {ctr:x?} key {key:x?}");
        }
    }

    #[test]
    fn lanes_equal_single_blocks() {
        let k = PhiloxKey {
            key: [7, 0xdead_beef],
            tag: 99,
        };
        // lanes wrap around 2^32 inside one call
        let [w0, w1, w2, w3] = blocks8(u32::MAX - 3, 5, 6, k);
        for (l, (((a, b), c), d)) in w0.iter().zip(&w1).zip(&w2).zip(&w3).enumerate() {
            let block = philox4x32_10([(u32::MAX - 3).wrapping_add(l as u32), 5, 6, 99], k.key);
            assert_eq!([*a, *b, *c, *d], block);
        }
    }

    #[test]
    fn the_transform_is_accurate_to_a_few_f32_ulps() {
        // against f64 libm over words covering every quadrant and the radius' extremes
        let mut worst = 0f64;
        for i in 0..200_000u32 {
            let a = i.wrapping_mul(0x9E37_79B9) ^ (i >> 3);
            let b = i.wrapping_mul(0x85EB_CA6B).rotate_left(7);
            for a in [a, 0, 1, u32::MAX, u32::MAX - 1] {
                let (c, s) = box_muller(a, b);
                let u = ((((a >> 1) as i32) as f32 + 0.5) * TWO_POW_M31) as f64;
                let q = (b >> 30) as f64;
                let sc = ((b >> 6) & 0xFF_FFFF) as f64 - 8_388_608.0 + 0.5;
                let theta = q * std::f64::consts::FRAC_PI_2 + sc * (ANGLE_STEP as f64);
                let r = libm::sqrt(-2.0 * libm::log(u));
                let (wc, ws) = (r * libm::cos(theta), r * libm::sin(theta));
                let scale = r.max(1e-3);
                worst = worst.max((c as f64 - wc).abs() / scale);
                worst = worst.max((s as f64 - ws).abs() / scale);
            }
        }
        assert!(
            worst < 4.0 * f32::EPSILON as f64,
            "worst relative error {worst:e}"
        );
        // the radius' range: u = 2^-32 at the bottom, exactly 1 at the top
        assert_eq!(box_muller(u32::MAX, 0).0.abs(), 0.0);
        let (c, s) = box_muller(0, 0);
        let top = (c as f64).hypot(s as f64);
        assert!(
            (top - libm::sqrt(64.0 * std::f64::consts::LN_2)).abs() < 1e-5,
            "{top}"
        );
    }

    /// The bits of `draw_chunk_from` (AVX2 where the CPU has it) and of the portable
    /// lanes, for one key / fill / chunk / law / skip / length.
    fn both_paths(
        k: PhiloxKey,
        fill: u32,
        law: Law,
        chunk: u32,
        skip: usize,
        len: usize,
    ) -> (Vec<u64>, Vec<u64>) {
        let (mut a, mut b) = (vec![f64::NAN; len], vec![f64::NAN; len]);
        draw_chunk_from(k, fill as u64, law, chunk as u64, skip, &mut a);
        draw_chunk_portable(k, fill, law, chunk, skip, &mut b);
        let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
        (bits(a), bits(b))
    }

    #[test]
    fn the_avx2_path_gives_the_portable_values() {
        #[cfg(target_arch = "x86_64")]
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("no AVX2 on this CPU: both paths are the portable one");
        }
        let laws = [
            Law::Normal { std: 0.7 },
            Law::Uniform { lo: -1.0, hi: 3.0 },
            Law::TruncatedNormal { std: 2.0 },
        ];
        // whole chunks under 8 keys (3 × 8 × 65536 values; the truncated normal's run
        // past 16384 blocks too), counters near 2^32 included
        for i in 0..8u32 {
            let k = PhiloxKey {
                key: [i.wrapping_mul(0x9E37_79B9), !i],
                tag: i.wrapping_mul(0x85EB_CA6B) ^ 3,
            };
            let (fill, chunk) = (1 + i % 3, [0, 1, 9, u32::MAX][i as usize % 4]);
            for law in laws {
                let (a, b) = both_paths(k, fill, law, chunk, 0, FILL_CHUNK);
                assert!(a == b, "key {i} {law:?}: first difference at {:?}", {
                    a.iter().zip(&b).position(|(x, y)| x != y)
                });
            }
        }
        // every short length (partial groups and pairs of groups), and skip offsets
        let k = PhiloxKey {
            key: [1, 2],
            tag: 3,
        };
        for law in laws {
            for len in (0..=200).chain([1000, 5003, 65_535]) {
                let (a, b) = both_paths(k, 4, law, 9, 0, len);
                assert_eq!(a, b, "{law:?} len {len}");
            }
            if matches!(law, Law::TruncatedNormal { .. }) {
                continue; // not addressable by group
            }
            for skip in [1, 2, 3, 7, 100, 2047] {
                for len in [1, 31, 32, 33, 63, 64, 65, 97, 1000] {
                    let len = len.min(FILL_CHUNK - skip * GROUP);
                    let (a, b) = both_paths(k, 4, law, 9, skip, len);
                    assert_eq!(a, b, "{law:?} skip {skip} len {len}");
                }
            }
        }
    }
}
