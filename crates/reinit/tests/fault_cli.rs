//! Faults during write (issue 7): `REINIT_FAIL_AFTER_BYTES=N` (read once per
//! process, so each case is its own `reinit` process) makes every write fail once
//! N bytes of an output have been written. Whatever N, the output is the previous
//! file or absent — never truncated — no temporary file remains, and the input
//! (model and external data) is untouched. Then SIGKILL mid-write.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

struct Case {
    dir: tempfile::TempDir,
    input: std::path::PathBuf,
    inputs_hash: Vec<(String, String)>,
}

fn hashes(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                sha256(&e.path()),
            )
        })
        .collect();
    v.sort();
    v
}

fn setup(name: &str) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let input = copy_fixture(name, &dir.path().join("in"));
    let inputs_hash = hashes(&dir.path().join("in"));
    Case {
        dir,
        input,
        inputs_hash,
    }
}

fn rewrite(case: &Case, out: &Path, seed: &str, envs: &[(&str, &str)]) -> Run {
    run(
        &[
            case.input.to_str().unwrap(),
            "--scheme",
            "he",
            "--seed",
            seed,
            "-q",
            "--force",
            "-o",
            out.to_str().unwrap(),
        ],
        envs,
        Duration::from_secs(60),
    )
}

fn fault_sweep(name: &str) {
    let case = setup(name);
    let out_dir = case.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("model.onnx");
    let data = out_dir.join("model.onnx.data");
    let external = case.input.with_file_name(format!("{name}.data")).exists();
    // The reference (complete) output for seed 2, and a previous output with seed 1.
    let reference_dir = case.dir.path().join("ref");
    std::fs::create_dir(&reference_dir).unwrap();
    let reference = reference_dir.join("model.onnx");
    assert_eq!(rewrite(&case, &reference, "2", &[]).code, Some(0));
    let ref_hash = hashes(&reference_dir);
    let model_len = std::fs::metadata(&reference).unwrap().len();
    let data_len = std::fs::metadata(reference_dir.join("model.onnx.data")).map_or(0, |m| m.len());
    let largest = model_len.max(data_len);
    let mut limits: Vec<u64> = vec![
        0,
        1,
        2,
        100,
        4095,
        4096,
        4097,
        65536,
        model_len / 2,
        model_len - 1,
        model_len,
    ];
    if external {
        limits.extend([data_len / 3, data_len / 2, data_len - 1, data_len]);
    }
    limits.push(largest + 1);
    limits.sort();
    limits.dedup();
    for with_previous in [false, true] {
        for &n in &limits {
            for f in [&out, &data] {
                let _ = std::fs::remove_file(f);
            }
            if with_previous {
                assert_eq!(rewrite(&case, &out, "1", &[]).code, Some(0));
            }
            let previous = hashes(&out_dir);
            let r = rewrite(
                &case,
                &out,
                "2",
                &[("REINIT_FAIL_AFTER_BYTES", &n.to_string())],
            );
            let label = format!("{name} N={n} previous={with_previous}");
            let now = hashes(&out_dir);
            assert!(
                temp_leftovers(&out_dir).is_empty(),
                "{label}: {:?}",
                temp_leftovers(&out_dir)
            );
            assert_eq!(
                hashes(case.input.parent().unwrap()),
                case.inputs_hash,
                "{label}: input touched"
            );
            match r.code {
                Some(0) => {
                    assert!(
                        n >= largest,
                        "{label}: succeeded although a write should have failed"
                    );
                    assert_eq!(
                        now, ref_hash,
                        "{label}: success but not the reference output"
                    );
                }
                Some(5) => {
                    assert!(
                        r.stderr.contains("injected write failure"),
                        "{label}: {}",
                        r.stderr
                    );
                    assert!(
                        n < largest,
                        "{label}: failed with a limit above every output size"
                    );
                    assert_eq!(
                        now, previous,
                        "{label}: output changed after a failed write"
                    );
                }
                other => panic!("{label}: exit {other:?}\n{}", r.stderr),
            }
        }
    }
}

#[test]
fn injected_write_failures_leave_previous_or_nothing_embedded() {
    fault_sweep("tiny_resnet_bn.onnx");
}

#[test]
fn injected_write_failures_leave_previous_or_nothing_external() {
    fault_sweep("tiny_resnet_bn_external.onnx");
}

#[test]
fn injected_failure_in_directory_mode_and_masks() {
    let case = setup("mlp_tanh.onnx");
    let masks = case.dir.path().join("masks.safetensors");
    let out = case.dir.path().join("o.onnx");
    let r = run(
        &[
            case.input.to_str().unwrap(),
            "--scheme",
            "eoi",
            "-q",
            "-o",
            out.to_str().unwrap(),
            "--mask-out",
            masks.to_str().unwrap(),
        ],
        &[("REINIT_FAIL_AFTER_BYTES", "10")],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(5), "{}", r.stderr);
    assert!(!out.exists() && !masks.exists());
    assert!(temp_leftovers(case.dir.path()).is_empty());
}

/// SIGKILL at several moments while a 3 × 16 MiB external model is written.
/// Each file must afterwards be absent, the previous one, or the complete new
/// one (the run is deterministic, so "complete" is a known hash). A killed
/// process cannot remove its temporary file: hidden `.reinit-*.tmp` files may
/// remain (documented), and the next run must still succeed.
#[test]
fn sigkill_mid_write_never_leaves_a_truncated_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = external_mlp(&tmp.path().join("in"), "big.onnx", 2048, 3);
    let input_hashes = hashes(&tmp.path().join("in"));
    let args = |out: &Path, seed: &str| -> Vec<String> {
        [
            input.to_str().unwrap(),
            "--scheme",
            "he",
            "--seed",
            seed,
            "-q",
            "--force",
            "-o",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let ref_dir = tmp.path().join("ref");
    std::fs::create_dir(&ref_dir).unwrap();
    let a: Vec<String> = args(&ref_dir.join("m.onnx"), "2");
    let t = run(
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
        Duration::from_secs(120),
    );
    assert_eq!(t.code, Some(0), "{}", t.stderr);
    let full = t.elapsed;
    let new: Vec<_> = hashes(&ref_dir);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("m.onnx");
    let prev_args = args(&out, "1");
    let mut mixed = 0;
    for step in 0..12u32 {
        let _ = run(
            &prev_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
            Duration::from_secs(120),
        );
        let previous = hashes(&out_dir);
        let delay = full.mul_f64(f64::from(step) / 10.0);
        let new_args = args(&out, "2");
        let r = run(
            &new_args.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
            delay,
        );
        let now: Vec<_> = hashes(&out_dir)
            .into_iter()
            .filter(|(n, _)| !n.starts_with(".reinit-"))
            .collect();
        let prev: Vec<_> = previous
            .into_iter()
            .filter(|(n, _)| !n.starts_with(".reinit-"))
            .collect();
        for (name, h) in &now {
            let was = prev.iter().find(|(n, _)| n == name).map(|(_, h)| h);
            let fresh = new.iter().find(|(n, _)| n == name).map(|(_, h)| h);
            assert!(
                Some(h) == was || Some(h) == fresh,
                "step {step} (killed after {delay:?}, timed_out {}): {name} is neither previous nor complete",
                r.timed_out
            );
        }
        if now != prev && now != new {
            mixed += 1; // model and data from different runs (killed between the two renames)
        }
        assert_eq!(
            hashes(&tmp.path().join("in")),
            input_hashes,
            "input touched"
        );
        for f in std::fs::read_dir(&out_dir).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(".reinit-") {
                std::fs::remove_file(out_dir.join(name)).unwrap();
            }
        }
    }
    eprintln!(
        "sigkill: full run {full:?}; {mixed} of 12 kills left model and data from different runs"
    );
}
