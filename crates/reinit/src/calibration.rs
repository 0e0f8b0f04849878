//! The data LSUV's data pass calibrates on: the user's samples
//! (`--calibration-data FILE`, `calibration_data=` in Python) or, by default,
//! the inputs of the task `reinit verify` would train on. Part of the request
//! ([`PlanOptions::calibration`](crate::PlanOptions)), so every route that
//! applies a plan calibrates on the same data.

use std::path::Path;
use std::sync::Arc;

use crate::error::Error;

/// Which samples LSUV runs the pre-initialized model on.
#[derive(Debug, Clone, Default)]
pub enum Calibration {
    /// The inputs of the task `reinit verify` would use for the model.
    #[default]
    Task,
    /// The user's samples (shared: the options are cloned into the plan).
    Samples(Arc<Samples>),
}

/// User samples for the graph's inputs, the first axis of each array being
/// the sample axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Where they came from (a file, "Python arrays"), for the report.
    pub source: String,
    pub inputs: Vec<SampleArray>,
}

/// One input's samples.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleArray {
    /// The graph input; `None` for a lone array (the model's first input).
    pub input: Option<String>,
    /// Shape, samples first.
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl SampleArray {
    /// Checks that `values` fill `shape` and that there is a sample axis with
    /// at least one sample.
    pub fn new(input: Option<String>, shape: Vec<usize>, values: Vec<f32>) -> Result<Self, Error> {
        let what = input.as_deref().unwrap_or("calibration data");
        if shape.is_empty() || shape[0] == 0 {
            return Err(Error::Usage(format!(
                "{what}: needs a first (sample) axis with at least one sample, got shape {shape:?}"
            )));
        }
        if shape.iter().product::<usize>() != values.len() {
            return Err(Error::Usage(format!(
                "{what}: shape {shape:?} does not match {} values",
                values.len()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(Error::Usage(format!(
                "{what}: holds NaN or infinite values"
            )));
        }
        Ok(SampleArray {
            input,
            shape,
            values,
        })
    }
}

impl Calibration {
    /// Reads `.npy` (one float array: the model's first input) or `.npz`
    /// (float arrays keyed by input name; a lone array in an `.npz` feeds the
    /// first input whatever its key).
    #[cfg(feature = "verify")]
    pub fn load(path: &Path) -> Result<Calibration, Error> {
        use candle_core::{DType, Tensor};
        let bad = |e: &dyn std::fmt::Display| {
            Error::Usage(format!(
                "--calibration-data {}: {}",
                path.display(),
                e.to_string().lines().next().unwrap_or_default()
            ))
        };
        if !path.is_file() {
            return Err(bad(&"no such file"));
        }
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let arrays: Vec<(Option<String>, Tensor)> = match ext.as_deref() {
            Some("npy") => vec![(None, Tensor::read_npy(path).map_err(|e| bad(&e))?)],
            Some("npz") => {
                let mut arrays = Tensor::read_npz(path).map_err(|e| bad(&e))?;
                arrays.sort_by(|a, b| a.0.cmp(&b.0));
                match arrays.len() {
                    0 => return Err(bad(&"the archive holds no arrays")),
                    1 => vec![(None, arrays.remove(0).1)],
                    _ => arrays.into_iter().map(|(k, t)| (Some(k), t)).collect(),
                }
            }
            _ => return Err(bad(&"expected a .npy or .npz file")),
        };
        let inputs = arrays
            .into_iter()
            .map(|(name, t)| {
                if !t.dtype().is_float() {
                    let key = name.as_deref().unwrap_or("array");
                    return Err(bad(&format!(
                        "{key}: expected a float array, got {:?}",
                        t.dtype()
                    )));
                }
                let shape = t.dims().to_vec();
                let values = t
                    .to_dtype(DType::F32)
                    .and_then(|t| t.flatten_all())
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| bad(&e))?;
                SampleArray::new(name, shape, values).map_err(|e| bad(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Calibration::Samples(Arc::new(Samples {
            source: path.display().to_string(),
            inputs,
        })))
    }

    /// Without the `verify` feature there is no data pass to calibrate.
    #[cfg(not(feature = "verify"))]
    pub fn load(path: &Path) -> Result<Calibration, Error> {
        Err(Error::Usage(format!(
            "--calibration-data {}: this build has no LSUV data pass (built without the `verify` feature)",
            path.display()
        )))
    }
}
