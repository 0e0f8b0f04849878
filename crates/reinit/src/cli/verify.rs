//! `reinit verify`: apply each scheme in memory with the same seed, then probe
//! and train every variant on the same data in the same order.

use std::collections::HashMap;

use reinit::{Error, PlanOptions};
use reinit_candle::{Optimizer, VerifyConfig};
use reinit_onnx::{Model, SaveOptions};
use reinit_schemes::NormOptions;

use super::args::VerifyArgs;

pub fn run(args: VerifyArgs) -> Result<(), Error> {
    let config = config(&args)?;
    let model = Model::load(&args.model).map_err(Error::Load)?;
    let scratch = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let mut variants: Vec<(String, Model)> = Vec::new();
    let mut masks = HashMap::new();
    if args.schemes.is_empty() {
        variants.push((
            "stored".into(),
            Model::load(&args.model).map_err(Error::Load)?,
        ));
    }
    for scheme in &args.schemes {
        // Same seed for every scheme: differences come from the schemes alone.
        let options = PlanOptions {
            scheme: scheme.clone(),
            params: args.params.clone(),
            norms: NormOptions::default(),
            ..Default::default()
        };
        let plan = reinit::plan(&model, &options)?;
        let mut applied = reinit::apply(&model, &plan, args.seed)?;
        reinit::refine_lsuv(&model, &plan, &mut applied)?;
        let path = scratch.path().join(format!("{scheme}.onnx"));
        reinit::write(&model, &plan, &mut applied, &path, &SaveOptions::default())?;
        if !applied.masks.is_empty() {
            let mask: HashMap<String, Vec<bool>> = applied
                .masks
                .into_iter()
                .map(|m| (m.name, m.values))
                .collect();
            masks.insert(scheme.clone(), mask);
        }
        variants.push((scheme.clone(), Model::load(&path).map_err(Error::Load)?));
    }
    let config = VerifyConfig {
        masks,
        plot_dir: args.plot.clone(),
        ..config
    };
    // `verify` writes the plots itself when `plot_dir` is set.
    let report = reinit_candle::verify(&variants, &config).map_err(verify_error)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", reinit_candle::render_table(&report));
    }
    if !args.quiet {
        eprintln!(
            "{}: {} run(s), {} steps, lr {}, batch {}, seed {}",
            args.model.display(),
            report.runs.len(),
            report.steps,
            report.lr,
            report.batch,
            report.seed
        );
        if let Some(dir) = &args.plot {
            eprintln!("  plots in {}", dir.display());
        }
    }
    Ok(())
}

fn config(args: &VerifyArgs) -> Result<VerifyConfig, Error> {
    let mut config = VerifyConfig::default();
    let train = &mut config.train;
    if let Some(steps) = args.steps {
        train.steps = steps;
    }
    if let Some(lr) = args.lr {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Usage(format!(
                "--lr {lr}: must be a positive number"
            )));
        }
        train.lr = lr;
    }
    if let Some(batch) = args.batch {
        if batch == 0 {
            return Err(Error::Usage("--batch must be at least 1".into()));
        }
        train.batch = batch;
    }
    train.optimizer = match args.optimizer.as_deref() {
        None => train.optimizer,
        Some("adamw") => Optimizer::AdamW,
        Some("sgd") => Optimizer::Sgd { momentum: 0.9 },
        Some(other) => {
            return Err(Error::Usage(format!(
                "--optimizer {other}: expected sgd or adamw"
            )));
        }
    };
    train.seed = args.seed;
    train.device = device(&args.device)?;
    if let Some(shape) = &args.input_shape {
        let dims = shape
            .split('x')
            .map(|d| d.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                Error::Usage(format!("--input-shape {shape}: expected dims like 3x32x32"))
            })?;
        train.input_shape = Some(dims);
    }
    for scheme in &args.schemes {
        args.params.scheme(scheme, false)?;
    }
    Ok(config)
}

fn device(name: &str) -> Result<candle_core::Device, Error> {
    match name {
        "cpu" => Ok(candle_core::Device::Cpu),
        "cuda" => cuda(),
        other => Err(Error::Usage(format!(
            "--device {other}: expected cpu or cuda"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<candle_core::Device, Error> {
    candle_core::Device::new_cuda(0).map_err(|e| Error::Unsupported(format!("--device cuda: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<candle_core::Device, Error> {
    Err(Error::Usage(
        "--device cuda: this build has no CUDA support (build with --features cuda)".into(),
    ))
}

fn verify_error(e: reinit_candle::ExecError) -> Error {
    match e {
        reinit_candle::ExecError::Unsupported(_) => Error::Unsupported(e.to_string()),
        other => Error::Unsupported(format!("verify: {other}")),
    }
}
