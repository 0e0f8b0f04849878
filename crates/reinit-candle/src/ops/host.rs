//! Host-memory plumbing for the CPU kernels (`im2col`, `norm`, `pool`):
//! borrowing a tensor's contiguous buffer without copying it, and a checked
//! strided gemm that writes straight into a caller's buffer.
//!
//! candle's `Tensor::matmul` needs its operands as tensors and returns a new
//! one, so a convolution through it copied the column matrix in, the product
//! out, and the product again into `[N, O, H, W]` order; `to_vec1` copied
//! every operand of a backward once more. Calling the `gemm` crate (the one
//! candle itself uses, same version) with explicit strides removes all of
//! those copies: products land in the output at their final place, transposes
//! are only strides, and accumulation over a batch is gemm's `read_dst`.

use candle_core::{Error, Result, Storage, Tensor, WithDType};

/// Runs `f` on the contiguous host buffer of `t` (copied once only if `t` is
/// a non-contiguous view). CPU tensors only.
pub(crate) fn with_host<T: WithDType, R>(
    t: &Tensor,
    f: impl FnOnce(&[T]) -> Result<R>,
) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Msg("host kernel: tensor is not on the CPU".into()));
    };
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::Msg("host kernel: non-contiguous tensor".into()))?;
    f(&cpu.as_slice::<T>()?[a..b])
}

/// A read-only `rows × cols` matrix inside `data` with row and column strides
/// (a transpose is the same data with the strides swapped).
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> Mat<'a, T> {
    /// Row-major `rows × cols` at the start of `data`.
    pub fn rowmajor(data: &'a [T], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs
        }
    }
}

/// gemm's thread setting: candle's (`RAYON_NUM_THREADS`, else every core).
fn parallelism() -> gemm::Parallelism {
    match candle_core::utils::get_num_threads() {
        0 | 1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `dst` row-major with
/// row stride `dst_rs`. Shapes and every index are checked before the call.
pub(crate) fn gemm<T: WithDType>(
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    a: Mat<'_, T>,
    b: Mat<'_, T>,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if b.rows != k {
        return Err(Error::Msg(format!(
            "gemm: {}x{} times {}x{}",
            a.rows, a.cols, b.rows, b.cols
        )));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let dst_last = (m - 1) * dst_rs + n - 1;
    let fits = dst_rs >= n
        && dst_last < dst.len()
        && (k == 0 || (a.last_index() < a.data.len() && b.last_index() < b.data.len()));
    if !fits {
        return Err(Error::Msg(format!(
            "gemm: operands out of bounds ({m}x{k}·{k}x{n}, dst row stride {dst_rs})"
        )));
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(T::zero());
            }
        }
        return Ok(());
    }
    // SAFETY: every element the call reads or writes was bounds-checked above
    // (the last index of each strided operand lies inside its slice, strides
    // are non-negative), and `dst` is borrowed mutably, so it aliases nothing.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            parallelism(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: Mat<'_, f64>, b: Mat<'_, f64>) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                out[i * b.cols + j] = (0..a.cols)
                    .map(|p| a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_transposes_and_accumulation_match_the_naive_product() {
        let a: Vec<f64> = (0..35).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..56).map(|i| (i as f64 * 0.11).cos()).collect();
        let am = Mat::rowmajor(&a, 5, 7);
        let bm = Mat::rowmajor(&b, 7, 8);
        let want = naive(am, bm);
        // into a wider destination (row stride 10)
        let mut dst = vec![9.0; 5 * 10];
        gemm(&mut dst, 10, false, am, bm).unwrap();
        for i in 0..5 {
            for j in 0..8 {
                assert!((dst[i * 10 + j] - want[i * 8 + j]).abs() < 1e-12);
            }
            assert_eq!(dst[i * 10 + 8], 9.0, "padding columns untouched");
        }
        // accumulate: twice the product
        gemm(&mut dst, 10, true, am, bm).unwrap();
        assert!((dst[3 * 10 + 4] - 2.0 * want[3 * 8 + 4]).abs() < 1e-12);
        // transposes as strides: (bᵀ aᵀ) = (a b)ᵀ
        let mut t = vec![0.0; 8 * 5];
        gemm(&mut t, 5, false, bm.t(), am.t()).unwrap();
        for i in 0..5 {
            for j in 0..8 {
                assert!((t[j * 5 + i] - want[i * 8 + j]).abs() < 1e-12);
            }
        }
        // shapes and bounds are checked
        assert!(gemm(&mut dst, 10, false, am, am).is_err());
        assert!(gemm(&mut dst[..20], 10, false, am, bm).is_err());
    }
}
