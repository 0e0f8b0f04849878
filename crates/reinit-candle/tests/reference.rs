//! Eval-mode outputs match onnxruntime on every fixture (reference values from
//! `make_reference.py`).

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use reinit_candle::{Executor, Mode};
use reinit_onnx::Model;
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn input(spec: &Value, dtype: reinit_onnx::DType) -> Tensor {
    let shape: Vec<usize> = spec["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let n: usize = shape.iter().product();
    match spec["kind"].as_str().unwrap() {
        "sin" => {
            let v: Vec<f32> = (0..n)
                .map(|i| (0.1 * i as f64 + 0.3).sin() as f32)
                .collect();
            Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
        }
        _ => {
            let m = spec["modulus"].as_i64().unwrap();
            let v: Vec<i64> = (0..n as i64).map(|i| i % m).collect();
            let t = Tensor::from_vec(v, shape, &Device::Cpu).unwrap();
            if dtype == reinit_onnx::DType::Bool {
                t.ne(0i64).unwrap()
            } else {
                t
            }
        }
    }
}

#[test]
fn eval_outputs_match_onnxruntime_on_every_fixture() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/reference.json"),
    )
    .unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (file, entry) in reference["fixtures"].as_object().unwrap() {
        let model = Model::load(fixtures().join(file)).unwrap();
        let exec = match Executor::new(&model, &Device::Cpu) {
            Ok(e) => e,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        let mut inputs = HashMap::new();
        for spec in entry["inputs"].as_array().unwrap() {
            let name = spec["name"].as_str().unwrap();
            let dtype = exec
                .inputs()
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.dtype)
                .unwrap();
            inputs.insert(name.to_string(), input(spec, dtype));
        }
        let mode = if entry["bn_training"].as_bool().unwrap() {
            Mode::Probe
        } else {
            Mode::Eval
        };
        let tol = if std::env::var("REF_TOL0").is_ok() {
            0.0
        } else if entry["half_precision"].as_bool().unwrap() {
            2e-3
        } else {
            1e-4
        };
        let out = match exec.forward(&inputs, mode) {
            Ok(o) => o,
            Err(e) => {
                failures.push(format!("{file}: {e}"));
                continue;
            }
        };
        for r in entry["outputs"].as_array().unwrap() {
            let name = r["name"].as_str().unwrap();
            let t = out.get(name).unwrap();
            let shape: Vec<usize> = r["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            if t.dims() != shape.as_slice() {
                failures.push(format!("{file}/{name}: shape {:?} vs {shape:?}", t.dims()));
                continue;
            }
            let v: Vec<f64> = t
                .to_dtype(candle_core::DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let sum: f64 = v.iter().sum();
            let sum_sq: f64 = v.iter().map(|x| x * x).sum();
            let r_sum = r["sum"].as_f64().unwrap();
            let r_abs = r["sum_abs"].as_f64().unwrap();
            let r_sq = r["sum_sq"].as_f64().unwrap();
            let first: Vec<f64> = r["first"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            let scale = first.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-12);
            let err_first = first
                .iter()
                .zip(&v)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
                / scale;
            let err_sum = (sum - r_sum).abs() / r_abs.max(1e-12);
            let err_sq = (sum_sq - r_sq).abs() / r_sq.max(1e-12);
            let err = err_first.max(err_sum).max(err_sq);
            if err > tol {
                failures.push(format!(
                    "{file}/{name}: relative error {err:.2e} (first {err_first:.2e}, sum {err_sum:.2e}, sum_sq {err_sq:.2e})"
                ));
            }
            checked += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 39, "only {checked} outputs checked");
}
