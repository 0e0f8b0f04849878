//! Helpers for the end-to-end tests of the `reinit` binary.
#![allow(dead_code)]

pub mod mutate;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub const PANIC_EXIT: i32 = 101;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_reinit"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn all_fixtures() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    files
}

pub fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{:x}", Sha256::digest(&bytes))
}

/// Copies a fixture (and its external data) into `dir`; returns the model path.
pub fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(fixtures().join(name), dir.join(name)).unwrap();
    let data = fixtures().join(format!("{name}.data"));
    if data.exists() {
        std::fs::copy(&data, dir.join(format!("{name}.data"))).unwrap();
    }
    dir.join(name)
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// Runs the binary with a wall-clock limit (polling `try_wait`); kills it on timeout.
pub fn run(args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Run {
    let mut cmd = Command::new(bin());
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let t0 = Instant::now();
    let mut child = cmd.spawn().expect("spawn reinit");
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if t0.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run {
        code: status.code(),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        timed_out,
        elapsed: t0.elapsed(),
    }
}

pub fn run_ok(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let r = run(args, envs, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "reinit {args:?} failed:\n{}", r.stderr);
    r
}

/// Runs `reinit verify MODEL ARGS` (with `--json`, which the caller passes),
/// asserts exit 0 and returns the parsed report.
pub fn verify_json(model: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin())
        .arg("verify")
        .arg(model)
        .args(args)
        .output()
        .expect("spawn reinit");
    assert!(
        out.status.success(),
        "reinit verify {} {args:?}: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("verify --json prints one JSON report")
}

/// The peak resident set (VmHWM, in KiB) of a running process; `None` once it
/// is gone or off Linux.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the binary with `args` (stdout discarded), sampling its peak RSS every
/// `every`; asserts exit 0 and returns the peak in bytes.
pub fn run_peak_rss(args: &[&str], every: Duration) -> u64 {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reinit");
    let pid = child.id();
    let mut peak = 0u64;
    let status = loop {
        if let Some(k) = vm_hwm_kib(pid) {
            peak = peak.max(k);
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(every);
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "reinit {args:?}: {err}");
    peak * 1024
}

/// Names in `dir` that look like reinit's temporary files.
pub fn temp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".reinit-") || n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

/// A copy of `bytes` (a ModelProto) with its top-level fields reordered so that
/// `graph` (field 7) comes last — valid protobuf, as some writers emit it.
pub fn graph_last(bytes: &[u8]) -> Vec<u8> {
    let fields = mutate::scan(bytes);
    let top: Vec<_> = fields.iter().filter(|f| f.depth == 0).collect();
    let (mut graph, mut rest) = (Vec::new(), Vec::new());
    for f in top {
        let whole = &bytes[f.tag.start..f.value.end];
        if bytes[f.tag.start] == (7 << 3 | 2) {
            graph.extend_from_slice(whole);
        } else {
            rest.extend_from_slice(whole);
        }
    }
    assert!(!graph.is_empty());
    rest.extend(graph);
    rest
}

// ------------------------------------------------------------------ model generator

fn field_len(number: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.extend(mutate::encode_varint(u64::from(number << 3 | 2)));
    out.extend(mutate::encode_varint(payload.len() as u64));
    out.extend_from_slice(payload);
}

fn field_varint(number: u32, v: u64, out: &mut Vec<u8>) {
    out.extend(mutate::encode_varint(u64::from(number << 3)));
    out.extend(mutate::encode_varint(v));
}

fn value_info(name: &str, dims: &[u64]) -> Vec<u8> {
    let mut shape = Vec::new();
    for &d in dims {
        let mut dim = Vec::new();
        field_varint(1, d, &mut dim);
        field_len(1, &dim, &mut shape);
    }
    let mut tensor_type = Vec::new();
    field_varint(1, 1, &mut tensor_type); // FLOAT
    field_len(2, &shape, &mut tensor_type);
    let mut type_proto = Vec::new();
    field_len(1, &tensor_type, &mut type_proto);
    let mut vi = Vec::new();
    field_len(1, name.as_bytes(), &mut vi);
    field_len(2, &type_proto, &mut vi);
    vi
}

/// A MatMul(X, W) + ReLU chain with float32 weights of `n × n` (all zeros)
/// in one external data file, created sparse.
pub fn external_mlp(dir: &Path, name: &str, n: u64, layers: usize) -> PathBuf {
    mlp(dir, name, &vec![n; layers + 1], true)
}

/// A MatMul(X, W) + ReLU chain, weight `i` of `widths[i] × widths[i+1]`
/// (stored `(n_in, n_out)`, float32, all zeros), either embedded as
/// `raw_data` or in one external data file `<name>.data`, created sparse.
pub fn mlp(dir: &Path, name: &str, widths: &[u64], external: bool) -> PathBuf {
    let layers = widths.len() - 1;
    let bytes = |i: usize| widths[i] * widths[i + 1] * 4;
    let data_name = format!("{name}.data");
    let mut graph = Vec::new();
    let mut prev = "X".to_string();
    for i in 0..layers {
        let mm = format!("h{i}");
        let mut node = Vec::new();
        field_len(1, prev.as_bytes(), &mut node);
        field_len(1, format!("W{i}").as_bytes(), &mut node);
        let last = i + 1 == layers;
        let out = if last { "Y".to_string() } else { mm.clone() };
        field_len(2, out.as_bytes(), &mut node);
        field_len(3, format!("matmul{i}").as_bytes(), &mut node);
        field_len(4, b"MatMul", &mut node);
        field_len(1, &node, &mut graph);
        if !last {
            let mut relu = Vec::new();
            field_len(1, mm.as_bytes(), &mut relu);
            field_len(2, format!("r{i}").as_bytes(), &mut relu);
            field_len(3, format!("relu{i}").as_bytes(), &mut relu);
            field_len(4, b"Relu", &mut relu);
            field_len(1, &relu, &mut graph);
            prev = format!("r{i}");
        }
    }
    field_len(2, b"external_mlp", &mut graph);
    let mut offset = 0;
    for i in 0..layers {
        let mut t = Vec::new();
        field_varint(1, widths[i], &mut t);
        field_varint(1, widths[i + 1], &mut t);
        field_varint(2, 1, &mut t);
        field_len(8, format!("W{i}").as_bytes(), &mut t);
        if external {
            for (k, v) in [
                ("location", data_name.clone()),
                ("offset", offset.to_string()),
                ("length", bytes(i).to_string()),
            ] {
                let mut e = Vec::new();
                field_len(1, k.as_bytes(), &mut e);
                field_len(2, v.as_bytes(), &mut e);
                field_len(13, &e, &mut t);
            }
            field_varint(14, 1, &mut t);
        } else {
            field_len(9, &vec![0u8; bytes(i) as usize], &mut t);
        }
        offset += bytes(i);
        field_len(5, &t, &mut graph);
    }
    field_len(11, &value_info("X", &[1, widths[0]]), &mut graph);
    field_len(12, &value_info("Y", &[1, widths[layers]]), &mut graph);
    let mut model = Vec::new();
    field_varint(1, 8, &mut model);
    field_len(2, b"reinit-tests", &mut model);
    field_len(7, &graph, &mut model);
    let mut opset = Vec::new();
    field_len(1, b"", &mut opset);
    field_varint(2, 17, &mut opset);
    field_len(8, &opset, &mut model);
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, model).unwrap();
    if external {
        let data = std::fs::File::create(dir.join(&data_name)).unwrap();
        data.set_len(offset).unwrap();
    }
    path
}
