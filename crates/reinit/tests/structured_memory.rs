//! Structured schemes on external data within issue 8's memory bound (issue 19): peak RSS
//! ≤ largest tensor + 64 MiB, on two 64 MiB float32 MatMul weights of 2¹⁶ × 2⁸ (one tall
//! and one wide). `orthogonal` (and `delta-orthogonal`, plain orthogonal on a linear layer,
//! as `critical` is) is written band by band, in both band orders (rows of `A` for the wide
//! weight stored transposed, rows of `Aᵀ` for the tall one); EOI and IDInit as sparse
//! entries, EOI without its masks (not asked for). Built whole in f64 each needed
//! 2 × 128 MiB at once. The written weights are read back: orthogonality (≤ 1e-6 on the
//! stored float32 values), EOI's density, IDInit's pattern.

mod common;

use std::time::Duration;

use common::*;

/// `max |D − g²·I| / g²` over the Gram matrix `D` of the columns `picked` of the
/// row-major `rows × cols` matrix (`g²` the mean of its diagonal), in f64.
fn column_orthogonality(m: &[f32], rows: usize, cols: usize, picked: &[usize]) -> f64 {
    let n = picked.len();
    let mut d = vec![0.0f64; n * n];
    for row in m.chunks_exact(cols).take(rows) {
        for (p, &i) in picked.iter().enumerate() {
            let x = row[i] as f64;
            for (q, &j) in picked.iter().enumerate().take(p + 1) {
                d[p * n + q] += x * row[j] as f64;
            }
        }
    }
    let g2 = (0..n).map(|p| d[p * n + p]).sum::<f64>() / n as f64;
    let mut err: f64 = 0.0;
    for p in 0..n {
        for q in 0..=p {
            let target = if p == q { g2 } else { 0.0 };
            err = err.max((d[p * n + q] - target).abs() / g2);
        }
    }
    err
}

/// Rewrites `input` with `scheme` into `out`; returns the run's peak RSS in bytes.
fn rewrite_peak(input: &std::path::Path, out: &std::path::Path, scheme: &[&str]) -> u64 {
    let mut args = vec!["--scheme"];
    args.extend_from_slice(scheme);
    args.extend([
        input.to_str().unwrap(),
        "--seed",
        "3",
        "-q",
        "-o",
        out.to_str().unwrap(),
    ]);
    run_peak_rss(&args, Duration::from_millis(10))
}

fn stored_f32(path: &std::path::Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
#[cfg(target_os = "linux")]
fn structured_schemes_on_external_data_stay_within_the_memory_bound() {
    let (short, long) = (256u64, 65536u64);
    let tmp = tempfile::tempdir().unwrap();
    // W0: stored 256 × 65536 (canonical 65536 × 256, tall); W1: stored 65536 × 256
    // (canonical 256 × 65536, wide)
    let input = mlp(
        &tmp.path().join("in"),
        "tall.onnx",
        &[short, long, short],
        true,
    );
    let tensor = short * long * 4;
    let bound = tensor + (64 << 20);
    for scheme in ["orthogonal", "delta-orthogonal", "eoi", "idinit"] {
        let out = tmp.path().join(format!("{scheme}.onnx"));
        // (no --mask-out: EOI's masks, one byte a value, are then not computed)
        let peak = rewrite_peak(&input, &out, &[scheme]);
        eprintln!(
            "{scheme}, 2 × {} MiB external: peak RSS {:.0} MiB, bound {} MiB",
            tensor >> 20,
            peak as f64 / (1 << 20) as f64,
            bound >> 20
        );
        assert!(
            peak <= bound,
            "{scheme}: peak RSS {:.0} MiB > largest tensor + 64 MiB = {} MiB",
            peak as f64 / (1 << 20) as f64,
            bound >> 20
        );
        let data = tmp.path().join(format!("{scheme}.onnx.data"));
        let values = stored_f32(&data);
        std::fs::remove_file(&data).unwrap();
        assert_eq!(values.len() as u64 * 4, 2 * tensor);
        let (w0, w1) = values.split_at((short * long) as usize);
        let (short, long) = (short as usize, long as usize);
        match scheme {
            "orthogonal" | "delta-orthogonal" => {
                // 40 of the 256 orthonormal vectors of each: the columns of the stored W1
                // (Mᵀ of a wide M), and the columns of W0's canonical M (the stored W0
                // transposed back).
                let picked: Vec<usize> = (0..40).map(|k| (k * 97 + 5) % short).collect();
                let e1 = column_orthogonality(w1, long, short, &picked);
                let mut w0t = vec![0f32; w0.len()];
                for (i, row) in w0.chunks_exact(long).enumerate() {
                    for (j, &x) in row.iter().enumerate() {
                        w0t[j * short + i] = x;
                    }
                }
                let e0 = column_orthogonality(&w0t, long, short, &picked);
                assert!(
                    e0 <= 1e-6 && e1 <= 1e-6,
                    "orthogonality errors {e0:e} (W0), {e1:e} (W1)"
                );
            }
            "eoi" => {
                // default density 0.05 (uniform over the layers), kept to the nearest
                // rotation
                for w in [w0, w1] {
                    let d = w.iter().filter(|&&x| x != 0.0).count() as f64 / w.len() as f64;
                    assert!((d - 0.05).abs() < 1e-3, "eoi density {d}");
                }
            }
            _ => {
                // identity-like: one non-zero per row of the tall canonical W0
                let nnz = w0.iter().filter(|&&x| x != 0.0).count();
                assert_eq!(nnz, long, "idinit non-zeros of W0");
            }
        }
    }
}
