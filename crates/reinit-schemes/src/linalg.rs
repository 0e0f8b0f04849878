//! Haar (semi-)orthogonal matrices from faer's Householder QR (stream v1, and square-ish
//! shapes) or from banded CholeskyQR (stream v2, shapes at least 2:1: `banded.rs`), and
//! numeric checks.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::householder;
use faer::linalg::qr::no_pivoting::factor as qr;
use faer::{Conj, Mat, Par};

use crate::banded::{self, HaarBands};
use crate::rng::Stream;

/// Below this many elements of the Gaussian matrix the QR runs sequentially; above, on the
/// current rayon pool with a fixed task count.
const PAR_THRESHOLD: usize = 256 * 256;

/// faer splits the QR's work into this many tasks whatever the pool size, so the result
/// depends on this constant only, never on the thread count (`Par::rayon(0)`, "all threads",
/// is not bit-reproducible across pool sizes; checked by a test).
const QR_TASKS: usize = 2;

/// An `r × c` Haar (semi-)orthogonal matrix times `gain`, row-major (schemes.md §0.3).
///
/// `a = max(r, c)`, `b = min(r, c)`; `G ∈ R^{a×b}` i.i.d. N(0, 1) drawn column by column;
/// thin QR `G = QR`; column j of Q times `sign(R_jj)` (exactly Haar); transposed when
/// `r ≤ c` (a square shape takes `Qᵀ`, Haar as well, because it is a contiguous copy). Rows are orthonormal when `r ≤ c` (`M Mᵀ = gain²·I`), columns when `r > c`.
/// Computed in f64. An empty shape gives an empty buffer.
///
/// Stream v2 takes a faster route when `a ≥ 2b` ([`HaarBands`]: CholeskyQR in bands): the
/// same Q in exact arithmetic, a quarter of the flops, and the weight never held in f64
/// where it is streamed.
pub fn haar_orthogonal(r: usize, c: usize, gain: f64, rng: &mut Stream) -> Vec<f64> {
    if r.min(c) == 0 {
        return vec![0.0; r * c];
    }
    // Should CholeskyQR ever fail (not reached for Gaussian matrices of this aspect,
    // κ ≤ 6), Householder QR decides, on the stream's next fill (still deterministic).
    if banded::applies(r, c, rng.version())
        && let Some(bands) = HaarBands::new(r, c, gain, rng)
    {
        return bands.to_vec();
    }
    householder_haar(r, c, gain, rng)
}

/// [`haar_orthogonal`] by Householder QR (faer), G drawn column by column.
pub(crate) fn householder_haar(r: usize, c: usize, gain: f64, rng: &mut Stream) -> Vec<f64> {
    let (a, b) = (r.max(c), r.min(c));
    let mut g = vec![0.0; a * b];
    rng.fill_normal(&mut g, 1.0);
    // column-major a×b: column j is g[j*a .. (j+1)*a]
    let mut m = Mat::<f64>::from_fn(a, b, |i, j| g[j * a + i]);
    drop(g);
    let par = if a * b >= PAR_THRESHOLD {
        Par::rayon(QR_TASKS)
    } else {
        Par::Seq
    };
    let block = qr::recommended_block_size::<f64>(a, b);
    let mut coeff = Mat::<f64>::zeros(block, b);
    {
        let mut mem = MemBuffer::new(qr::qr_in_place_scratch::<f64>(
            a,
            b,
            block,
            par,
            Default::default(),
        ));
        qr::qr_in_place(
            m.as_mut(),
            coeff.as_mut(),
            par,
            MemStack::new(&mut mem),
            Default::default(),
        );
    }
    let signs: Vec<f64> = (0..b)
        .map(|j| if m[(j, j)] < 0.0 { -1.0 } else { 1.0 })
        .collect();
    let mut q = Mat::<f64>::identity(a, b);
    {
        let mut mem = MemBuffer::new(
            householder::apply_block_householder_sequence_on_the_left_in_place_scratch::<f64>(
                a, block, b,
            ),
        );
        householder::apply_block_householder_sequence_on_the_left_in_place_with_conj(
            m.as_ref(),
            coeff.as_ref(),
            Conj::No,
            q.as_mut(),
            par,
            MemStack::new(&mut mem),
        );
    }
    // The Householder factors are spent: free them before the output is
    // allocated, so at most two a×b matrices are alive at once.
    drop(m);
    drop(coeff);
    let mut out = vec![0.0; r * c];
    if r <= c {
        // M = Qᵀ (r × c): row i of M is column i of Q, contiguous in faer's column-major Q.
        // (For square shapes Qᵀ is Haar exactly as Q is.)
        for (i, row) in out.chunks_exact_mut(c).enumerate() {
            let f = signs[i] * gain;
            for (o, &v) in row.iter_mut().zip(q.col(i).iter()) {
                *o = v * f;
            }
        }
    } else {
        // M = Q (r × c, tall): transpose the column-major Q in cache-sized tiles.
        const TILE: usize = 32;
        for j0 in (0..c).step_by(TILE) {
            for i0 in (0..r).step_by(TILE) {
                for j in j0..(j0 + TILE).min(c) {
                    let f = signs[j] * gain;
                    for i in i0..(i0 + TILE).min(r) {
                        out[i * c + j] = q[(i, j)] * f;
                    }
                }
            }
        }
    }
    out
}

/// `max |M Mᵀ − I|` (when `rows ≤ cols`) or `max |Mᵀ M − I|` (otherwise) of a row-major
/// `rows × cols` matrix, accumulated in f64. Divide `weight` by the gain first to check a
/// scaled matrix. 0 for an empty shape.
pub fn orthogonality_error(weight: &[f64], rows: usize, cols: usize) -> f64 {
    orthogonality_error_of(weight, rows, cols, |x| x)
}

/// [`orthogonality_error`] of `weight` with `map` applied to each entry, without a mapped copy.
fn orthogonality_error_of(
    weight: &[f64],
    rows: usize,
    cols: usize,
    map: impl Fn(f64) -> f64,
) -> f64 {
    assert_eq!(
        weight.len(),
        rows * cols,
        "orthogonality_error: buffer/shape mismatch"
    );
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    use faer::linalg::matmul::triangular::{BlockStructure, matmul};
    let m = Mat::<f64>::from_fn(rows, cols, |i, j| map(weight[i * cols + j]));
    // The smaller Gram matrix A·Aᵀ, lower half only (it is symmetric): half
    // the flops of the full product, which cost a third of orthogonal's time.
    let a = if rows <= cols {
        m.as_ref()
    } else {
        m.as_ref().transpose()
    };
    let n = a.nrows();
    let mut p = Mat::<f64>::zeros(n, n);
    matmul(
        p.as_mut(),
        BlockStructure::TriangularLower,
        faer::Accum::Replace,
        a,
        BlockStructure::Rectangular,
        a.transpose(),
        BlockStructure::Rectangular,
        1.0,
        faer::get_global_parallelism(),
    );
    let mut err: f64 = 0.0;
    for j in 0..n {
        for i in j..n {
            let target = if i == j { 1.0 } else { 0.0 };
            err = err.max((p[(i, j)] - target).abs());
        }
    }
    err
}

/// Fraction of non-zero entries (1 for an empty buffer is meaningless: returns 0).
pub fn density(weight: &[f64]) -> f64 {
    if weight.is_empty() {
        return 0.0;
    }
    weight.iter().filter(|&&x| x != 0.0).count() as f64 / weight.len() as f64
}

/// A storage format a model may hold its weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CastFormat {
    /// Kept in f64: no rounding.
    F64,
    F32,
    F16,
    Bf16,
}

impl CastFormat {
    /// `x` rounded to this format (round to nearest, ties to even), back in f64.
    pub fn round(self, x: f64) -> f64 {
        match self {
            CastFormat::F64 => x,
            CastFormat::F32 => x as f32 as f64,
            CastFormat::F16 => half::f16::from_f64(x).to_f64(),
            CastFormat::Bf16 => half::bf16::from_f64(x).to_f64(),
        }
    }
}

/// Orthogonality error ([`orthogonality_error`]) of `weight / gain` after the weight is cast
/// to `format` with round-to-nearest-even, as the caller will store it.
pub fn orthogonality_error_after_cast(
    weight: &[f64],
    rows: usize,
    cols: usize,
    gain: f64,
    format: CastFormat,
) -> f64 {
    let cast = |x: f64| format.round(x) / gain;
    orthogonality_error_of(weight, rows, cols, cast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::StreamVersion;

    #[test]
    fn haar_is_orthogonal_for_many_shapes() {
        let shapes = [
            (1, 1),
            (1, 7),
            (7, 1),
            (5, 5),
            (3, 17),
            (17, 3),
            (64, 64),
            (40, 130),
            (130, 40),
            (300, 300),
        ];
        for (seed, &(r, c)) in shapes.iter().enumerate() {
            for gain in [1.0, 0.5, 2.5] {
                let mut s = Stream::new(seed as u64, "w", "orthogonal");
                let m = haar_orthogonal(r, c, gain, &mut s);
                let unit: Vec<f64> = m.iter().map(|x| x / gain).collect();
                let e = orthogonality_error(&unit, r, c);
                assert!(e < 1e-12, "{r}x{c} gain {gain}: error {e}");
            }
        }
        assert!(haar_orthogonal(0, 5, 1.0, &mut Stream::new(0, "w", "o")).is_empty());
    }

    #[test]
    fn haar_sign_check() {
        // schemes.md §0.3: ≥1000 draws of 16×16; mean of M[0,0] within 3/√(1000·16) of 0,
        // diagonal mean not biased positive.
        let draws = 1000;
        let mut s = Stream::new(42, "haar", "orthogonal");
        let (mut m00, mut diag) = (0.0, 0.0);
        for _ in 0..draws {
            let m = haar_orthogonal(16, 16, 1.0, &mut s);
            m00 += m[0];
            diag += (0..16).map(|i| m[i * 16 + i]).sum::<f64>() / 16.0;
        }
        let tol = 3.0 / ((draws * 16) as f64).sqrt();
        assert!(
            (m00 / draws as f64).abs() < tol,
            "mean M00 {}",
            m00 / draws as f64
        );
        // entries have variance 1/16; the diag mean of one draw has std ≤ 1/16·… ≤ 0.25/4
        assert!(
            (diag / draws as f64).abs() < tol,
            "mean diag {}",
            diag / draws as f64
        );
    }

    #[test]
    fn both_routes_are_orthogonal_and_v1_keeps_householder() {
        // v2 takes CholeskyQR from 2:1 on, tall and wide; v1 stays on Householder (its values
        // are pinned by the golden hashes)
        for (seed, &(r, c)) in [(600, 300), (300, 600), (2000, 64), (64, 2000), (599, 300)]
            .iter()
            .enumerate()
        {
            for v in StreamVersion::ALL {
                let m =
                    haar_orthogonal(r, c, 1.5, &mut Stream::versioned(v, seed as u64, "w", "o"));
                let unit: Vec<f64> = m.iter().map(|x| x / 1.5).collect();
                let e = orthogonality_error(&unit, r, c);
                assert!(e < 1e-13, "{v} {r}x{c}: error {e}");
            }
        }
        // same G, same Q up to rounding: the two routes agree where they see the same draw
        // (the wide shape draws G column by column in both)
        let mut s = Stream::versioned(StreamVersion::V2, 3, "w", "o");
        let chol = haar_orthogonal(64, 2000, 1.0, &mut s.clone());
        let house = householder_haar(64, 2000, 1.0, &mut s);
        let diff = chol
            .iter()
            .zip(&house)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(diff < 1e-12, "CholeskyQR vs Householder: {diff}");
    }

    #[test]
    fn qr_is_thread_count_independent() {
        for (r, c) in [(600, 500), (1200, 500)] {
            qr_is_thread_count_independent_at(r, c);
        }
    }

    fn qr_is_thread_count_independent_at(r: usize, c: usize) {
        let run = || haar_orthogonal(r, c, 1.0, &mut Stream::new(5, "big", "orthogonal"));
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(run);
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap()
            .install(run);
        assert!(
            one.iter()
                .zip(&many)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
    }

    #[test]
    fn cast_errors_are_reported() {
        let mut s = Stream::new(1, "w", "orthogonal");
        let m = haar_orthogonal(128, 128, 1.0, &mut s);
        let e32 = orthogonality_error_after_cast(&m, 128, 128, 1.0, CastFormat::F32);
        let e16 = orthogonality_error_after_cast(&m, 128, 128, 1.0, CastFormat::F16);
        let eb16 = orthogonality_error_after_cast(&m, 128, 128, 1.0, CastFormat::Bf16);
        // §0.3 oracle for f32 output: ≤ 1e-5; halves are much coarser but bounded.
        assert!(e32 < 1e-5, "f32 {e32}");
        assert!(e16 > e32 && e16 < 5e-3, "f16 {e16}");
        assert!(eb16 > e16 && eb16 < 5e-2, "bf16 {eb16}");
    }

    #[test]
    fn density_counts_nonzeros() {
        assert_eq!(density(&[0.0, 1.0, -2.0, 0.0]), 0.5);
        assert_eq!(density(&[]), 0.0);
    }

    #[test]
    fn orthogonality_error_is_the_max_deviation_of_the_smaller_gram() {
        // A non-orthogonal matrix, both orientations, against the definition.
        for (rows, cols) in [(3, 7), (7, 3), (40, 40), (65, 130)] {
            let w: Vec<f64> = (0..rows * cols)
                .map(|k| ((k * 7919) % 101) as f64 / 101.0 - 0.5)
                .collect();
            let n = rows.min(cols);
            let mut want: f64 = 0.0;
            for a in 0..n {
                for b in 0..n {
                    let dot: f64 = if rows <= cols {
                        (0..cols).map(|k| w[a * cols + k] * w[b * cols + k]).sum()
                    } else {
                        (0..rows).map(|k| w[k * cols + a] * w[k * cols + b]).sum()
                    };
                    let target = if a == b { 1.0 } else { 0.0 };
                    want = want.max((dot - target).abs());
                }
            }
            let got = orthogonality_error(&w, rows, cols);
            assert!(
                (got - want).abs() < 1e-12 * want.max(1.0),
                "{rows}×{cols}: {got} vs {want}"
            );
        }
    }
}
