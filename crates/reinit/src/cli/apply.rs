//! `reinit apply` (and the bare `reinit MODEL --scheme X`).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use regex::Regex;
use reinit::{Calibration, DirectoryOutput, Error, PlanOptions, Report};
use reinit_onnx::SaveOptions;
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
            reset: args.reset_norms,
        },
        calibration: args
            .calibration_data
            .as_deref()
            .map(Calibration::load)
            .transpose()?
            .unwrap_or_default(),
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
    let bar = ProgressBar::hidden();
    let planned = |len: usize| start_bar(args, &bar, len);
    let tick = || bar.inc(1);
    let report = reinit::rewrite_file(
        input,
        output,
        options,
        seed,
        &save_options(args),
        args.mask_out.as_deref(),
        reinit::Progress {
            planned: &planned,
            tick: &tick,
        },
    )?;
    bar.finish_and_clear();
    print_summary(args, &report);
    Ok(report)
}

fn save_options(args: &ApplyArgs) -> SaveOptions {
    SaveOptions {
        overwrite: args.force,
        in_place: args.in_place,
        data_file: None,
    }
}

fn print_summary(args: &ApplyArgs, report: &Report) {
    if !args.quiet {
        if args.dry_run && !args.json {
            eprint!("{}", report.table());
        }
        eprint!("{}", report.summary());
    }
}

/// A directory of `.onnx` files (an encoder/decoder export), rewritten by
/// the library's directory mode.
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
    let output = match (&args.output, args.in_place, args.dry_run) {
        (_, _, true) => DirectoryOutput::DryRun,
        (_, true, false) => DirectoryOutput::InPlace,
        (Some(out), false, false) => DirectoryOutput::Into(out.clone()),
        (None, false, false) => DirectoryOutput::beside(dir, &options.scheme),
    };
    let reports = reinit::rewrite_directory(
        dir,
        &output,
        options,
        seed,
        &save_options(args),
        reinit::Progress::NONE,
        &mut |report| print_summary(args, report),
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "files": reports }))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Shows `bar` over the planned weights when there are 64 or more
/// (indicatif hides itself when stderr is not a terminal).
fn start_bar(args: &ApplyArgs, bar: &ProgressBar, len: usize) {
    if args.quiet || len < 64 {
        return;
    }
    bar.set_length(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} weights ({eta})") {
        bar.set_style(style);
    }
    bar.set_draw_target(ProgressDrawTarget::stderr());
}

/// A seed from the clock and process id; printed and recorded so the run can be repeated.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_007
}
