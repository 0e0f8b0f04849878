//! The training loop: optimizer steps on a [`Task`], fixed sparse masks, the
//! held-out metric and the verdict.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var, backprop::GradStore};
use candle_nn::optim::{AdamW, Optimizer as _, ParamsAdamW};
use reinit_onnx::Model;

use crate::data::{LossKind, Rng, Split, Task, TaskOptions, TaskSize, run_micro};
use crate::error::ExecError;
use crate::executor::{Executor, Mode};
use crate::shapes::ShapeRequest;

/// Weight name → per-element flag: `true` trains freely, `false` is held at
/// exactly zero (the zero pattern of a sparse scheme such as EOI).
pub type Mask = HashMap<String, Vec<bool>>;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with heavy-ball momentum: `b ← μ·b + g; w ← w − lr·b`.
    Sgd { momentum: f64 },
    /// candle-nn's AdamW (β = 0.9/0.999, weight decay 0.01).
    AdamW,
}

#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub steps: usize,
    pub lr: f64,
    pub batch: usize,
    pub seed: u64,
    pub optimizer: Optimizer,
    pub device: Device,
    pub mask: Option<Mask>,
    /// `--input-shape`: sizes for the model's inputs; dynamic dims not given
    /// get the defaults of [`crate::shapes`].
    pub shapes: Option<ShapeRequest>,
    /// `--input-q`: scale the float task input to this second moment.
    pub input_q: Option<f64>,
    /// Sizes of the training and held-out sets.
    pub size: TaskSize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 600,
            lr: 3e-3,
            batch: 64,
            seed: 0,
            optimizer: Optimizer::AdamW,
            device: Device::Cpu,
            mask: None,
            shapes: None,
            input_q: None,
            size: TaskSize {
                train: 1536,
                heldout: 261,
            },
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

/// How training went; see [`Verdict`] for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Trains,
    Stalled,
    Diverged,
}

impl Verdict {
    /// The verdict alone; see [`Verdict::judge_with_reason`].
    pub fn judge(loss: &[f32]) -> Verdict {
        Verdict::judge_with_reason(loss).0
    }

    /// `diverged` if a loss is NaN/inf or spikes above [`SPIKE_FACTOR`] × the
    /// initial loss (mean of the first twentieth of the steps); `trains` if the
    /// loss falls steadily: the final loss (mean of the last tenth) is at most
    /// [`STALL_RATIO`] × the initial, no quarter of the run averages above the
    /// initial loss, and no step exceeds [`UNSTABLE_FACTOR`] × the initial;
    /// `stalled` otherwise. The reason says which rule decided, with figures.
    pub fn judge_with_reason(loss: &[f32]) -> (Verdict, String) {
        if loss.is_empty() {
            return (Verdict::Stalled, "no training steps".into());
        }
        if let Some(i) = loss.iter().position(|l| !l.is_finite()) {
            return (
                Verdict::Diverged,
                format!("loss became {} at step {i}", loss[i]),
            );
        }
        let (first, last) = window_means(loss);
        let (peak_at, peak) = loss
            .iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &l)| if l > b.1 { (i, l) } else { b });
        let peak = peak as f64;
        let base = first.max(f64::MIN_POSITIVE);
        if peak > SPIKE_FACTOR * base {
            return (
                Verdict::Diverged,
                format!(
                    "loss spiked to {peak:.4e} at step {peak_at}, {:.0}x the initial {first:.4e}",
                    peak / base
                ),
            );
        }
        if last > STALL_RATIO * first {
            return (
                Verdict::Stalled,
                format!(
                    "final loss {last:.4e} is {:.2}x the initial {first:.4e} (trains needs <= {STALL_RATIO})",
                    last / base
                ),
            );
        }
        if peak > UNSTABLE_FACTOR * base {
            return (
                Verdict::Stalled,
                format!(
                    "unstable: loss reached {peak:.4e} at step {peak_at}, {:.0}x the initial {first:.4e}",
                    peak / base
                ),
            );
        }
        if loss.len() >= 8 {
            let quarter = loss.len() / 4;
            for q in 1..4 {
                let part = &loss[q * quarter..((q + 1) * quarter).min(loss.len())];
                let mean = part.iter().map(|&x| x as f64).sum::<f64>() / part.len() as f64;
                if mean > first {
                    return (
                        Verdict::Stalled,
                        format!(
                            "not steady: quarter {} of the run averages {mean:.4e}, above the initial {first:.4e}",
                            q + 1
                        ),
                    );
                }
            }
        }
        (
            Verdict::Trains,
            format!(
                "loss fell steadily from {first:.4e} to {last:.4e} ({:.2}x)",
                last / base
            ),
        )
    }
}

/// A run "trains" when its loss falls below this fraction of the start.
pub const STALL_RATIO: f64 = 0.9;
/// A loss this many times the initial one is a blow-up: `diverged`.
pub const SPIKE_FACTOR: f64 = 100.0;
/// A loss this many times the initial one (but below [`SPIKE_FACTOR`]) is not
/// steady training: `stalled` even if the run ends low.
pub const UNSTABLE_FACTOR: f64 = 10.0;

fn window_means(loss: &[f32]) -> (f64, f64) {
    let head = (loss.len() / 20).max(1);
    let tail = (loss.len() / 10).max(1);
    let mean = |s: &[f32]| s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64;
    (mean(&loss[..head]), mean(&loss[loss.len() - tail..]))
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
    let start = Instant::now();
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
    for _ in 0..config.steps {
        let step_start = Instant::now();
        if cursor + batch > n {
            order = rng.permutation(n);
            cursor = 0;
        }
        let b = task.train.rows(&order[cursor..cursor + batch], &device)?;
        cursor += batch;
        let out = batch_output(exec, task, &b, Mode::Train)?;
        let loss = loss_of(task, &out, &b.targets)?;
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        losses.push(value);
        if !value.is_finite() {
            break;
        }
        let mut grads = loss.backward()?;
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
        step_times.push(step_start.elapsed().as_secs_f64());
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
    let (verdict, verdict_reason) = Verdict::judge_with_reason(&losses);
    let (initial, last) = if losses.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        window_means(&losses)
    };
    Ok(TrainReport {
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
    })
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
mod verdict_tests {
    use super::*;

    fn curve(points: &[(usize, f32)], len: usize) -> Vec<f32> {
        // piecewise-linear through (step, loss) points
        (0..len)
            .map(|i| {
                let w = points
                    .windows(2)
                    .find(|w| i >= w[0].0 && i <= w[1].0)
                    .unwrap();
                let t = (i - w[0].0) as f32 / (w[1].0 - w[0].0).max(1) as f32;
                w[0].1 + t * (w[1].1 - w[0].1)
            })
            .collect()
    }

    #[test]
    fn a_spike_of_orders_of_magnitude_is_divergence_even_if_the_run_ends_low() {
        // He on a ResNet-18 without normalization (issue 14): 30.7 → 298,229 → 9.2
        let (v, why) = Verdict::judge_with_reason(&[30.7, 298_229.0, 9.2]);
        assert_eq!(v, Verdict::Diverged, "{why}");
        assert!(why.contains("spiked") && why.contains("step 1"), "{why}");
        let (v, why) = Verdict::judge_with_reason(&[2.3, 2.0, f32::NAN]);
        assert_eq!(v, Verdict::Diverged);
        assert!(why.contains("NaN") && why.contains("step 2"), "{why}");
        assert_eq!(Verdict::judge(&[2.3, f32::INFINITY]), Verdict::Diverged);
    }

    #[test]
    fn trains_only_when_the_loss_falls_steadily() {
        let steady = curve(&[(0, 2.3), (99, 0.2)], 100);
        let (v, why) = Verdict::judge_with_reason(&steady);
        assert_eq!(v, Verdict::Trains, "{why}");
        // flat: stalled
        assert_eq!(Verdict::judge(&vec![2.3; 100]), Verdict::Stalled);
        // rises well above the start for half the run, then drops at the end
        let bump = curve(&[(0, 2.3), (20, 8.0), (80, 8.0), (99, 0.5)], 100);
        let (v, why) = Verdict::judge_with_reason(&bump);
        assert_eq!(v, Verdict::Stalled, "{why}");
        assert!(why.contains("not steady"), "{why}");
        // a 20x excursion (below the divergence factor) is not steady training
        let mut jump = steady.clone();
        jump[50] = 2.3 * 20.0;
        let (v, why) = Verdict::judge_with_reason(&jump);
        assert_eq!(v, Verdict::Stalled, "{why}");
        assert!(why.contains("unstable"), "{why}");
        // ordinary minibatch noise on a falling curve still trains
        let noisy: Vec<f32> = steady
            .iter()
            .enumerate()
            .map(|(i, l)| l * if i % 2 == 0 { 1.3 } else { 0.7 })
            .collect();
        assert_eq!(Verdict::judge(&noisy), Verdict::Trains);
    }
}
