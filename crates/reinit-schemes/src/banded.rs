//! Haar (semi-)orthogonal matrices by CholeskyQR in bands (stream v2, shapes at least
//! 2:1), so that a weight is never held whole, not even in f64 (issue 19: peak RSS within
//! the largest tensor + 64 MiB on external data).
//!
//! Notation as in [`haar_orthogonal`](crate::haar_orthogonal): the weight `M` is `r × c`,
//! `a = max(r, c)`, `b = min(r, c)`, `A` is `M` when tall and `Mᵀ` when wide (`a × b`,
//! orthonormal columns), `G` the `a × b` Gaussian drawn in `M`'s row-major order (one
//! [`IidFill`]), `GᵀG = L·Lᵀ`, and `A = G·L⁻ᵀ·gain`. [`HaarBands::new`] makes one pass
//! over `G` in bands of rows, accumulating `GᵀG` (its lower half), and keeps only `L`;
//! the values are then produced in either of two orders, re-drawing `G` (any range of a
//! counter-based fill is producible alone):
//!
//! * **long-major** (`A` row-major): bands of rows of `A`, `G_band·L⁻ᵀ` by a triangular
//!   solve — tall weights in canonical layout, wide ones stored transposed (`MatMul(X, W)`);
//! * **short-major** (`Aᵀ` row-major): groups of rows of `Aᵀ`,
//!   `(L⁻¹)[k0..k1, 0..k1]·Gᵀ[0..k1, :]` tile by tile — wide weights in canonical layout,
//!   tall ones stored transposed (a GPT's `lm_head`). Row `k` of `Aᵀ` depends on rows
//!   `0..=k` of `Gᵀ` only, so a group re-draws `k1` rows of `Gᵀ`: about `(groups + 1) / 2`
//!   draws of `G` in all, for no buffer of the weight's size.
//!
//! Both orders equal the same Q in exact arithmetic and agree to ~1e-15; a weight's
//! values come from the order its layout streams in (canonical values from the canonical
//! one), every operation in a fixed order with a fixed task count, so they do not depend
//! on the thread count.

use std::fmt;
use std::sync::Arc;

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt::factor as llt;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{BlockStructure, matmul as triangular_matmul};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::linalg::triangular_solve::solve_lower_triangular_in_place;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use rayon::prelude::*;

use crate::rng::{IidFill, Law, Stream, StreamVersion};

/// Tall enough for CholeskyQR: a Gaussian `a × b` with `a ≥ 2b` has condition number
/// ≈ (1 + √½)/(1 − √½) ≈ 5.8 at worst, so its orthogonality error (≈ κ²·ε) stays ~1e-14.
pub(crate) const CHOLESKY_QR_RATIO: usize = 2;

/// Values of `G` per band of the Gram pass and of the long-major order (2 MiB of f64).
const BAND_VALUES: usize = 1 << 18;
/// Values of `Aᵀ` per group of rows of the short-major order (16 MiB of f64).
const GROUP_VALUES: usize = 1 << 21;
/// Values of `Gᵀ` per tile of a short-major group (4 MiB of f64).
const TILE_VALUES: usize = 1 << 19;
/// Below this many elements of `G` the products run sequentially; above, in a fixed
/// number of faer tasks (so the result never depends on the pool size).
const PAR_THRESHOLD: usize = 256 * 256;
const TASKS: usize = 2;

/// An `r × c` Haar (semi-)orthogonal matrix times `gain` whose values are produced band
/// by band (see the module doc): `G`'s fill and the Cholesky factor of `GᵀG`.
#[derive(Clone)]
pub struct HaarBands {
    rows: usize,
    cols: usize,
    gain: f64,
    fill: IidFill,
    /// Lower Cholesky factor of `GᵀG` (`b × b`; its upper part is not read).
    l: Arc<Mat<f64>>,
}

impl fmt::Debug for HaarBands {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HaarBands")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("gain", &self.gain)
            .field("fill", &self.fill)
            .finish_non_exhaustive()
    }
}

impl PartialEq for HaarBands {
    /// `L` is a function of the fill and the shape.
    fn eq(&self, other: &Self) -> bool {
        (self.rows, self.cols, self.gain) == (other.rows, other.cols, other.gain)
            && self.fill == other.fill
    }
}

/// Whether an `r × c` weight on stream `version` takes the CholeskyQR route.
pub(crate) fn applies(r: usize, c: usize, version: StreamVersion) -> bool {
    let (a, b) = (r.max(c), r.min(c));
    version != StreamVersion::V1 && b > 0 && a >= CHOLESKY_QR_RATIO * b
}

impl HaarBands {
    /// Reserves `G`'s fill on `rng` and factors `GᵀG` in one banded pass; `None` when the
    /// Gram matrix is not numerically positive definite (not reached for Gaussian
    /// matrices of this aspect; the fill is spent either way). Call only where
    /// [`applies`].
    pub(crate) fn new(r: usize, c: usize, gain: f64, rng: &mut Stream) -> Option<HaarBands> {
        debug_assert!(applies(r, c, rng.version()));
        let fill = rng.iid(Law::Normal { std: 1.0 }, r * c);
        let mut bands = HaarBands {
            rows: r,
            cols: c,
            gain,
            fill,
            l: Arc::new(Mat::zeros(0, 0)),
        };
        let (a, b) = (bands.long(), bands.short());
        let par = bands.par();
        let mut gram = Mat::<f64>::zeros(b, b);
        let step = bands.band_rows();
        let mut buf = vec![0.0; step * b];
        for i0 in (0..a).step_by(step) {
            let i1 = (i0 + step).min(a);
            let g = bands.draw_rows(i0, i1, &mut buf);
            triangular_matmul(
                gram.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                g.transpose(),
                BlockStructure::Rectangular,
                g,
                BlockStructure::Rectangular,
                1.0,
                par,
            );
        }
        let mut mem = MemBuffer::new(llt::cholesky_in_place_scratch::<f64>(
            b,
            par,
            Default::default(),
        ));
        // GᵀG = L·Lᵀ, L lower
        llt::cholesky_in_place(
            gram.as_mut(),
            Default::default(),
            par,
            MemStack::new(&mut mem),
            Default::default(),
        )
        .ok()?;
        bands.l = Arc::new(gram);
        Some(bands)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The scale the orthonormal matrix was multiplied by.
    pub fn gain(&self) -> f64 {
        self.gain
    }

    fn long(&self) -> usize {
        self.rows.max(self.cols)
    }

    fn short(&self) -> usize {
        self.rows.min(self.cols)
    }

    fn tall(&self) -> bool {
        self.rows > self.cols
    }

    fn par(&self) -> Par {
        if self.len() >= PAR_THRESHOLD {
            Par::rayon(TASKS)
        } else {
            Par::Seq
        }
    }

    fn band_rows(&self) -> usize {
        (BAND_VALUES / self.short()).max(1)
    }

    /// Rows `i0..i1` of `G` drawn into `buf`, viewed as a `(i1 − i0) × b` matrix: G's own
    /// rows when tall (contiguous in the fill), else `b` segments of `M`'s rows.
    fn draw_rows<'b>(&self, i0: usize, i1: usize, buf: &'b mut [f64]) -> MatRef<'b, f64> {
        let (a, b, w) = (self.long(), self.short(), i1 - i0);
        let buf = &mut buf[..w * b];
        if self.tall() {
            buf.par_chunks_mut(IidFill::CHUNK)
                .enumerate()
                .for_each(|(k, piece)| self.fill.fill_range(i0 * b + k * IidFill::CHUNK, piece));
            MatRef::from_row_major_slice(buf, w, b)
        } else {
            buf.par_chunks_mut(w)
                .enumerate()
                .for_each(|(j, seg)| self.fill.fill_range(j * a + i0, seg));
            MatRef::from_column_major_slice(buf, w, b)
        }
    }

    /// Columns `i0..i1` of rows `0..k1` of `Gᵀ` drawn into `buf`, as a `k1 × (i1 − i0)`
    /// matrix.
    fn draw_head<'b>(
        &self,
        k1: usize,
        i0: usize,
        i1: usize,
        buf: &'b mut [f64],
    ) -> MatRef<'b, f64> {
        let (a, b, w) = (self.long(), self.short(), i1 - i0);
        let buf = &mut buf[..k1 * w];
        if self.tall() {
            // G's rows i0..i1, their first k1 values each
            buf.par_chunks_mut(k1)
                .enumerate()
                .for_each(|(i, seg)| self.fill.fill_range((i0 + i) * b, seg));
            MatRef::from_column_major_slice(buf, k1, w)
        } else {
            // M's rows 0..k1, values i0..i1 of each
            buf.par_chunks_mut(w)
                .enumerate()
                .for_each(|(j, seg)| self.fill.fill_range(j * a + i0, seg));
            MatRef::from_row_major_slice(buf, k1, w)
        }
    }

    /// Whether the long-major order is `M`'s stored order: row-major `M` (`transposed =
    /// false`) or row-major `Mᵀ` (`true`).
    pub fn long_major(&self, transposed: bool) -> bool {
        self.tall() != transposed
    }

    /// Feeds `emit` the values in stored order — row-major `M`, or row-major `Mᵀ` when
    /// `transposed` — a band at a time (at most a few MiB each).
    pub fn for_each_stored<E>(
        &self,
        transposed: bool,
        mut emit: impl FnMut(&[f64]) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.is_empty() {
            return Ok(());
        }
        if self.long_major(transposed) {
            self.long_bands(&mut emit)
        } else {
            self.short_groups(&mut emit)
        }
    }

    /// Rows of `A` (times the gain), a band at a time.
    fn long_bands<E>(&self, emit: &mut impl FnMut(&[f64]) -> Result<(), E>) -> Result<(), E> {
        let (a, b) = (self.long(), self.short());
        let par = self.par();
        let step = self.band_rows();
        let mut buf = vec![0.0; step * b];
        let mut out = vec![0.0; step * b];
        for i0 in (0..a).step_by(step) {
            let i1 = (i0 + step).min(a);
            let w = i1 - i0;
            self.draw_rows(i0, i1, &mut buf);
            // A_band = G_band·L⁻ᵀ  ⇔  L·A_bandᵀ = G_bandᵀ, solved in place
            let mut g = if self.tall() {
                MatMut::from_row_major_slice_mut(&mut buf[..w * b], w, b)
            } else {
                MatMut::from_column_major_slice_mut(&mut buf[..w * b], w, b)
            };
            solve_lower_triangular_in_place((*self.l).as_ref(), g.as_mut().transpose_mut(), par);
            let out = &mut out[..w * b];
            if self.tall() {
                for (o, &x) in out.iter_mut().zip(buf.iter()) {
                    *o = x * self.gain;
                }
            } else {
                // buf holds A_bandᵀ row-major (b × w)
                for (i, row) in out.chunks_exact_mut(b).enumerate() {
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = buf[j * w + i] * self.gain;
                    }
                }
            }
            emit(out)?;
        }
        Ok(())
    }

    /// Rows of `Aᵀ` (times the gain), a group at a time.
    fn short_groups<E>(&self, emit: &mut impl FnMut(&[f64]) -> Result<(), E>) -> Result<(), E> {
        let (a, b) = (self.long(), self.short());
        let par = self.par();
        let mut linv = Mat::<f64>::zeros(b, b);
        invert_lower_triangular(linv.as_mut(), (*self.l).as_ref(), par);
        let group = (GROUP_VALUES / a).clamp(1, b);
        let mut out = vec![0.0; group * a];
        let mut tile = Vec::new();
        for k0 in (0..b).step_by(group) {
            let k1 = (k0 + group).min(b);
            let rows = k1 - k0;
            let width = (TILE_VALUES / k1).max(64).min(a);
            tile.resize(k1 * width, 0.0);
            let mut dst = MatMut::from_row_major_slice_mut(&mut out[..rows * a], rows, a);
            for i0 in (0..a).step_by(width) {
                let i1 = (i0 + width).min(a);
                let head = self.draw_head(k1, i0, i1, &mut tile);
                matmul(
                    dst.as_mut().submatrix_mut(0, i0, rows, i1 - i0),
                    Accum::Replace,
                    linv.as_ref().submatrix(k0, 0, rows, k1),
                    head,
                    self.gain,
                    par,
                );
            }
            emit(&out[..rows * a])?;
        }
        Ok(())
    }

    /// The whole matrix, row-major `M` (canonical).
    pub fn to_vec(&self) -> Vec<f64> {
        let mut m = Vec::with_capacity(self.len());
        self.for_each_stored(false, |piece| {
            m.extend_from_slice(piece);
            Ok::<(), ()>(())
        })
        .expect("collecting cannot fail");
        m
    }
}

/// The orthogonality error of a matrix fed band by band as row-major `A` (`a × b`, rows
/// in order) — `max |AᵀA − I|` — with `map` applied to each value (a cast, a division by
/// the gain): accumulates the `b × b` Gram matrix's lower half.
pub struct OrthogonalityCheck {
    b: usize,
    gram: Mat<f64>,
    scratch: Vec<f64>,
}

impl OrthogonalityCheck {
    pub fn new(b: usize) -> Self {
        OrthogonalityCheck {
            b,
            gram: Mat::zeros(b, b),
            scratch: Vec::new(),
        }
    }

    /// Adds whole rows of `A`.
    pub fn add_rows(&mut self, rows: &[f64], map: impl Fn(f64) -> f64 + Sync) {
        let n = rows.len() / self.b.max(1);
        self.scratch.clear();
        self.scratch.extend(rows.iter().map(|&x| map(x)));
        let a = MatRef::from_row_major_slice(&self.scratch[..n * self.b], n, self.b);
        triangular_matmul(
            self.gram.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            a.transpose(),
            BlockStructure::Rectangular,
            a,
            BlockStructure::Rectangular,
            1.0,
            faer::get_global_parallelism(),
        );
    }

    pub fn finish(self) -> f64 {
        let mut err: f64 = 0.0;
        for j in 0..self.b {
            for i in j..self.b {
                let target = if i == j { 1.0 } else { 0.0 };
                err = err.max((self.gram[(i, j)] - target).abs());
            }
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::orthogonality_error;

    fn bands(r: usize, c: usize, gain: f64, seed: u64) -> HaarBands {
        HaarBands::new(r, c, gain, &mut Stream::new(seed, "w", "orthogonal")).unwrap()
    }

    fn transpose(m: &[f64], r: usize, c: usize) -> Vec<f64> {
        let mut t = vec![0.0; m.len()];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = m[i * c + j];
            }
        }
        t
    }

    #[test]
    fn fill_ranges_equal_the_whole_fill() {
        let fill = Stream::new(4, "w", "o").iid(Law::Normal { std: 1.0 }, 3 * IidFill::CHUNK + 77);
        let whole = fill.to_vec();
        for (start, len) in [
            (0, 5),
            (3, 40),
            (31, 33),
            (64, 1),
            (IidFill::CHUNK - 7, 20),
            (100, 2 * IidFill::CHUNK),
        ] {
            let mut got = vec![0.0; len];
            fill.fill_range(start, &mut got);
            assert_eq!(got, whole[start..start + len], "{start}+{len}");
        }
    }

    #[test]
    fn both_orders_are_orthogonal_and_agree() {
        // several bands and groups in both orders: b·a past BAND_VALUES and GROUP_VALUES
        for (r, c) in [(3000, 200), (200, 3000), (700, 3), (9, 20000)] {
            let h = bands(r, c, 1.5, 2);
            let canonical = h.to_vec();
            let unit: Vec<f64> = canonical.iter().map(|x| x / 1.5).collect();
            let e = orthogonality_error(&unit, r, c);
            assert!(e < 1e-13, "{r}x{c}: {e}");
            let mut stored = Vec::new();
            h.for_each_stored(true, |p| {
                stored.extend_from_slice(p);
                Ok::<(), ()>(())
            })
            .unwrap();
            let back = transpose(&stored, c, r);
            let diff = back
                .iter()
                .zip(&canonical)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(
                diff < 1e-13,
                "{r}x{c}: long vs short order differ by {diff}"
            );
        }
    }

    #[test]
    fn the_check_accumulates_the_gram_of_the_rows() {
        let h = bands(1000, 100, 2.0, 7);
        let m = h.to_vec();
        let mut check = OrthogonalityCheck::new(100);
        for band in m.chunks(100 * 37) {
            check.add_rows(band, |x| x / 2.0);
        }
        let unit: Vec<f64> = m.iter().map(|x| x / 2.0).collect();
        let want = orthogonality_error(&unit, 1000, 100);
        let got = check.finish();
        assert!((got - want).abs() < 1e-15 && got < 1e-13, "{got} vs {want}");
    }
}
