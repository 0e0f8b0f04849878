//! `verify`: apply each scheme in memory with the same seed, then probe and
//! train every variant on the same data in the same order (reinit-candle).
//! Shared by `reinit verify` and the Python package.

use std::collections::HashMap;

use std::path::PathBuf;

use reinit_candle::recipe::{self, Given};
use reinit_candle::{LrSchedule, Optimizer, VerifyConfig, VerifyReport};
use reinit_onnx::{Model, SaveOptions};
use reinit_schemes::NormOptions;

use crate::error::Error;
use crate::params::SchemeParams;
use crate::plan::PlanOptions;

/// Training and probe settings as users give them (CLI flags, Python keywords);
/// `None` keeps the trainer's default.
#[derive(Debug, Clone, Default)]
pub struct VerifySettings {
    pub steps: Option<usize>,
    pub lr: Option<f64>,
    pub batch: Option<usize>,
    /// `sgd` | `adamw`.
    pub optimizer: Option<String>,
    /// `constant` | `cosine`.
    pub lr_schedule: Option<String>,
    /// `cpu` | `cuda`.
    pub device: String,
    /// `--input-shape`: per-sample dims of the task input (`3x224x224`), the
    /// same with the batch (`2x3x224x224`), or by input name
    /// (`input_ids:2x128,attention_mask:2x128`).
    pub input_shape: Option<String>,
    /// `--input-q`: scale the float task input to this second moment.
    pub input_q: Option<f64>,
    /// Directory for the plots (SVG and PNG).
    pub plot: Option<PathBuf>,
}

/// Verifies `model` as stored (no `schemes`), or rewritten by each of
/// `schemes` with `params` and `seed`. `config` sets training, probes and plots.
///
/// The run happens on a rayon worker: a parallel loop started from a thread
/// outside the pool parks that thread on a lock and wakes it by futex when the
/// loop ends, a round trip per loop, and on small nets (thousands of loops a
/// second) those round trips were over half the CPU time
/// (docs/candle-notes.md). All threads share glibc's main arena
/// ([`reinit_candle::memory::one_heap_arena`]), as the calling thread alone
/// used it before: a worker's own arena kept 376 MiB more of ViT-B/16 resident.
pub fn verify(
    model: &Model,
    schemes: &[String],
    params: &SchemeParams,
    seed: u64,
    config: VerifyConfig,
) -> Result<VerifyReport, Error> {
    if rayon::current_thread_index().is_some() {
        return verify_here(model, schemes, params, seed, config);
    }
    reinit_candle::memory::one_heap_arena();
    rayon::scope(|_| verify_here(model, schemes, params, seed, config))
}

fn verify_here(
    model: &Model,
    schemes: &[String],
    params: &SchemeParams,
    seed: u64,
    config: VerifyConfig,
) -> Result<VerifyReport, Error> {
    for scheme in schemes {
        params.scheme(scheme, false)?;
    }
    params.check_applies_to_some(schemes)?;
    let scratch = tempfile::tempdir().map_err(|e| Error::Io {
        path: std::env::temp_dir(),
        source: e,
    })?;
    let mut variants: Vec<(String, Model)> = Vec::new();
    let mut masks = HashMap::new();
    let mut q_stars = HashMap::new();
    if schemes.is_empty() {
        let path = scratch.path().join("stored.onnx");
        model
            .save(&path, &Default::default(), &SaveOptions::default())
            .map_err(Error::Save)?;
        variants.push(("stored".into(), Model::load(&path).map_err(Error::Load)?));
    }
    for scheme in schemes {
        let options = PlanOptions {
            scheme: scheme.clone(),
            params: params.clone(),
            norms: NormOptions::default(),
            calibration: Default::default(),
            ..Default::default()
        };
        let plan = crate::plan(model, &options)?;
        let path = scratch.path().join(format!("{scheme}.onnx"));
        let applied =
            crate::Session::new(model, &plan, seed)?.write(&path, &SaveOptions::default())?;
        if let Some(q) = first_q_star(&applied.report) {
            q_stars.insert(scheme.clone(), q);
        }
        if !applied.masks.is_empty() {
            let mask: HashMap<String, Vec<bool>> = applied
                .masks
                .into_iter()
                .map(|m| (m.name, m.values))
                .collect();
            masks.insert(scheme.clone(), mask);
        }
        variants.push((scheme.clone(), Model::load(&path).map_err(Error::Load)?));
        reinit_candle::memory::debug_phase(&format!("{scheme} applied"));
    }
    let model_name = if config.model_name.is_empty() {
        model
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        config.model_name.clone()
    };
    let config = VerifyConfig {
        masks,
        model_name,
        ..config
    };
    let mut report = reinit_candle::verify(&variants, &config).map_err(|e| match e {
        reinit_candle::ExecError::Usage(message) => Error::Usage(message),
        other => Error::Exec(other),
    })?;
    for run in &mut report.runs {
        if let Some(q) = q_stars.get(&run.scheme) {
            run.q_star = Some(*q);
            let input = run.signal_detail.input_q;
            run.input_matches_q_star = Some((input / q - 1.0).abs() <= Q_STAR_MATCH);
        }
    }
    Ok(report)
}

/// Relative tolerance within which the input's second moment "matches" q*.
pub const Q_STAR_MATCH: f64 = 0.1;

/// The fixed point q* the `critical` scheme reports for the first layer it
/// rewrote (its note `critical: <act>: sigma_w^2 = …, q* = …, chi = …`).
fn first_q_star(report: &crate::Report) -> Option<f64> {
    report.weights.iter().find_map(|w| {
        w.notes.iter().find_map(|n| {
            let rest = n.strip_prefix("critical:")?;
            let q = rest.split("q* = ").nth(1)?;
            q.split(',').next()?.trim().parse::<f64>().ok()
        })
    })
}

impl VerifySettings {
    /// The trainer's configuration; bad values are usage errors.
    pub fn config(&self, seed: u64) -> Result<VerifyConfig, Error> {
        let args = self;
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
            Some("sgd") => Optimizer::Sgd {
                momentum: recipe::SGD_MOMENTUM,
            },
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--optimizer {other}: expected sgd or adamw"
                )));
            }
        };
        train.schedule = match args.lr_schedule.as_deref() {
            None => train.schedule,
            Some("constant") => LrSchedule::Constant,
            Some("cosine") => LrSchedule::Cosine,
            Some("warmup-cosine" | "warmup_cosine") => LrSchedule::WarmupCosine,
            Some(other) => {
                return Err(Error::Usage(format!(
                    "--lr-schedule {other}: expected constant, cosine or warmup-cosine"
                )));
            }
        };
        // what is not given follows the model (reinit_candle::recipe)
        config.given = Given {
            optimizer: args.optimizer.is_some(),
            lr: args.lr.is_some(),
            schedule: args.lr_schedule.is_some(),
        };
        let train = &mut config.train;
        train.seed = seed;
        train.device = device(&args.device)?;
        if let Some(shape) = &args.input_shape {
            train.shapes = Some(reinit_candle::ShapeRequest::parse(shape).map_err(Error::Usage)?);
        }
        if let Some(q) = args.input_q {
            if !(q.is_finite() && q > 0.0) {
                return Err(Error::Usage(format!(
                    "--input-q {q}: must be a positive number (the inputs' second moment)"
                )));
            }
            train.input_q = Some(q);
        }
        config.batch_given = args.batch.is_some();
        config.plot_dir = args.plot.clone();
        Ok(config)
    }
}

fn device(name: &str) -> Result<candle_core::Device, Error> {
    match name {
        "cpu" | "" => Ok(candle_core::Device::Cpu),
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
