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
    for stem in ["loss", "signal", "jacobian_sv", "grad_norms"] {
        let svg = std::fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{stem}"
        );
        // Both runs are in the legend.
        assert!(svg.contains("stored-relu"), "{stem}");
        let png = std::fs::read(dir.join(format!("{stem}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{stem}");
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

/// `fixture` with its first input's dims replaced: `Some(v)` fixed, `None`
/// dynamic with the symbolic name at the same position of `names`.
fn with_input_dims(name: &str, dims: &[Option<i64>], names: &[&str]) -> Model {
    use prost::Message;
    use reinit_onnx::proto::tensor_shape_proto::{Dimension, dimension::Value};
    use reinit_onnx::proto::type_proto::Value as Ty;
    let mut proto = fixture(name).proto().clone();
    let graph = proto.graph.as_mut().unwrap();
    let Some(Ty::TensorType(t)) = graph.input[0]
        .r#type
        .as_mut()
        .and_then(|t| t.value.as_mut())
    else {
        panic!("tensor input")
    };
    t.shape.as_mut().unwrap().dim = dims
        .iter()
        .zip(names)
        .map(|(d, n)| Dimension {
            value: Some(match d {
                Some(v) => Value::DimValue(*v),
                None => Value::DimParam(n.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    Model::from_bytes(proto.encode_to_vec(), None).unwrap()
}

fn tiny_config(steps: usize, batch: usize) -> VerifyConfig {
    VerifyConfig {
        train: TrainConfig {
            steps,
            batch,
            size: TaskSize {
                train: 16,
                heldout: 8,
            },
            ..TrainConfig::default()
        },
        probe_batch: 2,
        ..VerifyConfig::default()
    }
}

/// A ResNet export with dynamic batch and height runs without a shape: the
/// height takes the fixed width (square), the batch comes from the config, and
/// the report records where each size came from.
#[test]
fn dynamic_dims_get_defaults_recorded_in_the_report() {
    let model = with_input_dims(
        "tiny_resnet_fused.onnx",
        &[None, Some(3), None, Some(32)],
        &["N", "C", "H", "W"],
    );
    let report = verify(&[("stored".into(), model)], &tiny_config(2, 2)).unwrap();
    let input = &report.inputs[0];
    assert_eq!(input.shape, vec![2, 3, 32, 32]);
    assert_eq!(input.sources[0], "batch");
    assert_eq!(input.sources[1], "model");
    assert!(
        input.sources[2].starts_with("default: square"),
        "{:?}",
        input.sources
    );
    assert_eq!(input.fill, "task data");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(
        json["inputs"][0]["shape"],
        serde_json::json!([2, 3, 32, 32])
    );
    assert!(
        json["task"]["description"]
            .as_str()
            .unwrap()
            .contains("2 of the output's 10 classes")
    );
    assert!(render_table(&report).contains("default: square"));
}

/// A sequence input with a dynamic length gets length 128 by default; a token
/// model's shape given with the batch (`tokens:3x16`) sets the batch too, and
/// disagrees with an explicit `--batch` as a usage error.
#[test]
fn sequence_defaults_to_128_and_input_shape_sets_the_batch() {
    let model = with_input_dims(
        "conv1d_fused.onnx",
        &[None, Some(4), None],
        &["N", "C", "L"],
    );
    let report = verify(&[("stored".into(), model)], &tiny_config(1, 2)).unwrap();
    assert_eq!(report.inputs[0].shape, vec![2, 4, 128]);
    assert_eq!(report.inputs[0].sources[2], "default: sequence length 128");

    let model = || with_input_dims("torch_transformer.onnx", &[None, None], &["batch", "seq"]);
    let mut config = tiny_config(1, 2);
    config.train.shapes = Some("tokens:3x16".parse().unwrap());
    let report = verify(&[("stored".into(), model())], &config).unwrap();
    assert_eq!(report.inputs[0].shape, vec![3, 16]);
    assert_eq!(report.inputs[0].sources[1], "--input-shape");
    assert_eq!(report.batch, 3);
    config.batch_given = true;
    config.train.batch = 2;
    let err = verify(&[("stored".into(), model())], &config).unwrap_err();
    assert!(matches!(err, reinit_candle::ExecError::Usage(_)), "{err}");
}

/// `fixture` with a Dropout after the activation `activation` (opset 17: the
/// ratio input left out, so the default 0.5).
fn with_dropout_after(name: &str, activation: &str) -> Model {
    use prost::Message;
    use reinit_onnx::proto::NodeProto;
    let mut proto = fixture(name).proto().clone();
    let graph = proto.graph.as_mut().unwrap();
    let at = graph
        .node
        .iter()
        .position(|n| n.output.first().map(String::as_str) == Some(activation))
        .expect("activation node");
    let dropped = format!("{activation}_dropped");
    for node in graph.node.iter_mut().skip(at + 1) {
        for input in node.input.iter_mut().filter(|i| *i == activation) {
            *input = dropped.clone();
        }
    }
    graph.node.insert(
        at + 1,
        NodeProto {
            op_type: Some("Dropout".into()),
            input: vec![activation.into()],
            output: vec![dropped],
            ..Default::default()
        },
    );
    Model::from_bytes(proto.encode_to_vec(), None).unwrap()
}

/// With Dropout the probes still come from the first training step, with
/// Dropout off in that step: the signal and gradient-norm probes and the
/// first loss equal those of the same network without the Dropout node, while
/// the later (dropped) training steps differ.
#[test]
fn dropout_models_probe_on_the_first_step_with_dropout_off() {
    let relu = "/net/net.1/Relu_output_0";
    let run = |model: Model| {
        let report = verify(&[("stored".into(), model)], &tiny_config(4, 8)).unwrap();
        report.runs.into_iter().next().unwrap()
    };
    let plain = run(fixture("mlp_relu.onnx"));
    let dropped = run(with_dropout_after("mlp_relu.onnx", relu));
    assert_eq!(plain.signal, dropped.signal);
    assert_eq!(plain.grad_norms, dropped.grad_norms);
    assert_eq!(plain.loss[0], dropped.loss[0]);
    assert_ne!(plain.loss[1..], dropped.loss[1..], "Dropout was not active");
}
