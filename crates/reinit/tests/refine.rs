//! The refine step of a rewrite (issues 15 and 16): LSUV's scales reach the
//! written weights on every library route — `Session::write`, `to_bytes`,
//! `dry_run`, embedded and external weights — and
//! `--reset-norms` sets every norm layer's parameters.

use std::path::{Path, PathBuf};

use reinit::{PlanOptions, Session, plan};
use reinit_onnx::{Model, SaveOptions};
use reinit_schemes::NormOptions;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn lsuv_options() -> PlanOptions {
    PlanOptions {
        scheme: "lsuv".into(),
        ..Default::default()
    }
}

/// For every LSUV weight of `out`: its canonical matrix is `s·Q` with `Q`
/// orthonormal (rows or columns), `s` the scale the report gives; at least
/// one layer was actually rescaled (the pre-init alone has `s = 1`).
fn assert_scaled_as_reported(out: &Model, report: &reinit::Report) {
    let lsuv = report
        .lsuv
        .as_ref()
        .expect("the report has an LSUV section");
    assert!(!lsuv.layers.is_empty());
    assert!(
        lsuv.layers.iter().any(|l| (l.scale - 1.0).abs() > 0.05),
        "no layer rescaled: {lsuv:?}"
    );
    let analysis = reinit_graph::analyze(out);
    for layer in &lsuv.layers {
        assert!(
            (layer.output_variance - 1.0).abs() < 0.1,
            "{}: variance {}",
            layer.weight,
            layer.output_variance
        );
        let l = analysis
            .layers
            .iter()
            .find(|l| l.weight_name == layer.weight)
            .unwrap();
        if l.groups != 1 {
            continue; // orthonormal per group; the check below is for one block
        }
        let values = out.read_f64(l.weight).unwrap();
        let canonical = l.stored_to_canonical(&values);
        let (rows, cols) = (l.n_out, canonical.len() / l.n_out);
        // The smaller Gram matrix of an orthonormal matrix is the identity.
        let (n, m, at) = if rows <= cols {
            (
                rows,
                cols,
                Box::new(|i: usize, k: usize| canonical[i * cols + k]) as Box<dyn Fn(_, _) -> f64>,
            )
        } else {
            (
                cols,
                rows,
                Box::new(|i: usize, k: usize| canonical[k * cols + i]) as Box<dyn Fn(_, _) -> f64>,
            )
        };
        let s2 = layer.scale * layer.scale;
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..m).map(|k| at(i, k) * at(j, k)).sum();
                let want = if i == j { s2 } else { 0.0 };
                assert!(
                    (dot - want).abs() < 1e-4 * s2.max(1.0),
                    "{}: Gram[{i}][{j}] = {dot}, want {want} (scale {})",
                    layer.weight,
                    layer.scale
                );
            }
        }
        let entry = report
            .weights
            .iter()
            .find(|w| w.name == layer.weight)
            .unwrap();
        assert!(
            entry.notes.iter().any(|n| n.starts_with("lsuv: scaled by")),
            "{:?}",
            entry.notes
        );
        assert!(!entry.notes.iter().any(|n| n.contains("pre-init only")));
    }
}

#[test]
fn library_apply_then_write_calibrates_lsuv() {
    // The library route the crate docs show: a session, then write. (`apply`
    // then `write` skipped LSUV's data pass once.)
    let model = Model::load(fixtures().join("mlp_tanh.onnx")).unwrap();
    let plan = plan(&model, &lsuv_options()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let applied = Session::new(&model, &plan, 3)
        .unwrap()
        .write(&out, &SaveOptions::default())
        .unwrap();
    let written = Model::load(&out).unwrap();
    assert_scaled_as_reported(&written, &applied.report);
    assert!(applied.report.lsuv.as_ref().unwrap().data.contains("task"));
}

#[test]
fn deferred_and_external_weights_are_calibrated_and_routes_agree() {
    for fixture in ["mlp_tanh.onnx", "tiny_resnet_bn_external.onnx"] {
        let model = Model::load(fixtures().join(fixture)).unwrap();
        let plan = plan(&model, &lsuv_options()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.onnx");
        let applied = Session::new(&model, &plan, 9)
            .unwrap()
            .write(&out, &SaveOptions::default())
            .unwrap();
        let written = Model::load(&out).unwrap();
        assert_scaled_as_reported(&written, &applied.report);
        if !model.has_external_data() {
            let (_, bytes) = Session::new(&model, &plan, 9).unwrap().to_bytes().unwrap();
            assert!(bytes == std::fs::read(&out).unwrap(), "{fixture}");
        }
    }
}

#[test]
fn user_calibration_data_is_used_and_named() {
    let model = Model::load(fixtures().join("mlp_tanh.onnx")).unwrap();
    let input_dims: Vec<usize> = {
        let analysis = reinit_graph::analyze(&model);
        vec![analysis.layers[0].n_in]
    };
    // Samples far from the task's (mean 3, std 4): the scales must differ.
    let n = 32;
    let values: Vec<f32> = (0..n * input_dims[0])
        .map(|i| 3.0 + 4.0 * (((i * 7919) % 1000) as f32 / 1000.0 - 0.5))
        .collect();
    let mut shape = vec![n];
    shape.extend(&input_dims);
    let samples = reinit::Samples {
        source: "test samples".into(),
        inputs: vec![reinit::SampleArray::new(None, shape, values).unwrap()],
    };
    let options = PlanOptions {
        calibration: reinit::Calibration::Samples(std::sync::Arc::new(samples)),
        ..lsuv_options()
    };
    let with_data = plan(&model, &options).unwrap();
    let applied = Session::new(&model, &with_data, 3)
        .unwrap()
        .dry_run()
        .unwrap();
    let lsuv = applied.report.lsuv.as_ref().unwrap();
    assert!(
        lsuv.data.starts_with("test samples: 32 samples"),
        "{}",
        lsuv.data
    );
    let task_plan = plan(&model, &lsuv_options()).unwrap();
    let task = Session::new(&model, &task_plan, 3)
        .unwrap()
        .dry_run()
        .unwrap();
    let task = task.report.lsuv.unwrap();
    assert!(
        lsuv.layers[0].scale != task.layers[0].scale,
        "{lsuv:?} vs {task:?}"
    );
}

#[test]
fn reset_norms_sets_every_norm_and_is_recorded() {
    for fixture in ["tiny_resnet_bn.onnx", "tiny_transformer_nofold.onnx"] {
        let model = Model::load(fixtures().join(fixture)).unwrap();
        let analysis = reinit_graph::analyze(&model);
        assert!(!analysis.norms.is_empty());
        let options = PlanOptions {
            scheme: "he".into(),
            norms: NormOptions {
                zero_init_last_gamma: false,
                reset: true,
            },
            ..Default::default()
        };
        let p = plan(&model, &options).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("m.onnx");
        let applied = Session::new(&model, &p, 1)
            .unwrap()
            .write(&out, &SaveOptions::default())
            .unwrap();
        let written = Model::load(&out).unwrap();
        assert_eq!(applied.report.norms_reset.len(), analysis.norms.len());
        let recorded = written.metadata("reinit.norms_reset").unwrap();
        for norm in &analysis.norms {
            assert!(
                recorded.contains(&format!("\"{}\"", norm.node)),
                "{recorded}"
            );
            let check = |id: Option<reinit_onnx::TensorId>, want: f64, what: &str| {
                if let Some(id) = id {
                    let before = model.read_f64(id).unwrap();
                    assert!(
                        before.iter().any(|&v| v != want),
                        "{fixture}: {what} trained-looking"
                    );
                    let after = written.read_f64(id).unwrap();
                    assert!(
                        after.iter().all(|&v| v == want),
                        "{fixture} {}: {what}",
                        norm.node
                    );
                }
            };
            check(norm.scale, 1.0, "gamma");
            check(norm.bias, 0.0, "beta");
            check(norm.running_mean, 0.0, "running mean");
            check(norm.running_var, 1.0, "running var");
        }
        assert!(applied.report.summary().contains("norm layers reset"));
    }
}

#[test]
fn zero_init_last_gamma_applies_on_top_of_a_reset_and_auto_resets() {
    let model = Model::load(fixtures().join("tiny_resnet_bn.onnx")).unwrap();
    let analysis = reinit_graph::analyze(&model);
    let options = PlanOptions {
        scheme: "auto".into(),
        norms: NormOptions {
            zero_init_last_gamma: true,
            reset: false,
        },
        ..Default::default()
    };
    let p = plan(&model, &options).unwrap();
    let (applied, bytes) = Session::new(&model, &p, 1).unwrap().to_bytes().unwrap();
    let written = Model::from_bytes(bytes, None).unwrap();
    assert_eq!(applied.report.norms_reset.len(), analysis.norms.len());
    assert!(applied.report.summary().contains("auto resets norms"));
    let last: Vec<_> = analysis
        .norms
        .iter()
        .filter(|n| n.ends_residual_branch.is_some())
        .collect();
    assert!(!last.is_empty());
    for norm in &analysis.norms {
        let gamma = written.read_f64(norm.scale.unwrap()).unwrap();
        let want = if norm.ends_residual_branch.is_some() {
            0.0
        } else {
            1.0
        };
        assert!(gamma.iter().all(|&v| v == want), "{}", norm.node);
        let var = written.read_f64(norm.running_var.unwrap()).unwrap();
        assert!(var.iter().all(|&v| v == 1.0), "{}", norm.node);
    }
}
