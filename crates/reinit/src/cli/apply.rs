//! `reinit apply` (and the bare `reinit MODEL --scheme X`).

use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reinit::{Error, Report, Request, UserRequest};

use super::args::ApplyArgs;

pub fn run(args: ApplyArgs) -> Result<(), Error> {
    let model_path = args
        .model
        .clone()
        .ok_or_else(|| Error::Usage("no MODEL given".into()))?;
    let request = Request::from_user(&user_request(&args))?;
    if model_path.is_dir() {
        return run_directory(&args, &model_path, &request);
    }
    let output = match request.output_for(&model_path) {
        None if !request.dry_run => Some(reinit::default_output(
            &model_path,
            &request.options.scheme,
        )?),
        output => output,
    };
    let report = rewrite(&args, &model_path, output.as_deref(), &request)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    Ok(())
}

/// The flags as the library's request builder takes them.
fn user_request(args: &ApplyArgs) -> UserRequest {
    UserRequest {
        scheme: args.scheme.clone().unwrap_or_default(),
        seed: args.seed,
        stream: args.stream.clone(),
        params: args.params.clone(),
        rules_file: args.rules.clone(),
        rules_toml: None,
        only: args.only.clone(),
        exclude: args.exclude.clone(),
        fallback: args.fallback.clone(),
        zero_init_last_gamma: args.zero_init_last_gamma,
        reset_norms: args.reset_norms,
        calibration_file: args.calibration_data.clone(),
        calibration: Default::default(),
        output: args.output.clone(),
        in_place: args.in_place,
        force: args.force,
        dry_run: args.dry_run,
        mask_out: args.mask_out.clone(),
    }
}

fn rewrite(
    args: &ApplyArgs,
    input: &Path,
    output: Option<&Path>,
    request: &Request,
) -> Result<Report, Error> {
    let bar = ProgressBar::hidden();
    let planned = |len: usize| start_bar(args, &bar, len);
    let tick = || bar.inc(1);
    let report = reinit::rewrite_file(
        input,
        output,
        &request.options,
        request.seed,
        &request.save,
        request.mask_out.as_deref(),
        reinit::Progress {
            planned: &planned,
            tick: &tick,
        },
    )?;
    bar.finish_and_clear();
    print_summary(args, &report);
    Ok(report)
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
fn run_directory(args: &ApplyArgs, dir: &Path, request: &Request) -> Result<(), Error> {
    let reports = reinit::rewrite_directory(
        dir,
        &request.directory_output(dir),
        &request.options,
        request.seed,
        &request.save,
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
