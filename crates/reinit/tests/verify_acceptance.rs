//! Acceptance of `reinit verify` (issue 6): schemes applied through the
//! library exactly as the CLI does (plan → apply → write → load), then probed
//! and trained with `reinit_candle`.
//!
//! The wall-time claim ("default `reinit verify` finishes in under a minute on
//! 2 cores for every fixture") is measured by hand, not here; the figures and
//! the command are in `docs/candle-notes.md`.
#![cfg(feature = "verify")]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use reinit::{PlanOptions, SchemeParams};
use reinit_candle::{Executor, TaskSize, TrainConfig, Verdict, VerifyConfig, VerifyReport};
use reinit_onnx::{Model, SaveOptions};

use common::verify_json;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(name)
}

/// `scheme` applied to `fixture` with `seed`, written to disk and loaded back
/// (the `reinit verify` route), plus the scheme's fixed mask if it has one.
fn variant(
    fixture_name: &str,
    scheme: &str,
    params: SchemeParams,
    seed: u64,
    dir: &Path,
) -> (Model, Option<HashMap<String, Vec<bool>>>) {
    let model = Model::load(fixture(fixture_name)).unwrap();
    let options = PlanOptions {
        scheme: scheme.into(),
        params,
        ..Default::default()
    };
    let plan = reinit::plan(&model, &options).unwrap();
    let stem = fixture_name.replace('/', "_");
    let path = dir.join(format!("{stem}.{scheme}.{seed}.onnx"));
    let applied = reinit::Session::new(&model, &plan, seed)
        .unwrap()
        .write(&path, &SaveOptions::default())
        .unwrap();
    let mask = (!applied.masks.is_empty()).then(|| {
        applied
            .masks
            .into_iter()
            .map(|m| (m.name, m.values))
            .collect()
    });
    (Model::load(&path).unwrap(), mask)
}

fn relu_share_orthogonal() -> SchemeParams {
    SchemeParams::default()
        .with("submatrix", "orthogonal")
        .unwrap()
}

fn run(models: Vec<(String, Model)>, config: &VerifyConfig) -> VerifyReport {
    reinit_candle::verify(&models, config).unwrap()
}

/// Deep tanh MLP (11 hidden layers of 48): the critical-point init (σ_w², σ_b²
/// on the order-to-chaos line) ends with a lower training loss than He (gain
/// 5/3 for tanh, deep in the chaotic phase) with the same budget: 50 AdamW
/// steps, lr 3e-3, batch 16 on 512 digits (the `reinit verify` defaults but
/// half the steps), identical seed and data order for both, 4 seeds.
///
/// Budget choice (measured with `reinit verify fixtures/mlp_tanh.onnx
/// --schemes he,critical --seed S`, S = 0..7): at 50 AdamW steps critical's
/// final loss is 0.40–0.58× He's for all 8 seeds; at the default 100 steps He
/// catches up (seed 3: 0.231 vs 0.254); SGD-momentum lr 1e-2 gives 0.51–0.81×,
/// but SGD lr 3e-3 reverses it (1.16–1.61×: critical's gradients are smaller
/// and a small fixed lr under-uses them). See docs/candle-notes.md.
#[test]
fn critical_beats_he_on_deep_tanh_mlp() {
    let dir = tempfile::tempdir().unwrap();
    let mut margins = Vec::new();
    for seed in 0..4u64 {
        let config = VerifyConfig {
            train: TrainConfig {
                seed,
                steps: 50,
                ..VerifyConfig::default().train
            },
            ..VerifyConfig::default()
        };
        let he = variant(
            "mlp_tanh.onnx",
            "he",
            SchemeParams::default(),
            seed,
            dir.path(),
        )
        .0;
        let critical = variant(
            "mlp_tanh.onnx",
            "critical",
            SchemeParams::default(),
            seed,
            dir.path(),
        )
        .0;
        let report = run(
            vec![("he".into(), he), ("critical".into(), critical)],
            &config,
        );
        let (he, critical) = (&report.runs[0], &report.runs[1]);
        eprintln!(
            "seed {seed}: final loss he {:.4}, critical {:.4}",
            he.final_loss, critical.final_loss
        );
        assert_eq!(critical.verdict, Verdict::Trains);
        assert!(
            critical.final_loss < he.final_loss,
            "seed {seed}: critical {} vs he {}",
            critical.final_loss,
            he.final_loss
        );
        margins.push(critical.final_loss / he.final_loss);
    }
    // Not a coin flip: on average critical ends well below He.
    let mean = margins.iter().sum::<f64>() / margins.len() as f64;
    assert!(mean < 0.75, "mean critical/he final-loss ratio {mean}");
}

/// Deep ReLU MLP: relu-share with an orthogonal submatrix is looks-linear.
/// Each hidden layer is `[[K, −K], [−K, K]]` on `[relu(a); relu(−a)]`, so the
/// network computes `y = K_L Q_{L−1} ⋯ Q_1 K_0 x` exactly (biases are 0 by
/// default): `K_0` is 24×64 with orthonormal rows (the mirrored first layer
/// 64→48), the `Q_l` are 24×24 orthogonal, `K_L` is 10×24 with orthonormal
/// rows (the 10-class head reads `[K_L, −K_L]`). Then `J Jᵀ = I_10`: the
/// Jacobian is 10×64, so it has min(10, 64) = 10 singular values, all exactly
/// 1 — the construction guarantees isometry on the 10-dimensional image (the
/// other 54 input directions are the kernel, as for any 64→10 map), and that
/// is what the exact probe reports. f32 arithmetic leaves ~1e-7 error.
#[test]
fn relu_share_orthogonal_is_isometric_he_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let config = VerifyConfig::default();
    for seed in [0u64, 7] {
        let mut stats = Vec::new();
        for (scheme, params) in [
            ("relu-share", relu_share_orthogonal()),
            ("he", SchemeParams::default()),
        ] {
            let model = variant("mlp_relu.onnx", scheme, params, seed, dir.path()).0;
            let exec = Executor::new(&model, &config.train.device).unwrap();
            let task = reinit_candle::Task::for_model(
                &exec,
                &model,
                seed,
                TaskSize {
                    train: 32,
                    heldout: 8,
                },
                None,
            )
            .unwrap();
            let j = reinit_candle::probes::jacobian(&exec, &task, 16, seed)
                .unwrap()
                .unwrap();
            assert_eq!(j.method, "exact");
            assert_eq!(j.singular_values.len(), 10);
            stats.push(j);
        }
        let (rs, he) = (&stats[0], &stats[1]);
        for s in &rs.singular_values {
            assert!((s - 1.0).abs() <= 1e-4, "seed {seed}: relu-share sv {s}");
        }
        assert!(rs.var_sq_sv < 1e-6, "{}", rs.var_sq_sv);
        let spread = |j: &reinit_candle::JacobianStats| j.max_sv.unwrap() / j.min_sv.unwrap();
        eprintln!(
            "seed {seed}: max/min sv relu-share {:.6}, he {:.2}; Var[s²] relu-share {:.2e}, he {:.3}",
            spread(rs),
            spread(he),
            rs.var_sq_sv,
            he.var_sq_sv
        );
        assert!(spread(rs) < 1.0 + 2e-4);
        assert!(spread(he) > 10.0, "he max/min {}", spread(he));
        assert!(he.var_sq_sv > 1e4 * rs.var_sq_sv.max(1e-12));
    }
}

/// EOI's zero pattern is held fixed: after training through `reinit verify`
/// (binary, `--json`) every masked weight is still exactly zero.
#[test]
fn eoi_masks_stay_exact_through_the_cli() {
    for name in ["mlp_relu.onnx", "tiny_resnet_bn.onnx"] {
        let json = verify_json(
            &fixture(name),
            &["--schemes", "eoi", "--json", "--quiet", "--steps", "10"],
        );
        let run = &json["runs"][0];
        assert_eq!(run["scheme"], "eoi");
        assert_eq!(run["mask_exact"], true, "{name}: {run:#?}");
    }
}

/// The EOI paper's comparison (issue 15 item 8): EOI and a random mask on a dense init at
/// the same density, side by side; both zero patterns are held fixed while training.
#[test]
fn random_mask_is_held_fixed_next_to_eoi() {
    let json = verify_json(
        &fixture("mlp_relu.onnx"),
        &[
            "--schemes",
            "eoi,random-mask",
            "--density",
            "0.125",
            "--json",
            "--quiet",
            "--steps",
            "10",
        ],
    );
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert_eq!(run["mask_exact"], true, "{run:#?}");
    }
    assert_eq!(runs[1]["scheme"], "random-mask");
}

/// The same through the library: the mask from `apply` is the one enforced.
#[test]
fn eoi_mask_from_apply_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let (model, mask) = variant(
        "mlp_relu.onnx",
        "eoi",
        SchemeParams::default(),
        3,
        dir.path(),
    );
    let mask = mask.expect("eoi is sparse");
    assert!(mask.values().any(|m| m.iter().any(|&k| !k)));
    let config = VerifyConfig {
        train: TrainConfig {
            steps: 30,
            size: TaskSize {
                train: 128,
                heldout: 32,
            },
            ..VerifyConfig::default().train
        },
        masks: [("eoi".to_string(), mask)].into_iter().collect(),
        ..VerifyConfig::default()
    };
    let report = run(vec![("eoi".into(), model)], &config);
    assert_eq!(report.runs[0].mask_exact, Some(true));
}

/// A malformed `--input-shape` is a usage error (exit 2) that shows the
/// accepted forms; so is one that names no graph input.
#[test]
fn malformed_input_shape_is_a_usage_error_showing_the_forms() {
    for bad in ["3x", "3x224xfoo", "a:2,3x3", "nosuch:3x32x32"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_reinit"))
            .arg("verify")
            .arg(fixture("tiny_resnet_fused.onnx"))
            .args(["--input-shape", bad, "--steps", "1", "--quiet"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("accepted forms"), "{bad}: {stderr}");
        assert!(stderr.contains("2x3x224x224"), "{bad}: {stderr}");
    }
}

/// Verdicts that mean something (issue 14 item 5) on the BN ResNet: He and
/// orthogonal both train on the default task (class patterns, 10 of the
/// output's classes) with the default budget, held-out accuracy well above
/// chance, and the report names the fastest of the two.
///
/// Measured (`reinit verify fixtures/tiny_resnet_bn.onnx --schemes
/// he,orthogonal`, seed 0): both `trains`, held-out 1.000 vs chance 0.100.
#[test]
fn bn_resnet_he_and_orthogonal_train_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    let config = VerifyConfig::default();
    let models: Vec<(String, Model)> = ["he", "orthogonal"]
        .iter()
        .map(|s| {
            let m = variant(
                "tiny_resnet_bn.onnx",
                s,
                SchemeParams::default(),
                0,
                dir.path(),
            )
            .0;
            (s.to_string(), m)
        })
        .collect();
    let report = run(models, &config);
    let task = report.task.as_ref().unwrap();
    assert_eq!(task.classes_taught, Some(10));
    let chance = task.chance.unwrap();
    for r in &report.runs {
        eprintln!(
            "{}: {:?} {} heldout {}",
            r.scheme, r.verdict, r.verdict_reason, r.heldout.value
        );
        assert_eq!(
            r.verdict,
            Verdict::Trains,
            "{}: {}",
            r.scheme,
            r.verdict_reason
        );
        assert!(
            r.heldout.value > chance + 0.3,
            "{}: held-out {}",
            r.scheme,
            r.heldout.value
        );
        assert!(r.steps_to_target.is_some());
    }
    assert!(report.fastest.is_some());
}

/// The acceptance pair of issue 14 on a ResNet without normalization: under
/// verify's default recipe for such nets (SGD, momentum 0.9, lr 0.1, cosine —
/// chosen from the graph, `reinit_candle::recipe`), He's forward pass has
/// exploded at init (q^L/q^0 ≈ 8e3 over 16 blocks) and its loss blows up,
/// while Fixup and IDInit, which start each block at the identity, train to
/// held-out accuracy far above chance.
///
/// Measured (`reinit verify fixtures/verify/deep_resnet_nonorm.onnx --schemes
/// he,fixup,idinit`, seed 0): he `diverged` (loss 110 → 4.9e10 → NaN at step
/// 2), fixup `trains` (2.30 → 0.046, held-out 1.000), idinit `trains` (2.35 →
/// 0.017, held-out 1.000); chance 0.100. Under AdamW (`--optimizer adamw`)
/// the same He run falls from 28 to 2.28 = the constant prediction's loss
/// (held-out 0.078): `stalled`, not `trains`.
#[test]
fn no_norm_resnet_he_blows_up_fixup_and_idinit_train() {
    let dir = tempfile::tempdir().unwrap();
    let models: Vec<(String, Model)> = ["he", "fixup", "idinit"]
        .iter()
        .map(|s| {
            let m = variant(
                "verify/deep_resnet_nonorm.onnx",
                s,
                SchemeParams::default(),
                0,
                dir.path(),
            )
            .0;
            (s.to_string(), m)
        })
        .collect();
    let report = run(models, &VerifyConfig::default());
    assert_eq!(
        report.optimizer,
        reinit_candle::Optimizer::Sgd { momentum: 0.9 }
    );
    assert_eq!(report.lr, 0.1);
    assert!(
        report.optimizer_choice.contains("without normalization"),
        "{}",
        report.optimizer_choice
    );
    let chance = report.task.as_ref().unwrap().chance.unwrap();
    let by = |s: &str| report.runs.iter().find(|r| r.scheme == s).unwrap();
    let he = by("he");
    // He does not train here: with stream v1's draw its loss blew up, with v2's it
    // stays at the constant prediction's (Stalled); either is the failure this
    // test contrasts Fixup and IDInit with
    assert!(
        matches!(he.verdict, Verdict::Diverged | Verdict::Stalled),
        "he: {:?}: {}",
        he.verdict,
        he.verdict_reason
    );
    assert!(
        he.signal_detail.ratio > 1e3,
        "he q^L/q^0 {}",
        he.signal_detail.ratio
    );
    for s in ["fixup", "idinit"] {
        let r = by(s);
        assert_eq!(r.verdict, Verdict::Trains, "{s}: {}", r.verdict_reason);
        assert!(
            r.heldout.value > chance + 0.5,
            "{s}: held-out {} vs chance {chance}",
            r.heldout.value
        );
    }
    assert!(matches!(
        report.fastest.as_deref(),
        Some("fixup" | "idinit")
    ));
}

/// `--input-q` scales the task input to the asked second moment, and for
/// `critical` the report gives q* and whether the input matched it.
#[test]
fn input_q_scales_inputs_and_critical_reports_q_star() {
    let dir = tempfile::tempdir().unwrap();
    let critical = variant(
        "mlp_tanh.onnx",
        "critical",
        SchemeParams::default(),
        0,
        dir.path(),
    )
    .0;
    let json = verify_json(
        &fixture("mlp_tanh.onnx"),
        &["--schemes", "critical", "--json", "--quiet", "--steps", "2"],
    );
    let run0 = &json["runs"][0];
    let q_star = run0["q_star"].as_f64().expect("critical reports q*");
    assert!(q_star > 0.0 && q_star < 0.5, "q* {q_star}");
    // digits are standardized: second moment 1, far from q*
    assert!((json["task"]["input_q"].as_f64().unwrap() - 1.0).abs() < 0.05);
    assert_eq!(run0["input_matches_q_star"], false);
    // with --input-q q* the input matches
    let json = verify_json(
        &fixture("mlp_tanh.onnx"),
        &[
            "--schemes",
            "critical",
            "--json",
            "--quiet",
            "--steps",
            "2",
            "--input-q",
            &q_star.to_string(),
        ],
    );
    let measured = json["task"]["input_q"].as_f64().unwrap();
    assert!(
        (measured / q_star - 1.0).abs() < 1e-3,
        "{measured} vs {q_star}"
    );
    assert_eq!(json["runs"][0]["input_matches_q_star"], true);
    drop(critical);
}

/// Issue 15 item 1: the mask `verify` holds fixed for an EOI convolution is the
/// reference's trainable mask (density d over the kernel, to one element), not
/// the centre tap's support: the added positions start at zero and train, the
/// masked-out ones stay exactly zero.
#[test]
fn eoi_conv_masks_held_in_training_are_trainable_masks_at_density_d() {
    let dir = tempfile::tempdir().unwrap();
    let params = SchemeParams::default().with("density", 0.2).unwrap();
    let (model, mask) = variant("tiny_resnet_bn.onnx", "eoi", params, 5, dir.path());
    let mask = mask.expect("eoi has masks");
    let exec = Executor::new(&model, &TrainConfig::default().device).unwrap();
    let before: HashMap<String, Vec<f32>> = mask
        .keys()
        .map(|name| {
            let v = exec.param(name).unwrap().var.as_tensor();
            let v = v.flatten_all().unwrap().to_dtype(candle_core::DType::F32);
            (name.clone(), v.unwrap().to_vec1().unwrap())
        })
        .collect();
    let mut convs = 0;
    for (name, keep) in &mask {
        let dims = exec.param(name).unwrap().var.dims().to_vec();
        if dims.len() == 4 && dims[2] * dims[3] > 1 {
            convs += 1;
            let n = keep.len() as f64;
            let d = keep.iter().filter(|&&k| k).count() as f64 / n;
            assert!((d - 0.2).abs() <= 1.0 / n + 1e-12, "{name}: {d}");
        }
    }
    assert!(convs >= 4, "{convs} k×k convs");
    let config = TrainConfig {
        steps: 5,
        batch: 16,
        lr: 1e-2,
        mask: Some(mask.clone()),
        size: TaskSize {
            train: 64,
            heldout: 16,
        },
        ..TrainConfig::default()
    };
    let task = reinit_candle::Task::for_model(&exec, &model, 0, config.size, None).unwrap();
    let report = reinit_candle::train_on(&exec, &task, &config).unwrap();
    assert_eq!(report.mask_exact, Some(true));
    let mut woke = 0usize;
    for (name, keep) in &mask {
        let after: Vec<f32> = exec
            .param(name)
            .unwrap()
            .var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        for ((&k, &b), &a) in keep.iter().zip(&before[name]).zip(&after) {
            if !k {
                assert_eq!(a, 0.0, "{name}: a masked-out weight moved");
            } else if b == 0.0 && a != 0.0 {
                woke += 1;
            }
        }
    }
    assert!(woke > 0, "no added mask position trained");
}
