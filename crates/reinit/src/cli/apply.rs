//! `reinit apply` (and the bare `reinit MODEL --scheme X`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use regex::Regex;
use reinit::{Error, PlanOptions, Report};
use reinit_onnx::{Model, SaveOptions};
use reinit_schemes::NormOptions;

use super::args::ApplyArgs;

pub fn run(args: ApplyArgs) -> Result<(), Error> {
    let model_path = args
        .model
        .clone()
        .ok_or_else(|| Error::Usage("no MODEL given".into()))?;
    let scheme = args
        .scheme
        .clone()
        .ok_or_else(|| Error::Usage("--scheme is required".into()))?;
    let options = plan_options(&args, &scheme)?;
    let seed = args.seed.unwrap_or_else(random_seed);
    if model_path.is_dir() {
        return run_directory(&args, &model_path, &options, seed);
    }
    let output = output_path(&args, &model_path, &scheme)?;
    let report = rewrite(&args, &model_path, output.as_deref(), &options, seed)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    Ok(())
}

fn plan_options(args: &ApplyArgs, scheme: &str) -> Result<PlanOptions, Error> {
    let regex = |flag: &str, pattern: &Option<String>| {
        pattern
            .as_deref()
            .map(|p| Regex::new(p).map_err(|e| Error::Usage(format!("--{flag} '{p}': {e}"))))
            .transpose()
    };
    let fallback = match args.fallback.as_str() {
        "keep" => None,
        other => {
            args.params.scheme(other, false)?;
            Some(other.to_string())
        }
    };
    if scheme != "auto" {
        args.params.scheme(scheme, args.rules.is_none())?;
    }
    Ok(PlanOptions {
        scheme: scheme.to_string(),
        params: args.params.clone(),
        rules: args
            .rules
            .as_deref()
            .map(reinit::load_rules)
            .transpose()?
            .unwrap_or_default(),
        only: regex("only", &args.only)?,
        exclude: regex("exclude", &args.exclude)?,
        fallback,
        norms: NormOptions {
            zero_init_last_gamma: args.zero_init_last_gamma,
            reset: false,
        },
    })
}

/// `<stem>.<scheme>.onnx` beside the input unless `-o` or `--in-place`.
fn output_path(args: &ApplyArgs, input: &Path, scheme: &str) -> Result<Option<PathBuf>, Error> {
    if args.dry_run {
        return Ok(None);
    }
    if args.in_place {
        return Ok(Some(input.to_path_buf()));
    }
    if let Some(output) = &args.output {
        return Ok(Some(output.clone()));
    }
    let stem = input
        .file_stem()
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", input.display())))?
        .to_string_lossy();
    Ok(Some(input.with_file_name(format!("{stem}.{scheme}.onnx"))))
}

fn rewrite(
    args: &ApplyArgs,
    input: &Path,
    output: Option<&Path>,
    options: &PlanOptions,
    seed: u64,
) -> Result<Report, Error> {
    let t0 = Instant::now();
    let model = Model::load(input).map_err(Error::Load)?;
    let t_load = t0.elapsed();
    let plan = reinit::plan(&model, options)?;
    let t_plan = t0.elapsed() - t_load;
    let bar = progress(args, plan.weights.len());
    let save = SaveOptions {
        overwrite: args.force,
        in_place: args.in_place,
        data_file: None,
    };
    let mut applied = reinit::apply_and_write(
        &model,
        &plan,
        seed,
        output.map(|path| (path, &save)),
        args.mask_out.as_deref(),
        &|| bar.inc(1),
    )?;
    bar.finish_and_clear();
    let report = &mut applied.report;
    report.timings_ms.load = t_load.as_secs_f64() * 1e3;
    report.timings_ms.analyze_and_plan = t_plan.as_secs_f64() * 1e3;
    if !args.quiet {
        if args.dry_run && !args.json {
            eprint!("{}", report.table());
        }
        eprint!("{}", report.summary());
    }
    Ok(applied.report)
}

/// A directory of `.onnx` files (an encoder/decoder export): every file gets
/// the same seed, so a weight with the same name and shape gets the same values
/// everywhere (streams are keyed by tensor name).
fn run_directory(
    args: &ApplyArgs,
    dir: &Path,
    options: &PlanOptions,
    seed: u64,
) -> Result<(), Error> {
    if args.in_place && args.output.is_some() {
        return Err(Error::Usage(
            "--in-place and --output exclude each other".into(),
        ));
    }
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
    let out_dir = match (&args.output, args.in_place || args.dry_run) {
        (_, true) => None,
        (Some(out), false) => Some(out.clone()),
        (None, false) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into());
            Some(dir.with_file_name(format!("{name}.{}", options.scheme)))
        }
    };
    if let Some(out) = &out_dir {
        std::fs::create_dir_all(out).map_err(|e| Error::Io {
            path: out.clone(),
            source: e,
        })?;
    }
    let mut reports = Vec::new();
    for file in &files {
        let output = match (&out_dir, args.in_place) {
            (_, true) => Some(file.clone()),
            (Some(out), false) => Some(out.join(file.file_name().unwrap_or_default())),
            (None, false) => None,
        };
        reports.push(rewrite(args, file, output.as_deref(), options, seed)?);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "files": reports }))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn progress(args: &ApplyArgs, len: usize) -> ProgressBar {
    if args.quiet || len < 64 {
        return ProgressBar::hidden();
    }
    // indicatif hides itself when stderr is not a terminal.
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} weights ({eta})") {
        bar.set_style(style);
    }
    bar
}

/// A seed from the clock and process id; printed and recorded so the run can be repeated.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_007
}
