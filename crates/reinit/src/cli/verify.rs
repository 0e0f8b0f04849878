//! `reinit verify`: apply each scheme in memory with the same seed, then probe
//! and train every variant on the same data in the same order.

use std::sync::{Arc, Mutex};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reinit::{Error, VerifySettings};
use reinit_candle::{Progress, ProgressHook};
use reinit_onnx::Model;

use super::args::VerifyArgs;

pub fn run(args: VerifyArgs) -> Result<(), Error> {
    let settings = VerifySettings {
        steps: args.steps,
        lr: args.lr,
        batch: args.batch,
        optimizer: args.optimizer.clone(),
        lr_schedule: args.lr_schedule.clone(),
        device: args.device.clone(),
        input_shape: args.input_shape.clone(),
        input_q: args.input_q,
        plot: args.plot.clone(),
    };
    let mut config = settings.config(args.seed)?;
    let model = Model::load(&args.model).map_err(Error::Load)?;
    reinit_candle::memory::debug_phase("model loaded");
    let bar = progress_bar(&args);
    if let Some(bar) = &bar {
        config.train.progress = hook(bar);
    }
    // `verify` writes the plots itself when `plot_dir` is set.
    let result = reinit::verify(&model, &args.schemes, &args.params, args.seed, config);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let report = result?;
    if let Some(path) = &args.report {
        write_page(&report, &model, &args, path)?;
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", reinit_candle::render_table(&report));
    }
    if !args.quiet {
        for input in report.inputs.iter().filter(|i| i.defaulted()) {
            eprintln!(
                "note: input `{}` has dynamic dims; using {:?} ({}); give --input-shape to choose",
                input.name,
                input.shape,
                input
                    .sources
                    .iter()
                    .filter(|s| s.starts_with("default"))
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        eprintln!(
            "{}: {} run(s), {} steps, {}, batch {}, seed {}",
            args.model.display(),
            report.runs.len(),
            report.steps,
            reinit_candle::recipe::describe(report.optimizer, report.lr, report.lr_schedule),
            report.batch,
            report.seed
        );
        eprintln!("  training recipe: {}", report.optimizer_choice);
        if let Some(dir) = &args.plot {
            eprintln!("  plots in {}", dir.display());
        }
        if let Some(path) = &args.report {
            eprintln!("  report in {}", path.display());
        }
    }
    Ok(())
}

/// `--report FILE`: the HTML page, with the command line that made the run.
fn write_page(
    report: &reinit_candle::VerifyReport,
    model: &Model,
    args: &VerifyArgs,
    path: &std::path::Path,
) -> Result<(), Error> {
    let command = std::env::args()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let model_text = args.model.display().to_string();
    reinit::verify_html::write_page(report, model, &model_text, &args.device, &command, path)
}

/// A bar on stderr while the runs train — scheme, step, loss, and the ETA over
/// every run's steps — when stderr is a terminal; none with `--json`,
/// `--quiet` or a redirected stderr (CI logs stay clean).
fn progress_bar(args: &VerifyArgs) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if args.json || args.quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{bar:30.cyan/blue}] {msg}  {elapsed} elapsed, ETA {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    Some(ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style))
}

/// Moves `bar` on each run and step: the position counts steps over all runs.
fn hook(bar: &ProgressBar) -> ProgressHook {
    let bar = bar.clone();
    // (run index, steps per run) of the run in progress.
    let run = Arc::new(Mutex::new((0usize, 0usize)));
    ProgressHook::new(move |event| {
        let mut current = run.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Progress::Run {
                scheme,
                index,
                runs,
                steps,
            } => {
                *current = (index, steps);
                bar.set_length((runs * steps) as u64);
                bar.set_position((index * steps) as u64);
                bar.set_prefix(format!("{scheme} ({}/{runs})", index + 1));
                bar.set_message("probing");
            }
            Progress::Step { step, loss } => {
                let (index, steps) = *current;
                bar.set_position((index * steps + step) as u64);
                bar.set_message(format!("step {step}/{steps}, loss {loss:.4}"));
            }
        }
    })
}
