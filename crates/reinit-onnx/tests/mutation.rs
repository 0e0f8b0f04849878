//! Mutation test (issue 7): a deterministic generator corrupts every fixture in
//! many ways (bit flips, truncations, corrupted and overlong length prefixes,
//! swapped and rewritten tags, inserted garbage, duplicated and deleted fields,
//! huge varints); each case is loaded, every tensor read, and the model saved with
//! every float tensor edited. Every case must end in a clean `Err` or a valid
//! output that reloads with the edited values: no panic, no case over 10 s, no
//! `.reinit-*.tmp` left behind.
//!
//! `REINIT_MUTATION_CASES` (default 600) and `REINIT_MUTATION_SEED` scale or vary
//! the run; a failing case is written to `$CARGO_TARGET_TMPDIR/mutation-failures/`.

#[path = "../../reinit/tests/common/mutate.rs"]
mod mutate;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mutate::{KINDS, Rng, mutate, scan};
use reinit_onnx::{Edits, Model, SaveOptions};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one case did, for the summary.
#[derive(Debug, Default, Clone, Copy)]
struct Outcome {
    load_err: bool,
    saved: bool,
    save_err: bool,
}

/// Load, read, edit, save and reload one mutated model. `Err(msg)` is a violated property.
fn exercise(bytes: Vec<u8>, dir: &Path, external: bool) -> Result<Outcome, String> {
    let mut outcome = Outcome::default();
    // from_bytes with and without a base directory, and load from a file.
    let _ = Model::from_bytes(bytes.clone(), None);
    let input = dir.join("input.onnx");
    std::fs::write(&input, &bytes).map_err(|e| e.to_string())?;
    let model = match Model::load(&input) {
        Ok(m) => m,
        Err(e) => {
            let text = e.to_string();
            if !text.contains("input.onnx") {
                return Err(format!("error does not name the file: {text}"));
            }
            outcome.load_err = true;
            return Ok(outcome);
        }
    };
    let mut edits = Edits::default();
    for id in model.ids() {
        let entry = model.tensor(id);
        let _ = model.raw_bytes(id);
        let _ = model.read_i64(id);
        if let Ok(values) = model.read_f64(id) {
            if values.len() != entry.numel() {
                return Err(format!(
                    "tensor {}: read {} values, numel {}",
                    entry.name,
                    values.len(),
                    entry.numel()
                ));
            }
            if entry.dtype.is_float() {
                // negation is exact in every float format
                edits.set(id, values.iter().map(|v| -v).collect());
            }
        }
    }
    let _ = model.metadata("reinit.seed");
    edits.set_metadata("reinit.test", "mutation");
    if !external {
        let _ = model.to_bytes(&edits);
    }
    let out = dir.join("out").join("model.onnx");
    match model.save(
        &out,
        &edits,
        &SaveOptions {
            overwrite: true,
            ..Default::default()
        },
    ) {
        Ok(_) => {
            outcome.saved = true;
            let again =
                Model::load(&out).map_err(|e| format!("saved output does not reload: {e}"))?;
            if again.metadata("reinit.test") != Some("mutation") {
                return Err("saved output lost the metadata".into());
            }
            for id in edits.tensors() {
                let name = &model.tensor(id).name;
                let want = edits.get(id).unwrap();
                let Some(id2) = again.ids().find(|&j| {
                    again.tensor(j).name == *name
                        && again.tensor(j).origin == model.tensor(id).origin
                }) else {
                    return Err(format!("tensor {name} missing from the output"));
                };
                let got = again
                    .read_f64(id2)
                    .map_err(|e| format!("output tensor {name}: {e}"))?;
                let same = got.len() == want.len()
                    && got
                        .iter()
                        .zip(want)
                        .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()));
                if !same {
                    return Err(format!(
                        "tensor {name}: output values are not the edited ones"
                    ));
                }
            }
        }
        Err(e) => {
            outcome.save_err = true;
            let _ = e.to_string();
        }
    }
    let leftovers = leftover_temps(&dir.join("out"));
    if !leftovers.is_empty() {
        return Err(format!("temporary files left behind: {leftovers:?}"));
    }
    Ok(outcome)
}

fn leftover_temps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".reinit-") || n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn mutated_fixtures_load_cleanly_or_fail_cleanly() {
    let cases = env_u64("REINIT_MUTATION_CASES", 600) as usize;
    let seed = env_u64("REINIT_MUTATION_SEED", 0x5eed_0007);
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    let originals: Vec<(PathBuf, Vec<u8>, Vec<mutate::FieldPos>)> = files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let fields = scan(&bytes);
            assert!(
                fields.len() > 10,
                "{}: scanner found {} fields",
                p.display(),
                fields.len()
            );
            (p.clone(), bytes, fields)
        })
        .collect();
    let failures_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mutation-failures");
    let mut rng = Rng::new(seed);
    let mut failures = Vec::new();
    let mut totals = [0usize; 4];
    let started = Instant::now();
    for case in 0..cases {
        let (path, original, fields) = &originals[case % originals.len()];
        let kind = rng.below(KINDS.len());
        let case_seed = rng.next();
        let mutated = mutate(original, fields, kind, &mut Rng::new(case_seed));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let dir = tempfile::tempdir().unwrap();
        let external = name.contains("external");
        if external {
            // the data file the model points at, so external tensors can resolve
            let data = fixtures().join(format!("{name}.data"));
            std::fs::copy(&data, dir.path().join(format!("{name}.data"))).unwrap();
            std::fs::create_dir_all(dir.path().join("out")).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("out")).unwrap();
        let label = format!("case {case} ({name}, {}, seed {case_seed:#x})", KINDS[kind]);
        // Run in a thread so a hang is reported instead of blocking CI forever.
        let (tx, rx) = mpsc::channel();
        let dir_path = dir.path().to_path_buf();
        let bytes = mutated.clone();
        let t0 = Instant::now();
        std::thread::spawn(move || {
            let result = std::panic::catch_unwind(|| exercise(bytes, &dir_path, external));
            let _ = tx.send(result);
        });
        let verdict = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(Ok(o))) => {
                totals[0] += 1;
                totals[1] += o.load_err as usize;
                totals[2] += o.saved as usize;
                totals[3] += o.save_err as usize;
                None
            }
            Ok(Ok(Err(msg))) => Some(msg),
            Ok(Err(panic)) => Some(format!(
                "panic: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
            Err(_) => Some(format!("no result after {:?} (hang)", t0.elapsed())),
        };
        if let Some(msg) = verdict {
            std::fs::create_dir_all(&failures_dir).unwrap();
            let file = failures_dir.join(format!("case{case}-{name}"));
            std::fs::write(&file, &mutated).unwrap();
            failures.push(format!("{label}: {msg} (bytes in {})", file.display()));
            if failures.len() >= 20 {
                break;
            }
        }
    }
    eprintln!(
        "{cases} mutation cases in {:.1} s: {} clean, {} refused at load, {} saved and reloaded, {} refused at save",
        started.elapsed().as_secs_f64(),
        totals[0],
        totals[1],
        totals[2],
        totals[3]
    );
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        cases < 100 || totals[1] > cases / 10,
        "too few mutations were refused: the generator is too mild"
    );
}

#[test]
fn the_generator_is_deterministic_and_covers_every_kind() {
    let original = std::fs::read(fixtures().join("tiny_resnet_bn.onnx")).unwrap();
    let fields = scan(&original);
    for (kind, name) in KINDS.iter().enumerate() {
        let a = mutate(&original, &fields, kind, &mut Rng::new(42 + kind as u64));
        let b = mutate(&original, &fields, kind, &mut Rng::new(42 + kind as u64));
        assert_eq!(a, b, "{name}");
        let differs =
            (0..8).any(|s| mutate(&original, &fields, kind, &mut Rng::new(s)) != original);
        assert!(differs, "{name} never changes the file");
    }
}
