//! LSUV's data pass for `--scheme lsuv`: the orthonormal pre-init comes from
//! `reinit-schemes`; here the pre-initialized model runs forward on data (the
//! task `reinit verify` would train on) and each LSUV weight is rescaled until
//! its output variance reaches the target.

use reinit_candle::LsuvSettings;
use reinit_onnx::Model;
use reinit_schemes::{LsuvTolOn, Scheme};

use crate::apply::Applied;
use crate::error::Error;
use crate::plan::Plan;
use crate::report::Stats;

/// Rescales the LSUV weights of `applied` in place. Models with external data,
/// or that the executor cannot run, keep the pre-init, with a warning.
pub fn refine_lsuv(model: &Model, plan: &Plan, applied: &mut Applied) -> Result<(), Error> {
    let lsuv: Vec<_> = plan
        .weights
        .iter()
        .filter(|w| matches!(w.scheme, Scheme::Lsuv(_)))
        .collect();
    let Some(Scheme::Lsuv(params)) = lsuv.first().map(|w| w.scheme) else {
        return Ok(());
    };
    if model.has_external_data() {
        applied.report.warnings.push(
            "lsuv: the data pass needs the model in memory; external-data weights keep the orthonormal pre-init".into(),
        );
        return Ok(());
    }
    let pre = Model::from_bytes(crate::edited_bytes(model, plan, applied)?, model.base_dir())
        .map_err(Error::Load)?;
    let names: Vec<String> = lsuv.iter().map(|w| w.name.clone()).collect();
    let settings = LsuvSettings {
        target_var: params.target_var,
        tol: params.tol,
        tol_on_std: params.tol_on == LsuvTolOn::Std,
        max_iter: params.max_iter,
        batch: 64,
        seed: applied.report.seed,
    };
    // The data pass runs the graph on synthetic data; a graph the executor
    // cannot run (an unsupported op, an unusual batch layout) keeps the
    // orthonormal pre-init, and the report says why.
    let scales = match reinit_candle::lsuv(&pre, &names, &settings) {
        Ok(scales) => scales,
        Err(e) => {
            let first_line = e.to_string().lines().next().unwrap_or_default().to_string();
            applied.report.warnings.push(format!(
                "lsuv: data pass failed, weights keep the orthonormal pre-init: {first_line}"
            ));
            return Ok(());
        }
    };
    for found in scales {
        let Some(w) = lsuv.iter().find(|w| w.name == found.weight) else {
            continue;
        };
        let Some(values) = model
            .edited_values(&applied.edits, w.tensor)
            .map_err(Error::Save)?
        else {
            continue;
        };
        let scaled: Vec<f64> = values.iter().map(|v| v * found.scale).collect();
        if let Some(entry) = applied
            .report
            .weights
            .iter_mut()
            .find(|r| r.name == w.name && r.kind != "bias")
        {
            entry.after = Stats::of(&scaled);
            entry.notes.push(format!(
                "lsuv: scaled by {:.4} in {} step(s); output variance {:.4} (target {})",
                found.scale, found.iterations, found.variance, params.target_var
            ));
        }
        applied.edits.set(w.tensor, scaled);
    }
    Ok(())
}
