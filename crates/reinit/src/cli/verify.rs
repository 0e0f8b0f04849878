//! `reinit verify`: apply each scheme in memory with the same seed, then probe
//! and train every variant on the same data in the same order.

use reinit::{Error, VerifySettings};
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
    let config = settings.config(args.seed)?;
    let model = Model::load(&args.model).map_err(Error::Load)?;
    // `verify` writes the plots itself when `plot_dir` is set.
    let report = reinit::verify(&model, &args.schemes, &args.params, args.seed, config)?;
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
    }
    Ok(())
}
