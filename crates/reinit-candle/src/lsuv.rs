//! LSUV's data pass (Mishkin & Matas, "All you need is a good init", ICLR 2016):
//! after an orthonormal pre-init, walk the weighted layers in graph order and
//! rescale each weight until the variance of its output on a data batch is
//! within `tol` of the target. The pre-init lives in `reinit-schemes`; this is
//! the part that needs forward passes.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use reinit_onnx::Model;

use crate::data::{Task, TaskSize};
use crate::error::ExecError;
use crate::executor::{Executor, Mode};

#[derive(Debug, Clone, Copy)]
pub struct LsuvSettings {
    pub target_var: f64,
    pub tol: f64,
    /// Compare standard deviations (√variance vs √target) instead of variances.
    pub tol_on_std: bool,
    pub max_iter: usize,
    /// Samples in the data batch.
    pub batch: usize,
    pub seed: u64,
}

/// What LSUV did to one weight.
#[derive(Debug, Clone, PartialEq)]
pub struct LsuvScale {
    pub weight: String,
    /// Product of every rescaling applied.
    pub scale: f64,
    /// Output variance after the last rescaling.
    pub variance: f64,
    pub iterations: usize,
}

/// The samples LSUV runs the model on.
#[derive(Debug, Clone, Copy)]
pub enum LsuvData<'a> {
    /// The inputs of the task `verify` would train on (`settings.batch` samples).
    Task,
    /// The caller's samples by graph input (`None`: the first input), sample
    /// axis first; every sample is used.
    Inputs(&'a [(Option<String>, Tensor)]),
}

/// What the LSUV pass did, and on which data.
#[derive(Debug, Clone, PartialEq)]
pub struct LsuvOutcome {
    /// One entry per weight found, in graph order.
    pub scales: Vec<LsuvScale>,
    /// The data the pass ran on, in words (the task's name, or "N samples").
    pub data: String,
}

/// Runs the LSUV pass over `weights` (initializer names; other layers are left
/// alone but still run) and returns the scale found for each, in graph order.
pub fn lsuv(
    model: &Model,
    weights: &[String],
    settings: &LsuvSettings,
    data: LsuvData<'_>,
) -> Result<LsuvOutcome, ExecError> {
    let exec = Executor::new(model, &Device::Cpu)?;
    let (inputs, described) = match data {
        LsuvData::Task => {
            let size = TaskSize {
                train: settings.batch.max(2),
                heldout: 1,
            };
            let task = Task::for_model(&exec, model, settings.seed, size, None)?;
            let n = if task.micro_batch { 1 } else { task.train.len };
            let idx: Vec<usize> = (0..n).collect();
            let batch = task.train.rows(&idx, exec.device())?;
            (batch.inputs, format!("task `{}` ({n} samples)", task.name))
        }
        LsuvData::Inputs(arrays) => user_inputs(&exec, arrays)?,
    };
    let mut scales = Vec::new();
    for layer in exec.layers() {
        if !weights.contains(&layer.weight) {
            continue;
        }
        let Some(param) = exec.param(&layer.weight) else {
            continue;
        };
        let probe = |exec: &Executor| -> Result<f64, ExecError> {
            let out =
                exec.forward_probed(&inputs, Mode::Probe, std::slice::from_ref(&layer.output))?;
            variance_of(&out.probes[&layer.output])
        };
        let (mut scale, mut iterations) = (1.0, 0);
        let mut variance = probe(&exec)?;
        while iterations < settings.max_iter.max(1) {
            let gap = if settings.tol_on_std {
                (variance.sqrt() - settings.target_var.sqrt()).abs()
            } else {
                (variance - settings.target_var).abs()
            };
            if !variance.is_finite() || variance <= 0.0 || gap < settings.tol {
                break;
            }
            let step = (settings.target_var / variance).sqrt();
            let scaled = (param.var.as_tensor() * step)?;
            param.var.set(&scaled)?;
            scale *= step;
            iterations += 1;
            // Measured after every step, so `variance` is what the layer gives
            // with the scale returned.
            variance = probe(&exec)?;
        }
        scales.push(LsuvScale {
            weight: layer.weight.clone(),
            scale,
            variance,
            iterations,
        });
    }
    Ok(LsuvOutcome {
        scales,
        data: described,
    })
}

/// The caller's arrays by graph input name; every float input must be given
/// (a lone unnamed array feeds the first input), on the executor's device.
fn user_inputs(
    exec: &Executor,
    arrays: &[(Option<String>, Tensor)],
) -> Result<(HashMap<String, Tensor>, String), ExecError> {
    let specs = exec.inputs();
    let mut inputs = HashMap::new();
    for (name, t) in arrays {
        let name = match name {
            Some(n) => n.clone(),
            None => specs
                .first()
                .map(|s| s.name.clone())
                .ok_or_else(|| ExecError::Invalid("the graph has no inputs".into()))?,
        };
        if !specs.iter().any(|s| s.name == name) {
            let known: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(ExecError::Invalid(format!(
                "calibration data for `{name}`, which is not a graph input (inputs: {})",
                known.join(", ")
            )));
        }
        inputs.insert(name, t.to_device(exec.device())?);
    }
    let missing: Vec<&str> = specs
        .iter()
        .filter(|s| !inputs.contains_key(&s.name))
        .map(|s| s.name.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ExecError::Invalid(format!(
            "calibration data gives no samples for input(s) {}",
            missing.join(", ")
        )));
    }
    let counts: Vec<usize> = inputs.values().map(|t| t.dim(0).unwrap_or(0)).collect();
    if counts.windows(2).any(|w| w[0] != w[1]) {
        return Err(ExecError::Invalid(format!(
            "calibration inputs disagree on the number of samples: {counts:?}"
        )));
    }
    let n = counts.first().copied().unwrap_or(0);
    Ok((inputs, format!("{n} samples")))
}

fn variance_of(t: &Tensor) -> Result<f64, ExecError> {
    let v: Vec<f64> = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    Ok(v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n)
}
