//! Big models (issue 7), ignored by default: generates a model with
//! `REINIT_BIG_LAYERS` (3) float32 tensors of `REINIT_BIG_N`² (16384² = 1 GiB
//! each) in one external data file (created sparse), rewrites it with
//! `--scheme he`, and samples the child's peak RSS (VmHWM in /proc/PID/status).
//! Needs ~2 × layers GiB of free disk under $TMPDIR (the output data is real).
//!
//!     cargo test -p reinit --test big_model -- --ignored --nocapture
//!     REINIT_BIG_N=8192 cargo test -p reinit --test big_model -- --ignored --nocapture   # 256 MiB tensors
//!
//! The bound asserted is issue 8's: peak RSS ≤ largest tensor + 64 MiB (issue 7
//! asks for + 256 MiB).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
#[ignore = "writes several GB; run by hand (see the file's doc comment)"]
fn rewrite_several_gb_of_external_data_within_the_memory_bound() {
    let n: u64 = std::env::var("REINIT_BIG_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16384);
    let layers: usize = std::env::var("REINIT_BIG_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let tmp = tempfile::tempdir().unwrap();
    let input = external_mlp(&tmp.path().join("in"), "big.onnx", n, layers);
    let out = tmp.path().join("out.onnx");
    let tensor = n * n * 4;
    let t0 = Instant::now();
    let peak = run_peak_rss(
        &[
            input.to_str().unwrap(),
            "--scheme",
            "he",
            "--seed",
            "1",
            "-q",
            "-o",
            out.to_str().unwrap(),
        ],
        Duration::from_millis(20),
    );
    let elapsed = t0.elapsed();
    let data_len = std::fs::metadata(tmp.path().join("out.onnx.data"))
        .unwrap()
        .len();
    assert_eq!(data_len, tensor * layers as u64);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "big model: {layers} × {n}² f32 = {:.0} MiB external data, largest tensor {:.0} MiB; \
         peak RSS (VmHWM, sampled every 20 ms) {:.0} MiB; {:.1} s",
        mib(tensor * layers as u64),
        mib(tensor),
        mib(peak),
        elapsed.as_secs_f64()
    );
    // Issue 7's bound is largest tensor + 256 MiB; issue 8's, for external
    // weights, largest tensor + 64 MiB. The i.i.d. weights are streamed, so
    // the peak is far below either.
    let bound = tensor + (64 << 20);
    assert!(
        peak <= bound,
        "peak RSS {:.0} MiB > largest tensor + 64 MiB = {:.0} MiB",
        mib(peak),
        mib(bound)
    );
}
