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
    let alternate = out_dir.join("model.onnx.1.data");
    let external = case.input.with_file_name(format!("{name}.data")).exists();
    // The reference (complete) output for seed 2, and a previous output with seed 1.
    let reference_dir = case.dir.path().join("ref");
    std::fs::create_dir(&reference_dir).unwrap();
    let reference = reference_dir.join("model.onnx");
    assert_eq!(rewrite(&case, &reference, "2", &[]).code, Some(0));
    let ref_hash = hashes(&reference_dir);
    // Replacing a model with external data writes the new data under the name
    // the old model does not use (`model.onnx.1.data`), so the reference for
    // "with a previous output" is itself written over a previous output.
    let over_dir = case.dir.path().join("ref-over");
    std::fs::create_dir(&over_dir).unwrap();
    assert_eq!(
        rewrite(&case, &over_dir.join("model.onnx"), "1", &[]).code,
        Some(0)
    );
    assert_eq!(
        rewrite(&case, &over_dir.join("model.onnx"), "2", &[]).code,
        Some(0)
    );
    let ref_over_hash = hashes(&over_dir);
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
            for f in [&out, &data, &alternate] {
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
                    let expected = if with_previous {
                        &ref_over_hash
                    } else {
                        &ref_hash
                    };
                    assert_eq!(
                        &now, expected,
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

/// The seed the model records, then every float tensor's values, by name
/// (loading checks the external data references: a model whose data file is
/// missing or short fails here). The seed ties the model file to its data: an
/// old model reading a new run's data file would pair seed 1 with seed 2's
/// weights.
fn weights(model: &Path) -> Result<Vec<(String, String)>, String> {
    use sha2::{Digest, Sha256};
    let m = reinit_onnx::Model::load(model).map_err(|e| e.to_string())?;
    let seed = m.metadata("reinit.seed").unwrap_or("none").to_string();
    let mut out = vec![("seed".to_string(), seed)];
    for id in m.ids().filter(|&id| m.tensor(id).dtype.is_float()) {
        let mut h = Sha256::new();
        for v in m.read_f64(id).map_err(|e| e.to_string())? {
            h.update(v.to_bits().to_le_bytes());
        }
        out.push((m.tensor(id).name.clone(), format!("{:x}", h.finalize())));
    }
    Ok(out)
}

/// SIGKILL at several moments while a 3 × 16 MiB external model is replaced.
/// Afterwards the output must load and hold either the previous weights or
/// the complete new ones: never a mix, a truncated file, or a model whose
/// data file belongs to another run. A killed process cannot remove its
/// temporary files: hidden `.reinit-*.tmp` files may remain (documented), and
/// a complete data file the model does not use yet may remain when the kill
/// fell between the two renames.
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
    let run_args = |a: Vec<String>, limit: Duration| {
        run(
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
            limit,
        )
    };
    let ref_dir = tmp.path().join("ref");
    std::fs::create_dir(&ref_dir).unwrap();
    assert_eq!(
        run_args(
            args(&ref_dir.join("one.onnx"), "1"),
            Duration::from_secs(120)
        )
        .code,
        Some(0)
    );
    let t = run_args(
        args(&ref_dir.join("two.onnx"), "2"),
        Duration::from_secs(120),
    );
    assert_eq!(t.code, Some(0), "{}", t.stderr);
    let full = t.elapsed;
    let one = weights(&ref_dir.join("one.onnx")).unwrap();
    let two = weights(&ref_dir.join("two.onnx")).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("m.onnx");
    let (mut kept, mut replaced) = (0, 0);
    for step in 0..12u32 {
        let r = run_args(args(&out, "1"), Duration::from_secs(120));
        assert_eq!(r.code, Some(0), "step {step}: {}", r.stderr);
        let delay = full.mul_f64(f64::from(step) / 10.0);
        let r = run_args(args(&out, "2"), delay);
        let label = format!(
            "step {step} (killed after {delay:?}, timed_out {})",
            r.timed_out
        );
        match weights(&out) {
            Ok(w) if w == one => kept += 1,
            Ok(w) if w == two => replaced += 1,
            Ok(_) => panic!("{label}: the output holds neither the previous nor the new weights"),
            Err(e) => panic!("{label}: the output does not load: {e}"),
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
    eprintln!("sigkill: full run {full:?}; previous kept {kept}, new in place {replaced} of 12");
}

/// The crash window itself: killed after the new data file is renamed into
/// place and before the model is. The previous model must still load with
/// its own weights (its data file untouched).
#[test]
fn a_crash_between_the_two_renames_keeps_the_previous_model_whole() {
    let case = setup("tiny_resnet_bn_external.onnx");
    let out_dir = case.dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("m.onnx");
    let go = |seed, envs: &[(&str, &str)]| rewrite(&case, &out, seed, envs);
    // Twice over, so both data-file names are crossed.
    for round in 0..2 {
        assert_eq!(go("1", &[]).code, Some(0));
        let previous = weights(&out).unwrap();
        let before = hashes(&out_dir);
        let r = go("2", &[("REINIT_ABORT_BEFORE_MODEL_COMMIT", "1")]);
        assert_ne!(r.code, Some(0), "round {round}: the hook did not fire");
        assert_eq!(weights(&out).unwrap(), previous, "round {round}");
        // The previous model and data file are byte-identical; only the new,
        // not yet used, data file (and the killed run's temporary file) were added.
        let after = hashes(&out_dir);
        for file in &before {
            assert!(after.contains(file), "round {round}: {} changed", file.0);
        }
        // The next run succeeds and cleans up the unused data file.
        assert_eq!(go("2", &[]).code, Some(0));
        let data_files = std::fs::read_dir(&out_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".data")
            })
            .count();
        assert_eq!(data_files, 1, "round {round}: {:?}", hashes(&out_dir));
        for f in std::fs::read_dir(&out_dir).unwrap() {
            let name = f.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with(".reinit-") {
                std::fs::remove_file(out_dir.join(name)).unwrap();
            }
        }
    }
}
