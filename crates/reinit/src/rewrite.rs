//! Whole rewrites of files and directories, as the CLI and the Python
//! package run them: load → plan → session (LSUV's data pass, draws) → write,
//! with the report's timings. Directory mode (an encoder/decoder export:
//! several `.onnx` files rewritten with one seed) lives here so that both
//! callers share it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use reinit_onnx::{Model, SaveOptions};

use crate::error::Error;
use crate::plan::PlanOptions;
use crate::report::Report;
use crate::session::{Session, SessionOptions, write_masks};

/// Progress callbacks of a rewrite (a progress bar).
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    /// Called once the plan is known, with the number of weights it fills.
    pub planned: &'a dyn Fn(usize),
    /// Called once per weight filled.
    pub tick: &'a (dyn Fn() + Sync),
}

impl Progress<'_> {
    pub const NONE: Progress<'static> = Progress {
        planned: &|_| {},
        tick: &|| {},
    };
}

/// Rewrites `input` into `output` (`None`: a dry run, nothing written),
/// with the EOI masks into `mask_out`.
pub fn rewrite_file(
    input: &Path,
    output: Option<&Path>,
    options: &PlanOptions,
    seed: u64,
    save: &SaveOptions,
    mask_out: Option<&Path>,
    progress: Progress<'_>,
) -> Result<Report, Error> {
    let t0 = Instant::now();
    let model = Model::load(input).map_err(Error::Load)?;
    let t_load = t0.elapsed();
    let plan = crate::plan(&model, options)?;
    let t_plan = t0.elapsed() - t_load;
    (progress.planned)(plan.weights.len());
    // Masks only for --mask-out: one byte a value of every sparse weight, kept
    // to the end (~600 MB on a GPT-2-medium-sized EOI rewrite).
    let options = SessionOptions {
        tick: progress.tick,
        masks: output.is_some() && mask_out.is_some(),
    };
    let session = Session::with_options(&model, &plan, seed, options)?;
    let mut report = match output {
        Some(path) => {
            let rewritten = session.write(path, save)?;
            if let Some(mask_out) = mask_out {
                write_masks(&rewritten.masks, mask_out)?;
            }
            rewritten.report
        }
        None => session.dry_run()?.report,
    };
    report.timings_ms.load = t_load.as_secs_f64() * 1e3;
    report.timings_ms.analyze_and_plan = t_plan.as_secs_f64() * 1e3;
    Ok(report)
}

/// Where the files of a directory rewrite go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryOutput {
    /// Into this directory (created if needed), under their own names.
    Into(PathBuf),
    /// Over the inputs.
    InPlace,
    /// Nowhere: plan and report only.
    DryRun,
}

impl DirectoryOutput {
    /// The default target of `dir` rewritten with `scheme`: `<dir>.<scheme>`
    /// beside it.
    pub fn beside(dir: &Path, scheme: &str) -> DirectoryOutput {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        DirectoryOutput::Into(dir.with_file_name(format!("{name}.{scheme}")))
    }
}

/// The `.onnx` files of `dir`, sorted by name; an empty directory is a usage error.
pub fn directory_models(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: e,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Usage(format!(
            "{}: no .onnx files in this directory",
            dir.display()
        )));
    }
    Ok(files)
}

/// Rewrites every `.onnx` file of `dir` with the same seed, so a weight with
/// the same name and shape gets the same values in every file (streams are
/// keyed by tensor name). `on_file` sees each report as its file is done.
pub fn rewrite_directory(
    dir: &Path,
    output: &DirectoryOutput,
    options: &PlanOptions,
    seed: u64,
    save: &SaveOptions,
    progress: Progress<'_>,
    on_file: &mut dyn FnMut(&Report),
) -> Result<Vec<Report>, Error> {
    let files = directory_models(dir)?;
    if let DirectoryOutput::Into(out) = output {
        std::fs::create_dir_all(out).map_err(|e| Error::Io {
            path: out.clone(),
            source: e,
        })?;
    }
    let save = SaveOptions {
        in_place: *output == DirectoryOutput::InPlace,
        ..save.clone()
    };
    let mut reports = Vec::new();
    for file in &files {
        let target = match output {
            DirectoryOutput::InPlace => Some(file.clone()),
            DirectoryOutput::Into(out) => Some(out.join(file.file_name().unwrap_or_default())),
            DirectoryOutput::DryRun => None,
        };
        let report = rewrite_file(
            file,
            target.as_deref(),
            options,
            seed,
            &save,
            None,
            progress,
        )?;
        on_file(&report);
        reports.push(report);
    }
    Ok(reports)
}
