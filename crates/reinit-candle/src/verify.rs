//! `verify`: probes and training for several initialisations of one model,
//! side by side, as JSON, a table and SVG plots.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use reinit_onnx::Model;

use crate::data::{Task, TaskSize};
use crate::error::ExecError;
use crate::executor::Executor;
use crate::probes::{self, JacobianStats, Signal};
use crate::train::{Heldout, Mask, TrainConfig, Verdict, train_on};

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Training settings shared by every run (same seed, same data order).
    pub train: TrainConfig,
    /// Samples in the probe batch (signal, gradient norms, Jacobian).
    pub probe_batch: usize,
    /// Fixed sparse masks by run label (e.g. the EOI zero pattern).
    pub masks: HashMap<String, Mask>,
    /// Directory for `loss.svg`, `signal.svg`, `jacobian_sv.svg`.
    pub plot_dir: Option<PathBuf>,
}

impl Default for VerifyConfig {
    /// Sized to finish in well under a minute per fixture on 2 cores.
    fn default() -> Self {
        VerifyConfig {
            train: TrainConfig {
                steps: 100,
                batch: 16,
                size: TaskSize {
                    train: 512,
                    heldout: 128,
                },
                ..TrainConfig::default()
            },
            probe_batch: 16,
            masks: HashMap::new(),
            plot_dir: None,
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    pub scheme: String,
    pub task: String,
    pub loss: Vec<f32>,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub heldout: Heldout,
    pub verdict: Verdict,
    /// Per-layer second moments q^l (layer name → q), graph order in `signal_detail`.
    pub signal: Vec<(String, f64)>,
    pub signal_detail: Signal,
    /// Per-weight gradient norm at init.
    pub grad_norms: BTreeMap<String, f64>,
    /// ‖g‖ of the first weighted layer / ‖g‖ of the last.
    pub grad_ratio_first_last: Option<f64>,
    pub jacobian: Option<JacobianStats>,
    pub mask_exact: Option<bool>,
    pub micro_batch: bool,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub steps: usize,
    pub lr: f64,
    pub batch: usize,
    pub seed: u64,
    pub optimizer: crate::train::Optimizer,
    pub runs: Vec<RunReport>,
}

/// Runs probes then training for every `(label, model)`; the models are the
/// same graph with different weights (schemes applied in memory).
pub fn verify(
    models: &[(String, Model)],
    config: &VerifyConfig,
) -> Result<VerifyReport, ExecError> {
    let mut runs = Vec::with_capacity(models.len());
    for (label, model) in models {
        let start = std::time::Instant::now();
        let exec = Executor::new(model, &config.train.device)?;
        let cfg = &config.train;
        let task = Task::for_model(&exec, model, cfg.seed, cfg.size, cfg.input_shape.as_deref())?;
        let signal = probes::signal(&exec, &task, config.probe_batch)?;
        let grad_norms = probes::grad_norms(&exec, &task, config.probe_batch)?;
        let jacobian = probes::jacobian(&exec, &task, config.probe_batch, cfg.seed)?;
        let layers = exec.layers();
        let grad_ratio = match (layers.first(), layers.last()) {
            (Some(f), Some(l)) => {
                let (a, b) = (grad_norms.get(&f.weight), grad_norms.get(&l.weight));
                a.zip(b).map(|(a, b)| a / b.max(1e-300))
            }
            _ => None,
        };
        let mut train_cfg = cfg.clone();
        train_cfg.mask = config.masks.get(label).cloned();
        let report = train_on(&exec, &task, &train_cfg)?;
        runs.push(RunReport {
            scheme: label.clone(),
            task: report.task,
            loss: report.loss,
            initial_loss: report.initial_loss,
            final_loss: report.final_loss,
            heldout: report.heldout,
            verdict: report.verdict,
            signal: signal
                .layers
                .iter()
                .map(|l| (l.layer.clone(), l.q))
                .collect(),
            signal_detail: signal,
            grad_norms,
            grad_ratio_first_last: grad_ratio,
            jacobian,
            mask_exact: report.mask_exact,
            micro_batch: report.micro_batch,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let report = VerifyReport {
        steps: config.train.steps,
        lr: config.train.lr,
        batch: config.train.batch,
        seed: config.train.seed,
        optimizer: config.train.optimizer,
        runs,
    };
    if let Some(dir) = &config.plot_dir {
        crate::plot::write_plots(&report, dir)?;
    }
    Ok(report)
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into())
}

/// A side-by-side table of the runs, one row per scheme.
pub fn render_table(report: &VerifyReport) -> String {
    let header = [
        "scheme", "verdict", "loss0", "final", "heldout", "qL/q0", "signal", "g1/gL", "E[s^2]",
        "Var[s^2]", "s_min", "s_max",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &report.runs {
        let j = r.jacobian.as_ref();
        rows.push(vec![
            r.scheme.clone(),
            format!("{:?}", r.verdict).to_lowercase(),
            format!("{:.4}", r.initial_loss),
            format!("{:.4}", r.final_loss),
            format!("{} {:.4}", r.heldout.metric, r.heldout.value),
            format!("{:.3e}", r.signal_detail.ratio),
            r.signal_detail.flag.to_string(),
            opt(r.grad_ratio_first_last),
            opt(j.map(|j| j.mean_sq_sv)),
            opt(j.map(|j| j.var_sq_sv)),
            opt(j.and_then(|j| j.min_sv)),
            opt(j.and_then(|j| j.max_sv)),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (i, r) in rows.iter().enumerate() {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if i == 0 {
            out.push_str(
                &widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  "),
            );
            out.push('\n');
        }
    }
    out
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &VerifyReport, path: &Path) -> Result<(), ExecError> {
    let text =
        serde_json::to_string_pretty(report).map_err(|e| ExecError::Invalid(e.to_string()))?;
    std::fs::write(path, text)?;
    Ok(())
}
