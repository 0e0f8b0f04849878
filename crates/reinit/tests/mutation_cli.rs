//! Mutation test of the binary (issue 7): ~100+ corrupted fixtures fed to
//! `reinit inspect` and to a rewrite, each with a 10 s limit. Every case must end
//! in exit 0 with a valid output (that `inspect` reloads) or a clean refusal (exit
//! 2–6 with a message): never exit 1 (an internal error, i.e. a bug), a panic
//! (101), a hang, or a leftover temp file.
//! `REINIT_MUTATION_CLI_CASES` (default 120) and `REINIT_MUTATION_SEED` scale it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::mutate::{KINDS, Rng, mutate, scan};
use common::*;

const SCHEMES: &[&str] = &[
    "he",
    "eoi",
    "auto",
    "orthogonal",
    "idinit",
    "fixup",
    "relu-share",
    "critical",
];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn check(label: &str, r: &Run, out: Option<&Path>, failures: &mut Vec<String>) {
    let mut bad = |m: String| failures.push(format!("{label}: {m}\nstderr: {}", r.stderr.trim()));
    if r.timed_out {
        return bad(format!("hung (> 10 s, killed after {:?})", r.elapsed));
    }
    match r.code {
        Some(0) => {
            if let Some(out) = out {
                if !out.exists() {
                    return bad("exit 0 but no output".into());
                }
                let again = run(
                    &["inspect", out.to_str().unwrap()],
                    &[],
                    Duration::from_secs(10),
                );
                if again.code != Some(0) {
                    return bad(format!(
                        "exit 0 but the output does not load: {}",
                        again.stderr.trim()
                    ));
                }
            }
        }
        Some(code @ 2..=6) => {
            if !r.stderr.contains("reinit: error:") {
                return bad(format!("exit {code} without an error message"));
            }
            if let Some(out) = out
                && out.exists()
            {
                return bad(format!("exit {code} but an output was written"));
            }
        }
        Some(1) => return bad("exit 1: an internal error (a bug), not a refusal".into()),
        other => return bad(format!("exit {other:?} (101 = panic)")),
    }
    if r.stderr.contains("panicked") {
        bad("a panic message on stderr".into());
    }
    if let Some(dir) = out.and_then(Path::parent) {
        let left = temp_leftovers(dir);
        if !left.is_empty() {
            bad(format!("temporary files left: {left:?}"));
        }
    }
}

#[test]
fn mutated_models_through_inspect_and_rewrite() {
    let cases = env_u64("REINIT_MUTATION_CLI_CASES", 120) as usize;
    let seed = env_u64("REINIT_MUTATION_SEED", 0xc1_0007);
    let files = all_fixtures();
    let originals: Vec<_> = files
        .iter()
        .map(|p| {
            let b = std::fs::read(p).unwrap();
            let f = scan(&b);
            (p.file_name().unwrap().to_string_lossy().into_owned(), b, f)
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let limit = Duration::from_secs(10);
    let (mut ok, mut refused) = (0, 0);
    for case in 0..cases {
        let (name, original, fields) = &originals[case % originals.len()];
        let kind = rng.below(KINDS.len());
        let case_seed = rng.next();
        let bytes = mutate(original, fields, kind, &mut Rng::new(case_seed));
        let dir = tempfile::tempdir().unwrap();
        let input = copy_fixture(name, dir.path());
        std::fs::write(&input, &bytes).unwrap();
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let out = out_dir.join("model.onnx");
        let scheme = SCHEMES[case % SCHEMES.len()];
        let label = format!(
            "case {case} ({name}, {}, seed {case_seed:#x}, {scheme})",
            KINDS[kind]
        );
        let r = run(&["inspect", input.to_str().unwrap(), "--json"], &[], limit);
        check(&format!("{label} inspect"), &r, None, &mut failures);
        let r = run(
            &[
                input.to_str().unwrap(),
                "--scheme",
                scheme,
                "--seed",
                "1",
                "-q",
                "-o",
                out.to_str().unwrap(),
            ],
            &[],
            limit,
        );
        if r.code == Some(0) {
            ok += 1
        } else {
            refused += 1
        }
        let before = failures.len();
        check(&format!("{label} rewrite"), &r, Some(&out), &mut failures);
        if failures.len() > before {
            let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mutation-cli-failures");
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::write(keep.join(format!("case{case}-{name}")), &bytes).unwrap();
        }
    }
    eprintln!("{cases} CLI mutation cases: {ok} rewritten, {refused} refused");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// Regression (found by the mutation test): a model whose last top-level field is
/// the graph. Valid protobuf (writers may order fields freely); onnx loads it.
/// The appended `metadata_props` used to be counted inside the graph's length.
#[test]
fn graph_as_last_field_rewrites_to_a_valid_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for name in [
        "mlp_tanh.onnx",
        "tiny_resnet_bn.onnx",
        "helper_if_subgraph.onnx",
    ] {
        let input = dir.path().join(name);
        std::fs::write(
            &input,
            graph_last(&std::fs::read(fixtures().join(name)).unwrap()),
        )
        .unwrap();
        run_ok(&["inspect", input.to_str().unwrap()], &[]);
        let out = dir.path().join(format!("out-{name}"));
        let r = run(
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
            &[],
            Duration::from_secs(30),
        );
        check(name, &r, Some(&out), &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
