//! The training loop: optimizer steps on a [`Task`], fixed sparse masks, the
//! held-out metric and the verdict.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var, backprop::GradStore};
use candle_nn::optim::ParamsAdamW;
use reinit_onnx::Model;

use crate::data::{LossKind, Rng, Split, Task, TaskOptions, TaskSize, run_micro};
use crate::error::ExecError;
use crate::executor::{Executor, Mode};
use crate::optim::AdamW;
use crate::probes::{self, Signal};
use crate::shapes::ShapeRequest;
use crate::verdict::{Verdict, window_means};

/// Weight name → per-element flag: `true` trains freely, `false` is held at
/// exactly zero (the zero pattern of a sparse scheme such as EOI).
pub type Mask = HashMap<String, Vec<bool>>;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with heavy-ball momentum: `b ← μ·b + g; w ← w − lr·b`.
    Sgd { momentum: f64 },
    /// candle-nn's AdamW (β = 0.9/0.999, weight decay 0.01), fused ([`crate::optim`]).
    AdamW,
}

/// How the learning rate moves over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` at every step.
    Constant,
    /// `lr · (1 + cos(π t / steps)) / 2` at step `t`: full rate at the start,
    /// where an init's blow-up shows, and a decay that keeps a net that
    /// trains from leaving its minimum at the end (Loshchilov & Hutter 2017).
    Cosine,
    /// A linear ramp from `lr / w` to `lr` over the first `w` =
    /// [`WARMUP_FRACTION`] of the steps (at least one), then [`Cosine`]
    /// over the rest: the gradual warm-up of Goyal et al. (2017, 5 of 90
    /// epochs) that large-rate SGD on residual nets uses; He et al. (2016)
    /// warm up ResNet-110 at 0.01 before 0.1 for the same reason. A net whose
    /// init tames the residual sum survives the first steps at a small rate
    /// and then takes the full one; an init that explodes still does.
    ///
    /// [`Cosine`]: LrSchedule::Cosine
    WarmupCosine,
}

/// Share of the steps [`LrSchedule::WarmupCosine`] ramps the rate over
/// (Goyal et al. 2017: 5 of 90 epochs).
pub const WARMUP_FRACTION: f64 = 0.05;

impl LrSchedule {
    /// The rate at step `t` of `steps`.
    pub fn at(self, lr: f64, t: usize, steps: usize) -> f64 {
        let cosine = |t: usize, steps: usize| {
            let frac = t as f64 / steps.max(1) as f64;
            lr * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
        };
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::Cosine => cosine(t, steps),
            LrSchedule::WarmupCosine => {
                let warmup = ((steps as f64 * WARMUP_FRACTION).round() as usize).max(1);
                if t < warmup {
                    lr * (t + 1) as f64 / warmup as f64
                } else {
                    cosine(t - warmup, steps.saturating_sub(warmup))
                }
            }
        }
    }

    /// The name `--lr-schedule` takes and the report prints.
    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
            LrSchedule::WarmupCosine => "warmup-cosine",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub steps: usize,
    pub lr: f64,
    pub batch: usize,
    pub seed: u64,
    pub optimizer: Optimizer,
    pub schedule: LrSchedule,
    pub device: Device,
    pub mask: Option<Mask>,
    /// `--input-shape`: sizes for the model's inputs; dynamic dims not given
    /// get the defaults of [`crate::shapes`].
    pub shapes: Option<ShapeRequest>,
    /// `--input-q`: scale the float task input to this second moment.
    pub input_q: Option<f64>,
    /// Sizes of the training and held-out sets.
    pub size: TaskSize,
    /// Told of every finished step (a progress bar); none by default.
    pub progress: crate::ProgressHook,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 600,
            lr: 3e-3,
            batch: 64,
            seed: 0,
            optimizer: Optimizer::AdamW,
            schedule: LrSchedule::Constant,
            device: Device::Cpu,
            mask: None,
            shapes: None,
            input_q: None,
            size: TaskSize {
                train: 1536,
                heldout: 261,
            },
            progress: crate::ProgressHook::default(),
        }
    }
}

impl TrainConfig {
    /// The task settings this training implies (shapes, input scale, and the
    /// budget `steps × batch` that sets how many classes a class task uses).
    pub fn task_options(&self) -> TaskOptions {
        TaskOptions {
            shapes: self.shapes.clone(),
            batch: self.batch,
            input_q: self.input_q,
            budget: Some(self.steps.max(1) * self.batch.max(1)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Heldout {
    /// `accuracy` or `mse`
    pub metric: &'static str,
    pub value: f64,
    /// Accuracy of guessing (1 / classes taught); `None` for regression.
    pub chance: Option<f64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TrainReport {
    pub task: String,
    pub loss_kind: LossKind,
    /// Training loss per step (before the step's update).
    pub loss: Vec<f32>,
    pub initial_loss: f64,
    /// Mean loss over the last tenth of the steps.
    pub final_loss: f64,
    pub heldout: Heldout,
    pub verdict: Verdict,
    /// Which rule of [`Verdict::judge_with_reason`] decided, with figures.
    pub verdict_reason: String,
    pub steps: usize,
    pub batch: usize,
    pub micro_batch: bool,
    /// With a mask: every masked weight was exactly zero after training.
    pub mask_exact: Option<bool>,
    /// Median wall time of one training step (forward, loss, backward,
    /// update); 0 without steps.
    pub step_seconds: f64,
    pub seconds: f64,
}

/// Loads the task for `model`, builds an executor and trains it.
pub fn train(model: &Model, config: &TrainConfig) -> Result<TrainReport, ExecError> {
    let exec = Executor::new(model, &config.device)?;
    let task = Task::for_model(
        &exec,
        model,
        config.seed,
        config.size,
        Some(&config.task_options()),
    )?;
    train_on(&exec, &task, config)
}

/// Forward of one batch (micro-batched when the graph fixes batch 1).
pub(crate) fn batch_output(
    exec: &Executor,
    task: &Task,
    split: &Split,
    mode: Mode,
) -> Result<Tensor, ExecError> {
    if task.micro_batch {
        run_micro(exec, &split.inputs, split.len, mode)
    } else {
        Ok(exec.forward(&split.inputs, mode)?.first().clone())
    }
}

/// The task's loss of a batch output.
pub(crate) fn loss_of(task: &Task, out: &Tensor, targets: &Tensor) -> Result<Tensor, ExecError> {
    Ok(match task.loss {
        LossKind::CrossEntropy { classes } => {
            let logits = out.reshape(((), classes))?;
            let labels = targets.flatten_all()?.to_device(out.device())?;
            candle_nn::loss::cross_entropy(&logits, &labels)?
        }
        LossKind::Mse => candle_nn::loss::mse(
            out,
            &targets.to_dtype(out.dtype())?.to_device(out.device())?,
        )?,
    })
}

fn mask_tensors(exec: &Executor, mask: &Mask) -> Result<Vec<(Var, Tensor)>, ExecError> {
    let mut out = Vec::new();
    for (name, keep) in mask {
        let p = exec
            .param(name)
            .ok_or_else(|| ExecError::Invalid(format!("mask for unknown weight `{name}`")))?;
        if keep.len() != p.var.elem_count() {
            return Err(ExecError::Invalid(format!(
                "mask for `{name}` has {} entries for {} weights",
                keep.len(),
                p.var.elem_count()
            )));
        }
        let m: Vec<f32> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
        let m = Tensor::from_vec(m, p.var.dims(), &Device::Cpu)?
            .to_dtype(p.var.dtype())?
            .to_device(p.var.device())?;
        out.push((p.var.clone(), m));
    }
    Ok(out)
}

enum Opt {
    Sgd {
        vars: Vec<Var>,
        bufs: Vec<Option<Tensor>>,
        lr: f64,
        momentum: f64,
    },
    AdamW(AdamW),
}

impl Opt {
    fn set_lr(&mut self, rate: f64) {
        match self {
            Opt::AdamW(o) => o.set_learning_rate(rate),
            Opt::Sgd { lr, .. } => *lr = rate,
        }
    }

    fn step(&mut self, grads: &GradStore) -> Result<(), ExecError> {
        match self {
            Opt::AdamW(o) => o.step(grads)?,
            Opt::Sgd {
                vars,
                bufs,
                lr,
                momentum,
            } => {
                for (v, b) in vars.iter().zip(bufs.iter_mut()) {
                    let Some(g) = grads.get(v.as_tensor()) else {
                        continue;
                    };
                    let nb = match b.take() {
                        Some(old) => ((old * *momentum)? + g)?,
                        None => g.clone(),
                    };
                    v.set(&(v.as_tensor() - (&nb * *lr)?)?)?;
                    *b = Some(nb);
                }
            }
        }
        Ok(())
    }
}

/// Trains `exec` in place on `task`.
pub fn train_on(
    exec: &Executor,
    task: &Task,
    config: &TrainConfig,
) -> Result<TrainReport, ExecError> {
    Ok(train_on_probed(exec, task, config, false)?.0)
}

/// The signal and gradient-norm probes read off a run's first training step
/// (at init: before the first update), instead of a probe pass of their own.
#[derive(Debug, Clone)]
pub struct FirstStepProbes {
    pub signal: Signal,
    pub grad_norms: BTreeMap<String, f64>,
    /// Time spent on the probes' statistics (not counted in the step time).
    pub seconds: f64,
}

/// [`train_on`]; with `probe_first_step` (and a graph that runs whole
/// batches) the first step's forward also records every layer's output for
/// the signal probe and its gradients give the gradient norms. In a graph
/// with Dropout that first step runs with Dropout off (and no BN running
/// statistics update), as a separate probe pass would.
pub fn train_on_probed(
    exec: &Executor,
    task: &Task,
    config: &TrainConfig,
    probe_first_step: bool,
) -> Result<(TrainReport, Option<FirstStepProbes>), ExecError> {
    let start = Instant::now();
    let probe_first_step = probe_first_step && !task.micro_batch;
    let layer_outputs: Vec<String> = if probe_first_step {
        exec.layers().iter().map(|l| l.output.clone()).collect()
    } else {
        Vec::new()
    };
    let mut first_probes = None;
    let has_dropout = probe_first_step && exec.has_dropout();
    exec.seed(config.seed);
    let vars = exec.trainable_vars();
    let masks = match &config.mask {
        Some(m) => mask_tensors(exec, m)?,
        None => Vec::new(),
    };
    for (v, m) in &masks {
        v.set(&(v.as_tensor() * m)?)?;
    }
    let mut opt = match config.optimizer {
        Optimizer::AdamW => Opt::AdamW(AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: config.lr,
                ..Default::default()
            },
        )?),
        Optimizer::Sgd { momentum } => Opt::Sgd {
            bufs: vec![None; vars.len()],
            vars: vars.clone(),
            lr: config.lr,
            momentum,
        },
    };
    let device = exec.device().clone();
    let mut rng = Rng::new(config.seed ^ 0x6f72_6465);
    let n = task.train.len;
    let batch = config.batch.clamp(1, n);
    let mut order = rng.permutation(n);
    let mut cursor = 0;
    let mut losses = Vec::with_capacity(config.steps);
    let mut step_times = Vec::with_capacity(config.steps);
    for step in 0..config.steps {
        let step_start = Instant::now();
        opt.set_lr(config.schedule.at(config.lr, step, config.steps));
        if cursor + batch > n {
            order = rng.permutation(n);
            cursor = 0;
        }
        let b = task.train.rows(&order[cursor..cursor + batch], &device)?;
        cursor += batch;
        let probing = probe_first_step && step == 0;
        let mut probe_time = 0.0;
        let (out, signal) = if probing {
            // Probes see the network without its noise: with Dropout the
            // probing step runs it off (Mode::Probe, which also leaves the
            // BN running statistics alone for this one step), so a model
            // with Dropout needs no probe pass of its own.
            let mode = if has_dropout {
                Mode::Probe
            } else {
                Mode::Train
            };
            let run = exec.forward_probed(&b.inputs, mode, &layer_outputs)?;
            let t = Instant::now();
            let signal = probes::signal_of(exec, &b, &run.probes)?;
            probe_time += t.elapsed().as_secs_f64();
            (run.first().clone(), Some(signal))
        } else {
            (batch_output(exec, task, &b, Mode::Train)?, None)
        };
        let loss = loss_of(task, &out, &b.targets)?;
        crate::memory::debug_phase(&format!("step {step}: forward"));
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        losses.push(value);
        let mut grads = if value.is_finite() || signal.is_some() {
            loss.backward()?
        } else {
            break;
        };
        crate::memory::debug_phase(&format!("step {step}: backward"));
        if let Some(signal) = signal {
            let t = Instant::now();
            let grad_norms = probes::norms_of(exec, &grads)?;
            probe_time += t.elapsed().as_secs_f64();
            first_probes = Some(FirstStepProbes {
                signal,
                grad_norms,
                seconds: probe_time,
            });
        }
        if !value.is_finite() {
            break;
        }
        // the forward graph (every activation) goes before the update allocates
        drop((out, loss, b));
        for (v, m) in &masks {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * m)?);
            }
        }
        opt.step(&grads)?;
        for (v, m) in &masks {
            v.set(&(v.as_tensor() * m)?)?;
        }
        crate::memory::debug_phase(&format!("step {step}: update"));
        step_times.push(step_start.elapsed().as_secs_f64() - probe_time);
        config.progress.emit(crate::Progress::Step {
            step: losses.len(),
            loss: value,
        });
    }
    let mask_exact = if masks.is_empty() {
        None
    } else {
        let mut exact = true;
        for (v, m) in &masks {
            let off = m.affine(-1.0, 1.0)?; // 1 where held at zero
            let leaked = (v.as_tensor() * off)?
                .abs()?
                .sum_all()?
                .to_dtype(DType::F64)?
                .to_scalar::<f64>()?;
            exact &= leaked == 0.0;
        }
        Some(exact)
    };
    let heldout = evaluate_in_chunks(exec, task, &device, batch)?;
    let (verdict, verdict_reason) = Verdict::judge_with_reason(&losses, task.info.constant_loss);
    let (initial, last) = if losses.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        window_means(&losses)
    };
    let report = TrainReport {
        task: task.name.clone(),
        loss_kind: task.loss,
        loss: losses,
        initial_loss: initial,
        final_loss: last,
        heldout,
        verdict,
        verdict_reason,
        steps: config.steps,
        batch,
        micro_batch: task.micro_batch,
        mask_exact,
        step_seconds: median(&mut step_times),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((report, first_probes))
}

/// The median of `values` (0 when empty).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Held-out accuracy or MSE, in [`Mode::Eval`], 256 samples at a time.
pub fn evaluate(exec: &Executor, task: &Task, device: &Device) -> Result<Heldout, ExecError> {
    evaluate_in_chunks(exec, task, device, 256)
}

/// [`evaluate`] `chunk` samples at a time (`verify` uses the training batch,
/// so evaluation never holds more activations than a training step).
pub fn evaluate_in_chunks(
    exec: &Executor,
    task: &Task,
    device: &Device,
    chunk: usize,
) -> Result<Heldout, ExecError> {
    let n = task.heldout.len;
    let mut correct = 0usize;
    let mut total = 0usize;
    let mut sq = 0.0f64;
    let chunk = chunk.max(1);
    let mut i = 0;
    while i < n {
        let idx: Vec<usize> = (i..(i + chunk).min(n)).collect();
        i += chunk;
        let b = task.heldout.rows(&idx, device)?;
        let out = batch_output(exec, task, &b, Mode::Eval)?;
        match task.loss {
            LossKind::CrossEntropy { classes } => {
                let pred = out
                    .reshape(((), classes))?
                    .argmax(D::Minus1)?
                    .to_device(&Device::Cpu)?;
                let labels = b.targets.flatten_all()?.to_device(&Device::Cpu)?;
                let p: Vec<u32> = pred.to_vec1()?;
                let l: Vec<u32> = labels.to_vec1()?;
                correct += p.iter().zip(&l).filter(|(a, b)| a == b).count();
                total += l.len();
            }
            LossKind::Mse => {
                let t = b.targets.to_dtype(out.dtype())?.to_device(out.device())?;
                sq += (out - t)?
                    .sqr()?
                    .sum_all()?
                    .to_dtype(DType::F64)?
                    .to_scalar::<f64>()?;
                total += b.targets.elem_count();
            }
        }
    }
    Ok(match task.loss {
        LossKind::CrossEntropy { .. } => Heldout {
            metric: "accuracy",
            value: correct as f64 / total.max(1) as f64,
            chance: task.info.chance,
        },
        LossKind::Mse => Heldout {
            metric: "mse",
            value: sq / total.max(1) as f64,
            chance: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_cosine_ramps_linearly_then_follows_the_cosine() {
        let s = LrSchedule::WarmupCosine;
        // 100 steps: 5 warm-up steps at 0.02, 0.04, … 0.1
        for t in 0..5 {
            let want = 0.1 * (t + 1) as f64 / 5.0;
            assert!((s.at(0.1, t, 100) - want).abs() < 1e-12, "step {t}");
        }
        // then the cosine over the remaining 95 steps, from the full rate
        assert!((s.at(0.1, 5, 100) - 0.1).abs() < 1e-12);
        let mid = 5 + 95 / 2;
        assert!((s.at(0.1, mid, 100) - 0.05).abs() < 0.003);
        assert!(s.at(0.1, 99, 100) < 1e-3);
        // a short run still warms up over one step (the full rate at step 0)
        assert_eq!(s.at(0.1, 0, 4), 0.1);
        assert_eq!(LrSchedule::Cosine.at(0.1, 0, 100), 0.1);
    }
}
