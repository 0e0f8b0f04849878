//! `verify` end to end: two initialisations side by side, JSON, table, plots.

use std::path::PathBuf;

use reinit_candle::{TaskSize, TrainConfig, VerifyConfig, render_table, verify};
use reinit_onnx::Model;

fn fixture(name: &str) -> Model {
    Model::load(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(name),
    )
    .unwrap()
}

#[test]
fn verify_reports_runs_side_by_side_with_plots() {
    let dir = std::env::temp_dir().join(format!("reinit-candle-verify-{}", std::process::id()));
    let config = VerifyConfig {
        train: TrainConfig {
            steps: 20,
            batch: 16,
            size: TaskSize {
                train: 128,
                heldout: 64,
            },
            ..TrainConfig::default()
        },
        plot_dir: Some(dir.clone()),
        ..VerifyConfig::default()
    };
    let models = vec![
        ("stored".to_string(), fixture("mlp_tanh.onnx")),
        ("stored-relu".to_string(), fixture("mlp_relu.onnx")),
    ];
    let report = verify(&models, &config).unwrap();
    assert_eq!(report.runs.len(), 2);
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    for run in json["runs"].as_array().unwrap() {
        for key in [
            "scheme",
            "loss",
            "final_loss",
            "heldout",
            "verdict",
            "signal",
            "grad_norms",
            "jacobian",
        ] {
            assert!(run.get(key).is_some(), "missing {key}");
        }
        for key in ["mean_sq_sv", "var_sq_sv", "min_sv", "max_sv"] {
            assert!(run["jacobian"].get(key).is_some(), "missing jacobian.{key}");
        }
        assert_eq!(run["loss"].as_array().unwrap().len(), 20);
        assert_eq!(run["signal"].as_array().unwrap().len(), 12);
        // 10 outputs → exact Jacobian with 10 singular values
        assert_eq!(run["jacobian"]["method"], "exact");
        assert_eq!(
            run["jacobian"]["singular_values"].as_array().unwrap().len(),
            10
        );
    }
    let table = render_table(&report);
    eprintln!("{table}");
    assert!(table.contains("stored-relu"));
    for f in ["loss.svg", "signal.svg", "jacobian_sv.svg"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        assert!(text.len() > 100, "{f}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn jacobian_of_a_large_output_uses_projections() {
    let config = VerifyConfig {
        train: TrainConfig {
            steps: 2,
            batch: 4,
            size: TaskSize {
                train: 16,
                heldout: 4,
            },
            ..TrainConfig::default()
        },
        probe_batch: 4,
        ..VerifyConfig::default()
    };
    let report = verify(
        &[("stored".into(), fixture("conv_transpose2d_fused.onnx"))],
        &config,
    )
    .unwrap();
    let j = report.runs[0].jacobian.as_ref().unwrap();
    assert_eq!(j.method, "projection");
    assert!(j.mean_sq_sv.is_finite() && j.mean_sq_sv > 0.0);
}
