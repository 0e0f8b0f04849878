//! LSUV's data pass (Mishkin & Matas, "All you need is a good init", ICLR 2016):
//! after an orthonormal pre-init, walk the weighted layers in graph order and
//! rescale each weight until the variance of its output on a data batch is
//! within `tol` of the target. The pre-init lives in `reinit-schemes`; this is
//! the part that needs forward passes.

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

/// Runs the LSUV pass over `weights` (initializer names; other layers are left
/// alone but still run) and returns the scale found for each, in graph order.
pub fn lsuv(
    model: &Model,
    weights: &[String],
    settings: &LsuvSettings,
) -> Result<Vec<LsuvScale>, ExecError> {
    let exec = Executor::new(model, &Device::Cpu)?;
    let size = TaskSize {
        train: settings.batch.max(2),
        heldout: 1,
    };
    let task = Task::for_model(&exec, model, settings.seed, size, None)?;
    let n = if task.micro_batch { 1 } else { task.train.len };
    let idx: Vec<usize> = (0..n).collect();
    let batch = task.train.rows(&idx, exec.device())?;
    let mut scales = Vec::new();
    for layer in exec.layers() {
        if !weights.contains(&layer.weight) {
            continue;
        }
        let Some(param) = exec.param(&layer.weight) else {
            continue;
        };
        let (mut scale, mut variance, mut iterations) = (1.0, f64::NAN, 0);
        for _ in 0..settings.max_iter.max(1) {
            let out = exec.forward_probed(
                &batch.inputs,
                Mode::Probe,
                std::slice::from_ref(&layer.output),
            )?;
            variance = variance_of(&out.probes[&layer.output])?;
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
        }
        scales.push(LsuvScale {
            weight: layer.weight.clone(),
            scale,
            variance,
            iterations,
        });
    }
    Ok(scales)
}

fn variance_of(t: &Tensor) -> Result<f64, ExecError> {
    let v: Vec<f64> = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    Ok(v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n)
}
