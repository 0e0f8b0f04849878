//! `verify --device cuda` against `--device cpu` on a fixture: same schemes,
//! seed and data order, so the probes and the loss curve must agree to float
//! tolerance (the GPU sums in another order, so not bit for bit), and the
//! verdicts must be the same.
//!
//! Runs only where it can: a binary built with `--features cuda` and a CUDA
//! device. Otherwise it prints why it skipped (the CLI's own error) and passes;
//! CI has neither, and `.ci/cuda-check` only compiles the feature.
#![cfg(feature = "verify")]

mod common;

use std::process::Command;

use common::{bin, fixtures};
use serde_json::Value;

fn verify_json(device: &str) -> Result<Value, String> {
    let out = Command::new(bin())
        .arg("verify")
        .arg(fixtures().join("mlp_tanh.onnx"))
        .args(["--schemes", "he,orthogonal", "--seed", "5", "--steps", "30"])
        .args(["--device", device, "--json", "--quiet"])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-6)
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn cuda_run_matches_the_cpu_run() {
    let gpu = match verify_json("cuda") {
        Ok(doc) => doc,
        // Both "this build has no CUDA support" and a missing device or
        // driver are reported as `--device cuda: …`; anything else is a bug.
        Err(stderr) if stderr.contains("--device cuda:") => {
            eprintln!("SKIP: no CUDA run here: {}", stderr.trim());
            return;
        }
        Err(stderr) => panic!("verify --device cuda failed: {stderr}"),
    };
    let cpu = verify_json("cpu").expect("the CPU run");
    let (gpu_runs, cpu_runs) = (
        gpu["runs"].as_array().unwrap(),
        cpu["runs"].as_array().unwrap(),
    );
    assert_eq!(gpu_runs.len(), cpu_runs.len());
    for (g, c) in gpu_runs.iter().zip(cpu_runs) {
        let scheme = &c["scheme"];
        assert_eq!(g["scheme"], *scheme);
        let (gl, cl) = (numbers(&g["loss"]), numbers(&c["loss"]));
        assert_eq!(gl.len(), cl.len(), "{scheme}: steps");
        // Step 0 sees the same weights and batch: only summation order differs.
        assert!(
            close(gl[0], cl[0], 1e-4),
            "{scheme}: first loss {gl:?} vs {cl:?}"
        );
        // Later steps compound the rounding differences; 30 steps stay close.
        for (step, (a, b)) in gl.iter().zip(&cl).enumerate() {
            assert!(close(*a, *b, 2e-2), "{scheme}: step {step}: {a} vs {b}");
        }
        for key in ["min_sv", "max_sv"] {
            let (a, b) = (
                g["jacobian"][key].as_f64().unwrap(),
                c["jacobian"][key].as_f64().unwrap(),
            );
            assert!(close(a, b, 1e-3), "{scheme}: jacobian {key} {a} vs {b}");
        }
        assert_eq!(g["verdict"], c["verdict"], "{scheme}: verdict");
    }
}
