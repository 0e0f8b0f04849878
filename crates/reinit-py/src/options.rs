//! What only the Python package decides about a rewrite: scheme parameters
//! from keyword arguments (typed by the scheme table, so every parameter of
//! every scheme is a keyword), and where the model goes when no file is
//! named (it is returned). Everything else — checks, plan options, seed,
//! directory targets — is the library's request builder
//! ([`reinit::Request::from_user`]), which the CLI uses too.

use std::path::PathBuf;

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};
use reinit::{Error, Request, SchemeParams};
use reinit_schemes::{ParamKind, ParamValue, all_params};

use crate::Source;

/// The scheme table's parameters as Python keywords (`_` for `-`) with their
/// kind: `"number"`, `"flag"` or `"choice"`.
pub fn keywords() -> Vec<(String, &'static str)> {
    all_params()
        .iter()
        .map(|p| {
            let kind = match p.kind {
                ParamKind::Number => "number",
                ParamKind::Flag => "flag",
                ParamKind::Choice(_) => "choice",
            };
            (p.name.replace('-', "_"), kind)
        })
        .collect()
}

/// Keyword arguments → [`SchemeParams`]. A value of the wrong Python type is
/// a `TypeError`; an unknown name or a bad value is the CLI's usage error
/// (the outer `Result`).
pub fn scheme_params(params: Option<&Bound<'_, PyDict>>) -> PyResult<Result<SchemeParams, Error>> {
    let mut out = SchemeParams::default();
    let Some(params) = params else {
        return Ok(Ok(out));
    };
    let table = all_params();
    for (key, value) in params.iter() {
        let key: String = key.extract()?;
        let name = key.replace('_', "-");
        let Some(shared) = table.iter().find(|p| p.name == name) else {
            return Ok(Err(Error::Usage(format!(
                "unknown scheme parameter {key} (see `reinit schemes`)"
            ))));
        };
        let wrong = |what: &str| {
            PyTypeError::new_err(format!(
                "{key} must be {what}, not {}",
                value
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        };
        let value = match shared.kind {
            ParamKind::Number if !value.is_instance_of::<PyBool>() => {
                ParamValue::Number(value.extract::<f64>().map_err(|_| wrong("a number"))?)
            }
            ParamKind::Number => return Err(wrong("a number")),
            ParamKind::Flag => {
                ParamValue::Flag(value.extract::<bool>().map_err(|_| wrong("a bool"))?)
            }
            ParamKind::Choice(_) => {
                ParamValue::Text(value.extract::<String>().map_err(|_| wrong("a str"))?)
            }
        };
        if let Err(e) = out.set(&name, value) {
            return Ok(Err(e));
        }
    }
    Ok(Ok(out))
}

/// Where the model is written: the request's target (`output`, or the input
/// itself with `in_place`); nothing for a dry run or when neither is given
/// (the Python API then returns the rewritten model instead of choosing a
/// file name).
pub fn output_path(request: &Request, src: &Source) -> Result<Option<PathBuf>, Error> {
    if request.dry_run {
        return Ok(None);
    }
    let output = match src {
        Source::Bytes(_) if request.in_place => {
            return Err(Error::Usage(
                "in_place needs a model given as a path".into(),
            ));
        }
        Source::Bytes(_) => request.output.clone(),
        Source::Path(p) => request.output_for(p),
    };
    match (output, src) {
        (Some(output), _) if output.is_dir() => Err(Error::Usage(format!(
            "{}: output is a directory; give a file name",
            output.display()
        ))),
        (None, Source::Path(p)) if p.is_dir() => Err(Error::Usage(format!(
            "{}: is a directory; directory mode (`run_directory`) rewrites its files, one report each",
            p.display()
        ))),
        (output, _) => Ok(output),
    }
}
