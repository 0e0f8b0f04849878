//! `verify`'s progress: the library reports every run and step to a hook; the
//! CLI draws a bar on a terminal (under `script`'s pseudo-terminal) and
//! nothing when stderr is a pipe or with `--json`.
#![cfg(feature = "verify")]

mod common;

use std::process::Command;
use std::sync::{Arc, Mutex};

use common::{bin, fixtures};
use reinit_candle::{Progress, ProgressHook, TaskSize, TrainConfig, VerifyConfig};
use reinit_onnx::Model;

#[test]
fn hook_hears_each_run_then_each_of_its_steps() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let config = VerifyConfig {
        train: TrainConfig {
            steps: 4,
            batch: 8,
            size: TaskSize {
                train: 32,
                heldout: 16,
            },
            progress: ProgressHook::new(move |p| {
                sink.lock().unwrap().push(match p {
                    Progress::Run {
                        scheme,
                        index,
                        runs,
                        steps,
                    } => format!("run {scheme} {index}/{runs} x{steps}"),
                    Progress::Step { step, loss } => {
                        assert!(loss.is_finite());
                        format!("step {step}")
                    }
                })
            }),
            ..TrainConfig::default()
        },
        probe_batch: 4,
        ..VerifyConfig::default()
    };
    let models = vec![
        (
            "a".to_string(),
            Model::load(fixtures().join("mlp_tanh.onnx")).unwrap(),
        ),
        (
            "b".to_string(),
            Model::load(fixtures().join("mlp_relu.onnx")).unwrap(),
        ),
    ];
    reinit_candle::verify(&models, &config).unwrap();
    let mut expected = Vec::new();
    for (i, name) in ["a", "b"].iter().enumerate() {
        expected.push(format!("run {name} {i}/2 x4"));
        expected.extend((1..=4).map(|s| format!("step {s}")));
    }
    assert_eq!(*events.lock().unwrap(), expected);
}

fn verify_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "verify".to_string(),
        fixtures().join("mlp_relu.onnx").display().to_string(),
        "--schemes".into(),
        "he".into(),
        "--steps".into(),
        "40".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn no_bar_when_stderr_is_not_a_terminal() {
    let out = Command::new(bin()).args(verify_args(&[])).output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for mark in ["ETA", "\r", "\x1b[", "step 1/"] {
        assert!(!err.contains(mark), "{mark:?} in {err}");
    }
}

/// Output of the command run in a pseudo-terminal by util-linux `script`;
/// `None` (and a message) where `script` is missing.
fn in_terminal(args: &[String]) -> Option<String> {
    let line = std::iter::once(bin().display().to_string())
        .chain(args.iter().cloned())
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    match Command::new("script")
        .args(["-qfec", &line, "/dev/null"])
        .output()
    {
        Ok(out) => {
            assert!(out.status.success(), "{out:?}");
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(e) => {
            eprintln!("SKIP: util-linux `script` is not available ({e}); no terminal to test in");
            None
        }
    }
}

#[test]
fn bar_on_a_terminal_but_not_with_json() {
    let Some(shown) = in_terminal(&verify_args(&[])) else {
        return;
    };
    assert!(shown.contains("ETA"), "{shown}");
    assert!(shown.contains("he (1/1)"), "{shown}");
    assert!(shown.contains("loss"), "{shown}");
    let Some(json) = in_terminal(&verify_args(&["--json"])) else {
        return;
    };
    assert!(!json.contains("ETA"), "{json}");
}
