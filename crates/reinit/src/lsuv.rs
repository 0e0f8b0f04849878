//! LSUV's data pass (Mishkin & Matas 2016), the *refine* step of a rewrite:
//! the orthonormal pre-init comes from `reinit-schemes`; here a draft of the
//! rewritten model (every weight drawn, none refined) runs forward on the
//! calibration data, and each LSUV weight's scale is found so that its
//! output variance reaches the target. The scales become
//! [`Refinement`]s of the weights, which the draw applies wherever it
//! produces their values (up front or during the save), so no route can
//! write the pre-init unscaled.

use std::collections::HashMap;

use candle_core::Tensor;
use reinit_candle::{LsuvData, LsuvSettings};
use reinit_onnx::{Model, SaveOptions, TensorId};
use reinit_schemes::{LsuvTolOn, Scheme};

use crate::calibration::Calibration;
use crate::error::Error;
use crate::plan::Plan;
use crate::report::{LsuvLayer, LsuvReport};
use crate::session::{Refinement, Session};

/// What the data pass found: per-weight scales, the report's LSUV section,
/// and warnings (a graph the executor cannot run keeps the pre-init).
#[derive(Debug, Default)]
pub(crate) struct Refined {
    pub refinements: HashMap<TensorId, Refinement>,
    pub report: Option<LsuvReport>,
    pub warnings: Vec<String>,
}

/// Runs LSUV's data pass for the LSUV weights of `plan` (nothing when there
/// are none).
pub(crate) fn refine(model: &Model, plan: &Plan, seed: u64) -> Result<Refined, Error> {
    let lsuv: Vec<_> = plan
        .weights
        .iter()
        .filter(|w| matches!(w.scheme, Scheme::Lsuv(_)))
        .collect();
    let Some(Scheme::Lsuv(params)) = lsuv.first().map(|w| w.scheme) else {
        return Ok(Refined::default());
    };
    let names: Vec<String> = lsuv.iter().map(|w| w.name.clone()).collect();
    let settings = LsuvSettings {
        target_var: params.target_var,
        tol: params.tol,
        tol_on_std: params.tol_on == LsuvTolOn::Std,
        max_iter: params.max_iter,
        batch: 64,
        seed,
    };
    let samples = user_samples(&plan.options.calibration)?;
    let data = match &samples {
        Some(arrays) => LsuvData::Inputs(arrays),
        None => LsuvData::Task,
    };
    let source = match &plan.options.calibration {
        Calibration::Task => "the task `reinit verify` would use".to_string(),
        Calibration::Samples(s) => s.source.clone(),
    };
    // A graph the executor cannot run (an unsupported op, an unusual batch
    // layout) keeps the orthonormal pre-init, and the report says why.
    let outcome = with_draft(model, plan, seed, |pre| {
        Ok(reinit_candle::lsuv(pre, &names, &settings, data))
    })?;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        // Data the user gave and the model cannot take is their error, not a
        // reason to write the pre-init quietly.
        Err(e) if matches!(plan.options.calibration, Calibration::Samples(_)) => {
            let message = format!("lsuv: data pass on {source} failed: {e}");
            return Err(match e {
                reinit_candle::ExecError::Invalid(_)
                | reinit_candle::ExecError::MissingInput(_)
                | reinit_candle::ExecError::Node { .. }
                | reinit_candle::ExecError::Candle(_) => Error::Usage(message),
                _ => Error::Unsupported(message),
            });
        }
        Err(e) => {
            let first_line = e.to_string().lines().next().unwrap_or_default().to_string();
            return Ok(Refined {
                warnings: vec![format!(
                    "lsuv: data pass on {source} failed, weights keep the orthonormal pre-init: {first_line}"
                )],
                ..Refined::default()
            });
        }
    };
    let data = format!("{source}: {}", outcome.data);
    let mut refined = Refined::default();
    let mut layers = Vec::new();
    for found in outcome.scales {
        let Some(w) = lsuv.iter().find(|w| w.name == found.weight) else {
            continue;
        };
        refined.refinements.insert(
            w.tensor,
            Refinement {
                scale: found.scale,
                note: format!(
                    "lsuv: scaled by {:.4} in {} step(s); output variance {:.4} (target {}) on {data}",
                    found.scale, found.iterations, found.variance, params.target_var
                ),
            },
        );
        layers.push(LsuvLayer {
            weight: found.weight,
            scale: found.scale,
            output_variance: found.variance,
            iterations: found.iterations,
        });
    }
    let missed: Vec<&str> = lsuv
        .iter()
        .filter(|w| !refined.refinements.contains_key(&w.tensor))
        .map(|w| w.name.as_str())
        .collect();
    if !missed.is_empty() {
        refined.warnings.push(format!(
            "lsuv: the data pass found no output to calibrate for {}; they keep the orthonormal pre-init",
            missed.join(", ")
        ));
    }
    refined.report = Some(LsuvReport {
        data,
        target_variance: params.target_var,
        layers,
    });
    Ok(refined)
}

/// One input's samples: the graph input (`None`: the first) and the tensor.
type NamedSamples = (Option<String>, Tensor);

/// The user's arrays as candle tensors (`None`: calibrate on the task).
fn user_samples(calibration: &Calibration) -> Result<Option<Vec<NamedSamples>>, Error> {
    let Calibration::Samples(samples) = calibration else {
        return Ok(None);
    };
    samples
        .inputs
        .iter()
        .map(|a| {
            Tensor::from_vec(a.values.clone(), a.shape.clone(), &candle_core::Device::Cpu)
                .map(|t| (a.input.clone(), t))
                .map_err(|e| Error::Usage(format!("calibration data {}: {e}", samples.source)))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Runs `f` on the draft (every weight drawn, none refined): in memory, or,
/// with external data, saved into a temporary directory (its data file
/// beside it) and loaded back.
fn with_draft<T>(
    model: &Model,
    plan: &Plan,
    seed: u64,
    f: impl FnOnce(&Model) -> Result<T, Error>,
) -> Result<T, Error> {
    let draft = Session::draft(model, plan, seed)?;
    if !model.has_external_data() {
        let (_, bytes) = draft.to_bytes()?;
        let pre = Model::from_bytes(bytes, model.base_dir()).map_err(Error::Load)?;
        return f(&pre);
    }
    let dir = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let path = dir.path().join("lsuv-draft.onnx");
    draft.write(&path, &SaveOptions::default())?;
    let pre = Model::load(&path).map_err(Error::Load)?;
    f(&pre)
}
