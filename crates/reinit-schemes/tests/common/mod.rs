//! Small dense helpers for the oracle tests (faer for products and singular values).
#![allow(dead_code)]

use faer::Mat;

/// Row-major `r × c` buffer to a faer matrix.
pub fn mat(w: &[f64], r: usize, c: usize) -> Mat<f64> {
    assert_eq!(w.len(), r * c);
    Mat::from_fn(r, c, |i, j| w[i * c + j])
}

pub fn singular_values(m: &Mat<f64>) -> Vec<f64> {
    m.singular_values().expect("svd converges")
}

pub fn matvec(w: &[f64], r: usize, c: usize, x: &[f64]) -> Vec<f64> {
    (0..r)
        .map(|i| (0..c).map(|j| w[i * c + j] * x[j]).sum())
        .collect()
}

pub fn norm2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

pub fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (m, x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n)
}

/// Deterministic pseudo-random test input (not the library's stream).
pub fn input(n: usize, seed: u64) -> Vec<f64> {
    let mut s = reinit_schemes::Stream::new(seed, "test-input", "tests");
    (0..n).map(|_| s.normal()).collect()
}

/// Naive 2-D convolution, stride 1, zero padding `pad` (begin, end) on both axes,
/// input `[c_in][h][w]`, weight `[groups·n_out][n_in][kh][kw]`, output `[c_out][h'][w']`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f64],
    c_in: usize,
    h: usize,
    w: usize,
    weight: &[f64],
    c_out: usize,
    k: (usize, usize),
    groups: usize,
    pad: (usize, usize),
) -> (Vec<f64>, usize, usize) {
    let (kh, kw) = k;
    let ho = h + pad.0 + pad.1 + 1 - kh;
    let wo = w + pad.0 + pad.1 + 1 - kw;
    let (n_in, n_out) = (c_in / groups, c_out / groups);
    let mut y = vec![0.0; c_out * ho * wo];
    for g in 0..groups {
        for o in 0..n_out {
            let oc = g * n_out + o;
            for py in 0..ho {
                for px in 0..wo {
                    let mut acc = 0.0;
                    for i in 0..n_in {
                        let ic = g * n_in + i;
                        for a in 0..kh {
                            for b in 0..kw {
                                let iy = py as isize + a as isize - pad.0 as isize;
                                let ix = px as isize + b as isize - pad.0 as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                acc += weight[((oc * n_in + i) * kh + a) * kw + b]
                                    * x[(ic * h + iy as usize) * w + ix as usize];
                            }
                        }
                    }
                    y[(oc * ho + py) * wo + px] = acc;
                }
            }
        }
    }
    (y, ho, wo)
}
