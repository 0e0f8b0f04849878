//! Determinism (issue 7): for every scheme, the same seed gives the same sha256
//! across two runs and across RAYON_NUM_THREADS=1 and 2 — model and external data.

mod common;

use common::*;

/// Every scheme the schemes crate knows, and `auto`.
fn schemes() -> impl Iterator<Item = &'static str> {
    reinit_schemes::scheme_names().chain(["auto"])
}
const MODELS: &[&str] = &[
    "tiny_resnet_bn_external.onnx",
    "tiny_transformer_tied_nofold.onnx",
    "mlp_relu.onnx",
];

#[test]
fn same_seed_same_sha256_across_runs_and_thread_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for model in MODELS {
        let input = copy_fixture(model, &tmp.path().join("in"));
        for scheme in schemes() {
            let mut seen = Vec::new();
            for (run_no, threads) in ["1", "2", "1", "2"].iter().enumerate() {
                let dir = tmp.path().join(format!("{model}-{scheme}-{run_no}"));
                std::fs::create_dir(&dir).unwrap();
                let out = dir.join("out.onnx"); // same file name: it is recorded as the data location
                run_ok(
                    &[
                        input.to_str().unwrap(),
                        "--scheme",
                        scheme,
                        "--seed",
                        "2024",
                        "-q",
                        "-o",
                        out.to_str().unwrap(),
                    ],
                    &[("RAYON_NUM_THREADS", threads)],
                );
                let mut h = sha256(&out);
                let data = dir.join("out.onnx.data");
                if data.exists() {
                    h.push_str(&sha256(&data));
                }
                seen.push((threads.to_string(), h));
            }
            if seen.iter().any(|(_, h)| *h != seen[0].1) {
                failures.push(format!("{model} {scheme}: {seen:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "not deterministic:\n{}",
        failures.join("\n")
    );
}

#[test]
fn different_seeds_give_different_files() {
    let tmp = tempfile::tempdir().unwrap();
    let input = fixtures().join("mlp_relu.onnx");
    for scheme in ["he", "orthogonal", "eoi", "relu-share"] {
        let outs: Vec<String> = ["1", "2"]
            .iter()
            .map(|seed| {
                let out = tmp.path().join(format!("{scheme}-{seed}.onnx"));
                run_ok(
                    &[
                        input.to_str().unwrap(),
                        "--scheme",
                        scheme,
                        "--seed",
                        seed,
                        "-q",
                        "-o",
                        out.to_str().unwrap(),
                    ],
                    &[],
                );
                sha256(&out)
            })
            .collect();
        assert_ne!(outs[0], outs[1], "{scheme}");
    }
}
