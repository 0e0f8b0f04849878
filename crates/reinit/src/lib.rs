//! # reinit — re-initialize the weights of ONNX models
//!
//! The facade over the workspace: [`plan`] decides which weights a scheme
//! touches and why, [`apply`] prepares them (deterministically from a seed, in
//! parallel), and [`write`](fn@write) saves the result, changing nothing else in the file.
//! Most weights are drawn during the save, as the writer reaches them; their
//! report entries join `applied.report` then.
//! The `reinit` binary is a thin clap layer over these functions.
//!
//! ```
//! use reinit::{PlanOptions, plan, apply};
//! use reinit_onnx::{Model, SaveOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/mlp_tanh.onnx"))?;
//! let options = PlanOptions { scheme: "orthogonal".into(), ..Default::default() };
//! let plan = plan(&model, &options)?;
//! let mut applied = apply(&model, &plan, 42)?;
//! let out = dir.path().join("mlp_tanh.orthogonal.onnx");
//! reinit::write(&model, &plan, &mut applied, &out, &SaveOptions::default())?;
//! let weights = &applied.report.weights;
//! assert!(!weights.is_empty() && weights.iter().all(|w| w.scheme == "orthogonal"));
//! assert!(Model::load(&out)?.metadata("reinit.seed") == Some("42"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod apply;
mod auto;
mod calibration;
mod catalog;
pub mod error;
#[cfg(feature = "verify")]
mod lsuv;
mod params;
mod plan;
mod report;
mod rewrite;
mod rules;
mod spec;
mod streamed;
#[cfg(feature = "verify")]
mod verify;

pub use apply::{Applied, Mask, apply, apply_with_progress};
pub use auto::AUTO_SUMMARY;
pub use calibration::{Calibration, SampleArray, Samples};
pub use catalog::{catalog, catalog_text};
pub use error::Error;
pub use params::SchemeParams;
pub use plan::{Kept, Plan, PlanOptions, PlannedWeight, plan, plan_with};
pub use report::{LsuvLayer, LsuvReport, NormReset, Report, Stats, WeightReport};
pub use rewrite::{DirectoryOutput, Progress, directory_models, rewrite_directory, rewrite_file};
pub use rules::{Rule, load_rules, parse_rules};
#[cfg(feature = "verify")]
pub use verify::{VerifySettings, verify};

use std::path::Path;

use reinit_onnx::{Model, SaveOptions, SaveReport};

/// Saves `model` with `applied`'s edits, recording the run in `metadata_props`
/// (`reinit.version`, `reinit.scheme`, `reinit.seed`, `reinit.options`).
/// Deferred weights (external ones, and embedded ones whose payload length
/// is known in advance) are drawn as the writer reaches them; their entries
/// join `applied.report` afterwards.
pub fn write(
    model: &Model,
    plan: &Plan,
    applied: &mut Applied,
    path: &Path,
    options: &SaveOptions,
) -> Result<SaveReport, Error> {
    write_with_progress(model, plan, applied, path, options, &|| {})
}

/// As [`write`], calling `tick` once per deferred weight written.
fn write_with_progress(
    model: &Model,
    plan: &Plan,
    applied: &mut Applied,
    path: &Path,
    options: &SaveOptions,
    tick: &(dyn Fn() + Sync),
) -> Result<SaveReport, Error> {
    // Borrow the edits out rather than cloning them: they hold every new value.
    let mut edits = std::mem::take(&mut applied.edits);
    add_metadata(&mut edits, plan, applied);
    let source = apply::Deferred::new(model, plan, applied).with_progress(tick);
    let saved = model.save_deferred(path, &edits, &source, options);
    applied.edits = edits;
    let saved = saved.map_err(Error::Save)?;
    source.finish(applied);
    Ok(saved)
}

/// The rewrite sequence the CLI and the Python package share: fill every
/// planned weight (with LSUV's data pass when built with `verify`), then save
/// to `output` — or, without one, complete the report without writing — and
/// write the EOI masks after the model. `tick` runs once per weight filled
/// (up front or during the save).
pub fn apply_and_write(
    model: &Model,
    plan: &Plan,
    seed: u64,
    output: Option<(&Path, &SaveOptions)>,
    mask_out: Option<&Path>,
    tick: &(dyn Fn() + Sync),
) -> Result<Applied, Error> {
    let mut applied = fill(model, plan, seed, tick)?;
    let start = std::time::Instant::now();
    match output {
        Some((path, save)) => {
            write_with_progress(model, plan, &mut applied, path, save, tick)?;
            applied.report.output = Some(path.display().to_string());
            if let Some(mask_out) = mask_out {
                write_masks(&applied.masks, mask_out)?;
            }
        }
        None => finish_without_writing_with_progress(model, plan, &mut applied, tick)?,
    }
    applied.report.dry_run = output.is_none();
    applied.report.timings_ms.write = start.elapsed().as_secs_f64() * 1e3;
    Ok(applied)
}

/// As [`apply_and_write`], returning the rewritten model as bytes (a model
/// without external data), with the run's metadata.
pub fn apply_to_bytes(
    model: &Model,
    plan: &Plan,
    seed: u64,
    tick: &(dyn Fn() + Sync),
) -> Result<(Applied, Vec<u8>), Error> {
    let mut applied = fill(model, plan, seed, tick)?;
    let start = std::time::Instant::now();
    let mut edits = std::mem::take(&mut applied.edits);
    add_metadata(&mut edits, plan, &applied);
    let source = apply::Deferred::new(model, plan, &applied).with_progress(tick);
    let bytes = model.to_bytes_deferred(&edits, &source);
    applied.edits = edits;
    let bytes = bytes.map_err(Error::Save)?;
    source.finish(&mut applied);
    applied.report.timings_ms.write = start.elapsed().as_secs_f64() * 1e3;
    Ok((applied, bytes))
}

/// Fills every planned weight (deferred ones excepted) after LSUV's data
/// pass (see [`apply_with_progress`]).
fn fill(model: &Model, plan: &Plan, seed: u64, tick: &(dyn Fn() + Sync)) -> Result<Applied, Error> {
    apply_with_progress(model, plan, seed, tick)
}

/// For a dry run: fills the deferred weights one at a time for their
/// statistics, writing nothing.
pub fn finish_without_writing(
    model: &Model,
    plan: &Plan,
    applied: &mut Applied,
) -> Result<(), Error> {
    finish_without_writing_with_progress(model, plan, applied, &|| {})
}

fn finish_without_writing_with_progress(
    model: &Model,
    plan: &Plan,
    applied: &mut Applied,
    tick: &(dyn Fn() + Sync),
) -> Result<(), Error> {
    let source = apply::Deferred::new(model, plan, applied).with_progress(tick);
    source.fill_remaining(applied)?;
    source.finish(applied);
    Ok(())
}

/// Records the run in `metadata_props`. The schemes' parameters come from
/// the weights filled so far and, for those filled during the save, from the
/// plan (the metadata is written before them).
fn add_metadata(edits: &mut reinit_onnx::Edits, plan: &Plan, applied: &Applied) {
    let report = &applied.report;
    edits.set_metadata("reinit.version", env!("CARGO_PKG_VERSION"));
    edits.set_metadata("reinit.scheme", report.scheme.clone());
    edits.set_metadata("reinit.seed", report.seed.to_string());
    if !report.norms_reset.is_empty() {
        let nodes: Vec<&str> = report.norms_reset.iter().map(|n| n.node.as_str()).collect();
        edits.set_metadata(
            "reinit.norms_reset",
            serde_json::to_string(&nodes).unwrap_or_default(),
        );
    }
    let deferred: Vec<(String, String)> = applied
        .deferred
        .iter()
        .map(|&i| plan.weights[i].scheme)
        .map(|s| (s.name().to_string(), format!("{s:?}")))
        .collect();
    let options: std::collections::BTreeMap<&str, &str> = report
        .weights
        .iter()
        .map(|w| (w.scheme.as_str(), w.params.as_str()))
        .chain(deferred.iter().map(|(n, p)| (n.as_str(), p.as_str())))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    edits.set_metadata(
        "reinit.options",
        serde_json::to_string(&options).unwrap_or_default(),
    );
}

/// Writes EOI masks as safetensors (u8, 1 = trainable), keyed by initializer name.
pub fn write_masks(masks: &[Mask], path: &Path) -> Result<(), Error> {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = masks
        .iter()
        .map(|m| {
            (
                m.name.clone(),
                m.shape.clone(),
                m.values.iter().map(|&v| v as u8).collect(),
            )
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::U8, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Internal(format!("mask '{name}': {e}")))
        })
        .collect::<Result<_, _>>()?;
    let serialized =
        safetensors::serialize(views, None).map_err(|e| Error::Internal(format!("masks: {e}")))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    std::io::Write::write_all(&mut temp, &serialized).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    temp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
