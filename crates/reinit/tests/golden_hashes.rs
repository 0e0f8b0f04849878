//! Golden hashes (issue 16): every fixture rewritten with every scheme (and
//! `auto`), default parameters, seed 2024, through the library's rewrite
//! route, must give the sha256 of model and data file recorded in
//! `golden_hashes.txt` (random stream v1, `--stream v1`: the bytes of every
//! release before stream v2, which must stay reproducible) and
//! `golden_hashes_v2.txt` (stream v2, the default). A scheme that refuses a
//! fixture records its error kind, so refusals are pinned too.
//!
//! A change that alters outputs on purpose (a scheme fix) regenerates the
//! table with `REINIT_BLESS=1 cargo nextest run -p reinit -E 'test(golden)'`
//! and commits exactly the changed lines, saying why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use reinit::{Error, PlanOptions};
use reinit_onnx::{Model, SaveOptions};
use reinit_schemes::StreamVersion;
use sha2::{Digest, Sha256};

const SEED: u64 = 2024;

fn table(stream: StreamVersion) -> &'static str {
    match stream {
        StreamVersion::V1 => "tests/golden_hashes.txt",
        StreamVersion::V2 => "tests/golden_hashes_v2.txt",
    }
}

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "fixtures missing");
    files
}

fn schemes() -> impl Iterator<Item = &'static str> {
    reinit_schemes::scheme_names().chain(["auto"])
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:x}", Sha256::digest(&bytes))
}

/// The error's kind (its variant and exit code), not its message: messages
/// may be reworded, the kind of refusal may not change silently.
fn error_kind(e: &Error) -> String {
    let variant = format!("{e:?}");
    let variant = variant
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string();
    format!("error:{variant}:exit{}", e.exit_code())
}

/// One rewrite, into its own directory under a fixed file name (the data
/// file's name is recorded in the model).
fn rewrite(input: &Path, scheme: &str, stream: StreamVersion, dir: &Path) -> String {
    let out = dir.join("out.onnx");
    let result = (|| -> Result<(), Error> {
        let model = Model::load(input).map_err(Error::Load)?;
        let options = PlanOptions {
            scheme: scheme.to_string(),
            stream,
            ..Default::default()
        };
        let plan = reinit::plan(&model, &options)?;
        reinit::Session::new(&model, &plan, SEED)?.write(&out, &SaveOptions::default())?;
        Ok(())
    })();
    match result {
        Ok(()) => {
            let data = dir.join("out.onnx.data");
            let data = if data.exists() {
                sha256(&data)
            } else {
                "-".to_string()
            };
            format!("{} {data}", sha256(&out))
        }
        Err(e) => error_kind(&e),
    }
}

#[test]
fn golden_hashes_of_every_fixture_and_scheme_stream_v1() {
    check(StreamVersion::V1);
}

#[test]
fn golden_hashes_of_every_fixture_and_scheme_stream_v2() {
    check(StreamVersion::V2);
}

fn check(stream: StreamVersion) {
    let table_name = table(stream);
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(PathBuf, &str)> = fixtures()
        .into_iter()
        .flat_map(|f| schemes().map(move |s| (f.clone(), s)))
        .collect();
    let got: BTreeMap<String, String> = cases
        .par_iter()
        .enumerate()
        .map(|(i, (fixture, scheme))| {
            let dir = tmp.path().join(i.to_string());
            std::fs::create_dir(&dir).unwrap();
            let name = fixture.file_name().unwrap().to_string_lossy();
            (
                format!("{name} {scheme}"),
                rewrite(fixture, scheme, stream, &dir),
            )
        })
        .collect();
    let table: String = got.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(table_name);
    if std::env::var_os("REINIT_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &table).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with REINIT_BLESS=1)", path.display()));
    let expected: BTreeMap<&str, &str> = expected
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (f, s, rest) = (parts.next()?, parts.next()?, parts.next()?);
            Some((&l[..f.len() + 1 + s.len()], rest))
        })
        .collect();
    let mut diffs = Vec::new();
    for (key, value) in &got {
        match expected.get(key.as_str()) {
            Some(e) if e == value => {}
            Some(e) => diffs.push(format!("{key}: expected {e}, got {value}")),
            None => diffs.push(format!("{key}: not in the table (got {value})")),
        }
    }
    for key in expected.keys() {
        if !got.contains_key(*key) {
            diffs.push(format!("{key}: in the table, no longer produced"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} outputs differ from {table_name} (REINIT_BLESS=1 regenerates it; commit only \
         deliberate changes):\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}
