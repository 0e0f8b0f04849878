//! `verify`: probes and training for several initialisations of one model,
//! side by side, as JSON, a table and SVG plots.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use reinit_onnx::Model;

use crate::data::{Task, TaskInfo, TaskSize};
use crate::error::ExecError;
use crate::executor::Executor;
use crate::memory::{self, Estimate};
use crate::probes::{self, JacobianStats, Signal};
use crate::recipe::{self, Given, Structure};
use crate::shapes::{self, InputShape};
use crate::train::{Heldout, Mask, TrainConfig, train_on_probed};
use crate::verdict::Verdict;

#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// Training settings shared by every run (same seed, same data order).
    pub train: TrainConfig,
    /// Samples in the probe batch (signal, gradient norms, Jacobian); never
    /// more than the training batch, so probes need no more memory than a step.
    pub probe_batch: usize,
    /// Fixed sparse masks by run label (e.g. EOI's trainable mask: the support, for convs
    /// topped up with zero positions that start at zero but train).
    pub masks: HashMap<String, Mask>,
    /// Directory for the plots ([`crate::write_plots`]: `loss`, `signal`,
    /// `jacobian_sv`, `grad_norms`, each `.svg` and `.png`).
    pub plot_dir: Option<PathBuf>,
    /// The model's name for plot titles (its file name); may be empty.
    pub model_name: String,
    /// The batch was given explicitly (`--batch`): a different batch in
    /// `--input-shape` is then an error instead of taking over.
    pub batch_given: bool,
    /// The parts of the training recipe the user fixed; the others follow the
    /// model ([`crate::recipe::choose`]).
    pub given: Given,
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
            model_name: String::new(),
            batch_given: false,
            given: Given::default(),
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
    /// Which rule decided the verdict, with its figures.
    pub verdict_reason: String,
    /// First step at which the loss (moving mean over a twentieth of the run)
    /// reached the report's `target_loss`; `None` if it never did.
    pub steps_to_target: Option<usize>,
    /// For `critical`: the fixed point q* of the first layer's scheme, and
    /// whether the input's second moment matched it (within 10 %); set by the
    /// caller that applied the scheme.
    pub q_star: Option<f64>,
    pub input_matches_q_star: Option<bool>,
    /// Per-layer second moments q^l (layer name → q), graph order in `signal_detail`.
    pub signal: Vec<(String, f64)>,
    pub signal_detail: Signal,
    /// The weight initializer of each layer of `signal`, same order (keys
    /// of `grad_norms`: the gradient plot's x axis).
    pub layer_weights: Vec<String>,
    /// Per-weight gradient norm at init.
    pub grad_norms: BTreeMap<String, f64>,
    /// ‖g‖ of the first weighted layer / ‖g‖ of the last.
    pub grad_ratio_first_last: Option<f64>,
    pub jacobian: Option<JacobianStats>,
    pub mask_exact: Option<bool>,
    pub micro_batch: bool,
    /// Median wall time of one training step.
    pub step_seconds: f64,
    /// Wall time of all probes: the Jacobian's projections, and the signal
    /// and gradient norms (their statistics only where they are read off
    /// the first training step, a whole pass where they are not).
    pub probe_seconds: f64,
    /// The memory estimate checked before the run ([`crate::memory`]).
    pub estimated_bytes: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub steps: usize,
    pub lr: f64,
    pub batch: usize,
    pub seed: u64,
    pub optimizer: crate::train::Optimizer,
    pub lr_schedule: crate::train::LrSchedule,
    /// Why this optimizer, lr and schedule ([`crate::recipe`]).
    pub optimizer_choice: String,
    /// Every graph input as fed: shape of one batch, where each size came
    /// from (model, `--input-shape` or a default rule), and its fill.
    pub inputs: Vec<InputShape>,
    /// The task every run trains on (the same data and order for each).
    pub task: Option<TaskInfo>,
    /// The loss every run is timed to: the highest final loss among the runs
    /// that train, so each of them reaches it.
    pub target_loss: Option<f64>,
    /// The run that reached `target_loss` in the fewest steps (of those that train).
    pub fastest: Option<String>,
    pub runs: Vec<RunReport>,
    /// Peak resident set of the process when the report was made (`VmHWM`,
    /// Linux; `None` elsewhere).
    pub peak_rss_bytes: Option<u64>,
}

/// Runs probes then training for every `(label, model)`; the models are the
/// same graph with different weights (schemes applied in memory).
pub fn verify(
    models: &[(String, Model)],
    config: &VerifyConfig,
) -> Result<VerifyReport, ExecError> {
    let mut config = config.clone();
    let mut optimizer_choice = String::new();
    if let Some((_, model)) = models.first() {
        optimizer_choice = recipe::choose(&mut config.train, config.given, &Structure::of(model));
        // A batch given in --input-shape (`2x3x224x224`) sets the batch.
        let resolved = shapes::resolve_inputs(
            &shapes::declared_inputs(model),
            config.train.shapes.as_ref(),
            config.train.batch,
        )
        .map_err(ExecError::Usage)?;
        if let Some(b) = resolved.batch_from_request
            && b != config.train.batch
        {
            if config.batch_given {
                return Err(ExecError::Usage(format!(
                    "--input-shape gives batch {b} but --batch is {}",
                    config.train.batch
                )));
            }
            config.train.batch = b;
        }
    }
    let config = &config;
    let mut runs = Vec::with_capacity(models.len());
    let mut inputs = Vec::new();
    let mut task_info = None;
    for (index, (label, model)) in models.iter().enumerate() {
        let start = std::time::Instant::now();
        config.train.progress.emit(crate::Progress::Run {
            scheme: label,
            index,
            runs: models.len(),
            steps: config.train.steps,
        });
        let exec = Executor::new(model, &config.train.device)?;
        memory::debug_phase(&format!("{label}: executor built"));
        let cfg = &config.train;
        let task = Task::for_model(&exec, model, cfg.seed, cfg.size, Some(&cfg.task_options()))?;
        memory::debug_phase(&format!("{label}: task data made"));
        inputs = task.inputs.clone();
        task_info = Some(task.info.clone());
        let batch = cfg.batch.clamp(1, task.train.len.max(1));
        let estimate =
            Estimate::measure(&exec, &task.train.rows(&[0], exec.device())?.inputs, batch)?;
        memory::debug_phase(&format!("{label}: estimate measured"));
        estimate.check(memory::available())?;
        let probe_start = std::time::Instant::now();
        let probe_n = config.probe_batch.min(batch).max(1);
        // Signal and gradient norms come from the first training step where
        // that step can be the probe pass (whole batches; Dropout is off in
        // that one step, see `train_on_probed`); otherwise from a pass of
        // their own.
        let from_first_step = !task.micro_batch && cfg.steps > 0;
        let separate = if from_first_step {
            None
        } else {
            Some(probes::signal_and_grad_norms(&exec, &task, probe_n)?)
        };
        let jacobian = probes::jacobian(&exec, &task, probe_n, cfg.seed)?;
        memory::release_free_heap();
        memory::debug_phase(&format!("{label}: probes done"));
        let mut probe_seconds = probe_start.elapsed().as_secs_f64();
        let mut train_cfg = cfg.clone();
        train_cfg.mask = config.masks.get(label).cloned();
        let (report, first) = train_on_probed(&exec, &task, &train_cfg, from_first_step)?;
        memory::release_free_heap();
        memory::debug_phase(&format!("{label}: trained and evaluated"));
        let (signal, grad_norms) = match (separate, first) {
            (Some(probed), _) => probed,
            (None, Some(first)) => {
                probe_seconds += first.seconds;
                (first.signal, first.grad_norms)
            }
            (None, None) => {
                return Err(ExecError::Invalid(
                    "the first training step recorded no probes".into(),
                ));
            }
        };
        let layers = exec.layers();
        let grad_ratio = match (layers.first(), layers.last()) {
            (Some(f), Some(l)) => {
                let (a, b) = (grad_norms.get(&f.weight), grad_norms.get(&l.weight));
                a.zip(b).map(|(a, b)| a / b.max(1e-300))
            }
            _ => None,
        };
        runs.push(RunReport {
            scheme: label.clone(),
            task: report.task,
            loss: report.loss,
            initial_loss: report.initial_loss,
            final_loss: report.final_loss,
            heldout: report.heldout,
            verdict: report.verdict,
            verdict_reason: report.verdict_reason,
            steps_to_target: None,
            q_star: None,
            input_matches_q_star: None,
            signal: signal
                .layers
                .iter()
                .map(|l| (l.layer.clone(), l.q))
                .collect(),
            signal_detail: signal,
            layer_weights: layers.iter().map(|l| l.weight.clone()).collect(),
            grad_norms,
            grad_ratio_first_last: grad_ratio,
            jacobian,
            mask_exact: report.mask_exact,
            micro_batch: report.micro_batch,
            step_seconds: report.step_seconds,
            probe_seconds,
            estimated_bytes: estimate.total(),
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    let target_loss = runs
        .iter()
        .filter(|r| r.verdict == Verdict::Trains)
        .map(|r| r.final_loss)
        .fold(None, |m: Option<f64>, l| Some(m.map_or(l, |m| m.max(l))));
    if let Some(target) = target_loss {
        for r in &mut runs {
            r.steps_to_target = steps_to_reach(&r.loss, target);
        }
    }
    let fastest = runs
        .iter()
        .filter(|r| r.verdict == Verdict::Trains)
        .filter_map(|r| r.steps_to_target.map(|s| (s, r.final_loss, &r.scheme)))
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, s)| s.clone());
    let report = VerifyReport {
        steps: config.train.steps,
        lr: config.train.lr,
        batch: config.train.batch,
        seed: config.train.seed,
        optimizer: config.train.optimizer,
        lr_schedule: config.train.schedule,
        optimizer_choice,
        inputs,
        task: task_info,
        target_loss,
        fastest,
        runs,
        peak_rss_bytes: memory::peak_rss(),
    };
    if let Some(dir) = &config.plot_dir {
        crate::plot::write_plots(&report, &config.model_name, dir)?;
    }
    Ok(report)
}

/// First step at which the moving mean of `loss` (window: a twentieth of the
/// run, at least one step) is at most `target`.
pub fn steps_to_reach(loss: &[f32], target: f64) -> Option<usize> {
    let w = (loss.len() / 20).max(1);
    let mut sum = 0.0f64;
    for (i, &l) in loss.iter().enumerate() {
        sum += l as f64;
        if i >= w {
            sum -= loss[i - w] as f64;
        }
        let n = (i + 1).min(w) as f64;
        if i + 1 >= w && sum / n <= target {
            return Some(i + 1);
        }
    }
    None
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.3e}")).unwrap_or_else(|| "-".into())
}

/// A side-by-side table of the runs, one row per scheme.
pub fn render_table(report: &VerifyReport) -> String {
    let header = [
        "scheme",
        "verdict",
        "loss0",
        "final",
        "to_target",
        "heldout",
        "chance",
        "qL/q0",
        "signal",
        "g1/gL",
        "E[s^2]",
        "Var[s^2]",
        "s_min",
        "s_max",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &report.runs {
        let j = r.jacobian.as_ref();
        let fastest = report.fastest.as_deref() == Some(r.scheme.as_str());
        rows.push(vec![
            if fastest {
                format!("{} *", r.scheme)
            } else {
                r.scheme.clone()
            },
            format!("{:?}", r.verdict).to_lowercase(),
            format!("{:.4}", r.initial_loss),
            format!("{:.4}", r.final_loss),
            r.steps_to_target
                .map_or_else(|| "-".into(), |s| s.to_string()),
            format!("{} {:.4}", r.heldout.metric, r.heldout.value),
            r.heldout
                .chance
                .map_or_else(|| "-".into(), |c| format!("{c:.3}")),
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
    if let Some(task) = &report.task {
        out.push_str(&format!("task: {}\n", task.description));
    }
    for input in &report.inputs {
        out.push_str(&format!("input {}\n", describe_input(input)));
    }
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
    for r in &report.runs {
        out.push_str(&format!(
            "{}: {} — {}\n",
            r.scheme,
            format!("{:?}", r.verdict).to_lowercase(),
            r.verdict_reason
        ));
        if let (Some(q), Some(m)) = (r.q_star, r.input_matches_q_star) {
            out.push_str(&format!(
                "{}: q* = {q:.4e}, input second moment {:.4e} ({})\n",
                r.scheme,
                r.signal_detail.input_q,
                if m {
                    "matches"
                } else {
                    "does not match; try --input-q"
                }
            ));
        }
    }
    if let (Some(f), Some(t)) = (&report.fastest, report.target_loss) {
        out.push_str(&format!(
            "fastest: {f} (* ; first to loss {t:.4e}, the highest final loss among the runs that train)\n"
        ));
    }
    out
}

/// `name [2, 3, 224, 224] f32 (H: default: image side 224 …), task data`.
fn describe_input(input: &InputShape) -> String {
    let chosen: Vec<String> = input
        .sources
        .iter()
        .enumerate()
        .filter(|(_, s)| s.starts_with("default") || s.starts_with("--input"))
        .map(|(axis, s)| format!("axis {axis}: {s}"))
        .collect();
    let mut text = format!("{} {:?} {}", input.name, input.shape, input.dtype);
    if !chosen.is_empty() {
        text.push_str(&format!(" ({})", chosen.join("; ")));
    }
    text.push_str(&format!(", {}", input.fill));
    text
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &VerifyReport, path: &Path) -> Result<(), ExecError> {
    let text =
        serde_json::to_string_pretty(report).map_err(|e| ExecError::Invalid(e.to_string()))?;
    std::fs::write(path, text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::steps_to_reach;

    #[test]
    fn steps_to_target_uses_a_moving_mean() {
        let loss: Vec<f32> = (0..100).map(|i| 2.0 - i as f32 * 0.01).collect();
        // window 5: the mean of steps i-4..=i is 2.0 - 0.01 (i - 2)
        assert_eq!(steps_to_reach(&loss, 1.505), Some(53));
        assert_eq!(steps_to_reach(&loss, 0.5), None);
        assert_eq!(steps_to_reach(&[3.0, 1.0], 1.0), Some(2));
    }
}
