//! The native half of the `reinit` Python package (`reinit._reinit`).
//!
//! The public Python API lives in `python/reinit/__init__.py`; this module
//! exposes thin functions over the `reinit` facade that take plain values and
//! return JSON text, bytes and numpy arrays. Every function releases the GIL
//! while the engine works, and turns every engine error (and any panic) into a
//! `reinit.ReinitError` subclass chosen by the exit code the CLI would use, with
//! the CLI's message.

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use numpy::PyReadonlyArrayDyn;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict};
use reinit::{Error, Report, Request, UserRequest};
use reinit_onnx::Model;

pub mod options;
mod weights;

pub use weights::{Node, Values, Weight, read_weights};

/// A model as Python hands it over: a file path, or the serialized bytes
/// (borrowed from the Python `bytes` object, not copied).
pub enum Source {
    Path(PathBuf),
    Bytes(Bytes),
}

impl Source {
    /// Loads the model; errors are the facade's `Error::Load`, as in the CLI.
    pub fn load(&self) -> Result<Model, Error> {
        match self {
            Source::Path(path) => Model::load(path),
            Source::Bytes(bytes) => Model::from_bytes(bytes.clone(), None),
        }
        .map_err(Error::Load)
    }
}

fn source(model: &Bound<'_, PyAny>) -> PyResult<Source> {
    if let Ok(bytes) = model.extract::<PyBackedBytes>() {
        return Ok(Source::Bytes(Bytes::from_owner(bytes)));
    }
    match model.extract::<PathBuf>() {
        Ok(path) => Ok(Source::Path(path)),
        Err(_) => Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "model must be a path (str or os.PathLike), bytes, or an onnx.ModelProto, not {}",
            model.get_type().name()?
        ))),
    }
}

/// The CLI's error text: the message, then each distinct cause on its own
/// `  caused by:` line (what `reinit` prints after `reinit: error: `).
pub fn cli_message(err: &Error) -> String {
    let mut message = err.to_string();
    let first = message.clone();
    let mut cause = std::error::Error::source(err);
    while let Some(c) = cause {
        let text = c.to_string();
        if !first.contains(&text) {
            message.push_str(&format!("\n  caused by: {text}"));
        }
        cause = c.source();
    }
    message
}

/// Name of the Python exception class for a CLI exit code.
pub fn exception_name(exit_code: i32) -> &'static str {
    use reinit::error::exit;
    match exit_code {
        exit::USAGE => "UsageError",
        exit::INVALID_INPUT => "InvalidModelError",
        exit::UNSAFE_INPUT => "UnsafeModelError",
        exit::IO => "ReinitIOError",
        exit::UNSUPPORTED => "UnsupportedError",
        _ => "ReinitError",
    }
}

fn raise(py: Python<'_>, class: &str, message: String) -> PyErr {
    match py
        .import("reinit._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.cast_into::<pyo3::types::PyType>().map_err(PyErr::from))
    {
        Ok(ty) => PyErr::from_type(ty, message),
        Err(_) => pyo3::exceptions::PyRuntimeError::new_err(message),
    }
}

fn to_py(py: Python<'_>, err: Error) -> PyErr {
    raise(py, exception_name(err.exit_code()), cli_message(&err))
}

/// Runs `work` without the GIL; engine errors and panics become Python exceptions.
fn engine<T: Send>(py: Python<'_>, work: impl FnOnce() -> Result<T, Error> + Send) -> PyResult<T> {
    let outcome = py.detach(|| std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py(py, err)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(raise(
                py,
                "ReinitError",
                format!("internal error (a bug in reinit, please report it): {what}"),
            ))
        }
    }
}

/// What [`run_apply`] produced.
pub struct ApplyOutcome {
    pub report: Report,
    /// The rewritten model, when asked for and not written elsewhere only.
    pub bytes: Option<Vec<u8>>,
}

/// `reinit apply` for one model, as the CLI's `rewrite` does it; `want_bytes`
/// also returns the rewritten model (for bytes / ModelProto inputs, or a path
/// without `output`).
pub fn run_apply(
    src: &Source,
    user: &UserRequest,
    want_bytes: bool,
) -> Result<ApplyOutcome, Error> {
    let request = Request::from_user(user)?;
    let output = options::output_path(&request, src)?;
    let t0 = Instant::now();
    let model = src.load()?;
    if model.has_external_data() && want_bytes && output.is_none() && !request.dry_run {
        return Err(Error::Usage(
            "a model with external data must be written to a file: pass output=".into(),
        ));
    }
    let t_load = t0.elapsed();
    let plan = reinit::plan(&model, &request.options)?;
    let t_plan = t0.elapsed() - t_load;
    // Masks only when written (`mask_out=`): the result carries none.
    let options = reinit::SessionOptions {
        masks: request.mask_out.is_some(),
        ..Default::default()
    };
    let session = reinit::Session::with_options(&model, &plan, request.seed, options)?;
    let write_masks = |masks: &[reinit::Mask]| match request.mask_out.as_deref() {
        Some(mask_out) => reinit::write_masks(masks, mask_out),
        None => Ok(()),
    };
    let (mut applied, bytes) = match output.as_deref() {
        _ if request.dry_run => (session.dry_run()?, None),
        Some(path) => {
            let rewritten = session.write(path, &request.save)?;
            write_masks(&rewritten.masks)?;
            let bytes = want_bytes
                .then(|| std::fs::read(path))
                .transpose()
                .map_err(|e| Error::Io {
                    path: path.to_path_buf(),
                    source: e,
                })?;
            (rewritten, bytes)
        }
        None if want_bytes => {
            let (rewritten, bytes) = session.to_bytes()?;
            write_masks(&rewritten.masks)?;
            (rewritten, Some(bytes))
        }
        None => (session.dry_run()?, None),
    };
    let report = &mut applied.report;
    // Returning bytes is not a dry run even though no file was written.
    report.dry_run = request.dry_run;
    report.timings_ms.load = t_load.as_secs_f64() * 1e3;
    report.timings_ms.analyze_and_plan = t_plan.as_secs_f64() * 1e3;
    Ok(ApplyOutcome {
        report: applied.report,
        bytes,
    })
}

/// Directory mode (the library's, as the CLI runs it): every `.onnx` file of
/// `dir` rewritten with one seed; one report per file.
pub fn run_directory(dir: &std::path::Path, user: &UserRequest) -> Result<Vec<Report>, Error> {
    let request = Request::from_user(user)?;
    reinit::rewrite_directory(
        dir,
        &request.directory_output(dir),
        &request.options,
        request.seed,
        &request.save,
        reinit::Progress::NONE,
        &mut |_| {},
    )
}

/// The `reinit inspect --json` document.
pub fn run_inspect(src: &Source) -> Result<serde_json::Value, Error> {
    let model = src.load()?;
    let mut doc = reinit_graph::analyze(&model).to_json();
    doc["model"] = serde_json::Value::String(match src {
        Source::Path(p) => p.display().to_string(),
        Source::Bytes(_) => model.path().display().to_string(),
    });
    Ok(doc)
}

/// Native `apply`. Returns `(report_json, summary, table, model_bytes | None)`.
/// `params` holds the scheme parameters (keywords of [`_scheme_parameters`]).
#[pyfunction]
#[pyo3(signature = (model, scheme, *, seed=None, stream=None, output=None, params=None, rules=None,
    rules_toml=None, only=None, exclude=None, fallback="keep".to_string(),
    zero_init_last_gamma=false, reset_norms=false, calibration_data=None, calibration_file=None,
    force=false, in_place=false, dry_run=false, mask_out=None, want_bytes=false))]
#[allow(clippy::too_many_arguments)]
fn _apply<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    scheme: String,
    seed: Option<u64>,
    stream: Option<String>,
    output: Option<PathBuf>,
    params: Option<Bound<'py, PyDict>>,
    rules: Option<PathBuf>,
    rules_toml: Option<String>,
    only: Option<String>,
    exclude: Option<String>,
    fallback: String,
    zero_init_last_gamma: bool,
    reset_norms: bool,
    calibration_data: Option<Vec<(Option<String>, PyReadonlyArrayDyn<'py, f32>)>>,
    calibration_file: Option<PathBuf>,
    force: bool,
    in_place: bool,
    dry_run: bool,
    mask_out: Option<PathBuf>,
    want_bytes: bool,
) -> PyResult<(String, String, String, Option<Bound<'py, PyBytes>>)> {
    let src = source(model)?;
    let calibration = match calibration_data {
        Some(arrays) => {
            let inputs = arrays
                .into_iter()
                .map(|(name, a)| {
                    let view = a.as_array();
                    reinit::SampleArray::new(
                        name,
                        view.shape().to_vec(),
                        view.iter().copied().collect(),
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| to_py(py, e))?;
            reinit::Calibration::Samples(std::sync::Arc::new(reinit::Samples {
                source: "calibration_data (Python arrays)".into(),
                inputs,
            }))
        }
        None => reinit::Calibration::Task,
    };
    let params = options::scheme_params(params.as_ref())?.map_err(|e| to_py(py, e))?;
    let args = UserRequest {
        scheme,
        seed,
        stream,
        params,
        rules_file: rules,
        rules_toml,
        only,
        exclude,
        fallback,
        zero_init_last_gamma,
        reset_norms,
        // The wrapper passes arrays or a file, never both.
        calibration_file: calibration_file
            .filter(|_| matches!(calibration, reinit::Calibration::Task)),
        calibration,
        output,
        in_place,
        force,
        dry_run,
        mask_out,
    };
    if let Source::Path(dir) = &src
        && dir.is_dir()
    {
        let reports = engine(py, || run_directory(dir, &args))?;
        let json = serde_json::json!({ "files": reports }).to_string();
        let summary: String = reports.iter().map(Report::summary).collect();
        let table: String = reports.iter().map(Report::table).collect();
        return Ok((json, summary, table, None));
    }
    let outcome = engine(py, || run_apply(&src, &args, want_bytes))?;
    let json = serde_json::to_string(&outcome.report).unwrap_or_default();
    let bytes = outcome.bytes.map(|b| PyBytes::new(py, &b));
    Ok((
        json,
        outcome.report.summary(),
        outcome.report.table(),
        bytes,
    ))
}

/// Native `inspect`: the `reinit inspect --json` document as JSON text.
#[pyfunction]
fn _inspect(py: Python<'_>, model: &Bound<'_, PyAny>) -> PyResult<String> {
    let src = source(model)?;
    let doc = engine(py, || run_inspect(&src))?;
    Ok(serde_json::to_string(&doc).unwrap_or_default())
}

/// `reinit verify` for one model: the `--json` document as JSON text.
/// `params_json` holds the scheme parameters (kebab-case keys, as in `--rules`).
#[pyfunction]
#[pyo3(signature = (model, schemes, *, seed=0, params_json=None, steps=None, lr=None,
    batch=None, optimizer=None, lr_schedule=None, device="cpu".to_string(), input_shape=None,
    input_q=None, plot=None, report=None, command=String::new()))]
#[allow(clippy::too_many_arguments)]
fn _verify(
    py: Python<'_>,
    model: &Bound<'_, PyAny>,
    schemes: Vec<String>,
    seed: u64,
    params_json: Option<String>,
    steps: Option<usize>,
    lr: Option<f64>,
    batch: Option<usize>,
    optimizer: Option<String>,
    lr_schedule: Option<String>,
    device: String,
    input_shape: Option<String>,
    input_q: Option<f64>,
    plot: Option<PathBuf>,
    report: Option<PathBuf>,
    command: String,
) -> PyResult<String> {
    let src = source(model)?;
    let verified = engine(py, || {
        let params: reinit::SchemeParams = match &params_json {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| Error::Usage(format!("scheme parameters: {e}")))?,
            None => Default::default(),
        };
        let settings = reinit::VerifySettings {
            steps,
            lr,
            batch,
            optimizer,
            lr_schedule,
            device: device.clone(),
            input_shape,
            input_q,
            plot,
        };
        let config = settings.config(seed)?;
        let model = src.load()?;
        let run = reinit::verify(&model, &schemes, &params, seed, config)?;
        if let Some(path) = &report {
            let label = match &src {
                Source::Path(p) => p.display().to_string(),
                Source::Bytes(_) => "(in-memory model)".to_string(),
            };
            reinit::verify_html::write_page(&run, &model, &label, &device, &command, path)?;
        }
        Ok(run)
    })?;
    Ok(serde_json::to_string(&verified).unwrap_or_default())
}

/// The scheme table's parameters as keyword names (`_` for `-`) with their
/// kind (`number`, `flag`, `choice`): what `reinit.apply` accepts.
#[pyfunction]
fn _scheme_parameters() -> Vec<(String, &'static str)> {
    options::keywords()
}

/// Whether this build can run `verify` (the candle trainer is compiled in).
#[pyfunction]
fn _has_verify() -> bool {
    true
}

/// The version of the engine (the `reinit` crate).
#[pyfunction]
fn _engine_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _reinit(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_apply, m)?)?;
    m.add_function(wrap_pyfunction!(_inspect, m)?)?;
    m.add_function(wrap_pyfunction!(weights::_weights, m)?)?;
    m.add_function(wrap_pyfunction!(_verify, m)?)?;
    m.add_function(wrap_pyfunction!(_scheme_parameters, m)?)?;
    m.add_function(wrap_pyfunction!(_has_verify, m)?)?;
    m.add_function(wrap_pyfunction!(_engine_version, m)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures")
            .join(name)
    }

    fn args(scheme: &str) -> UserRequest {
        UserRequest {
            scheme: scheme.into(),
            seed: Some(7),
            ..Default::default()
        }
    }

    #[test]
    fn bytes_and_path_give_the_same_model() {
        let path = fixture("mlp_tanh.onnx");
        let from_path = run_apply(&Source::Path(path.clone()), &args("orthogonal"), true).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let from_bytes = run_apply(
            &Source::Bytes(Bytes::from(bytes)),
            &args("orthogonal"),
            true,
        )
        .unwrap();
        assert_eq!(from_path.bytes, from_bytes.bytes);
        assert!(!from_path.report.weights.is_empty());
    }

    #[test]
    fn errors_keep_the_cli_message_and_class() {
        let mut a = args("he");
        a.params.set("density", 0.5).unwrap();
        let err = run_apply(&Source::Path(fixture("mlp_tanh.onnx")), &a, true)
            .err()
            .unwrap();
        assert_eq!(exception_name(err.exit_code()), "UsageError");
        assert!(cli_message(&err).contains("--density does not apply to scheme he"));
        let err = Source::Bytes(Bytes::from_static(b"not a model"))
            .load()
            .err()
            .unwrap();
        assert_eq!(exception_name(err.exit_code()), "InvalidModelError");
    }

    #[test]
    fn weights_and_nodes_are_read() {
        let (weights, nodes) =
            read_weights(&Source::Path(fixture("tiny_transformer.onnx"))).unwrap();
        assert!(weights.iter().any(|w| w.name.starts_with("onnx::MatMul_")));
        assert!(nodes.iter().any(|n| n.op_type == "MatMul"));
    }
}
