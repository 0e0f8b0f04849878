//! Tasks: what the network is trained on. The digits set from `fixtures/`
//! where the input fits, otherwise learnable synthetic data drawn from our own
//! seeded RNG (candle's CPU RNG cannot be seeded).
//!
//! Over 600 lines: most of it is `Task::for_model`, one ordered decision (digits, token
//! ids, synthetic classes or a teacher, then the data budget) that issue 14 is still
//! changing; its split (the teacher's chunked runs, the splits) is left until that lands.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng as _, SeedableRng};
use reinit_onnx::Model;

use crate::error::ExecError;
use crate::executor::{Executor, Mode};
use crate::shapes::{self, Fill, InputShape, ShapeRequest};
use crate::synth;

/// Seeded random numbers (ChaCha8, portable).
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(ChaCha8Rng::seed_from_u64(seed))
    }
    pub fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// The loss a task is trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Cross-entropy over the last axis of the output; held-out metric accuracy.
    CrossEntropy { classes: usize },
    /// Mean squared error; held-out metric MSE.
    Mse,
}

/// One split: inputs by graph-input name (dim 0 = sample) and targets (u32
/// labels for classes, floats in the output's shape for regression).
#[derive(Debug, Clone)]
pub struct Split {
    pub inputs: HashMap<String, Tensor>,
    pub targets: Tensor,
    pub len: usize,
}

impl Split {
    /// Rows `idx` of every tensor, on `device`.
    pub fn rows(&self, idx: &[usize], device: &Device) -> Result<Split, ExecError> {
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let ids = Tensor::from_vec(ids, idx.len(), &Device::Cpu)?;
        let pick = |t: &Tensor, dev: &Device| -> Result<Tensor, ExecError> {
            Ok(t.index_select(&ids, 0)?.to_device(dev)?)
        };
        let inputs = self
            .inputs
            .iter()
            .map(|(k, v)| {
                let dev = if v.dtype().is_float() {
                    device
                } else {
                    &Device::Cpu
                };
                Ok((k.clone(), pick(v, dev)?))
            })
            .collect::<Result<_, ExecError>>()?;
        Ok(Split {
            inputs,
            targets: pick(&self.targets, device)?,
            len: idx.len(),
        })
    }

    /// Rows `start..start + len` as views of the same storage (no copy).
    fn range(&self, start: usize, len: usize) -> Result<Split, ExecError> {
        let inputs = self
            .inputs
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.narrow(0, start, len)?)))
            .collect::<Result<_, ExecError>>()?;
        Ok(Split {
            inputs,
            targets: self.targets.narrow(0, start, len)?,
            len,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Task {
    /// `digits`, `image-patterns`, `teacher-classes`, `teacher-regression`,
    /// `token-sequences`.
    pub name: String,
    pub loss: LossKind,
    pub train: Split,
    pub heldout: Split,
    /// The graph fixes the batch size to 1 (e.g. reshape constants from a
    /// static export): batches run one sample at a time and are concatenated.
    pub micro_batch: bool,
    /// What the task is, for the report.
    pub info: TaskInfo,
    /// Every graph input as fed, with where its sizes came from.
    pub inputs: Vec<InputShape>,
}

/// The task as the report describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TaskInfo {
    /// `digits`, `image-patterns`, `teacher-classes`, `teacher-regression`,
    /// `token-sequences`.
    pub name: String,
    /// One sentence: the data, the targets, classes used of the output's, sizes.
    pub description: String,
    /// Classes the targets use (a class task uses no more than the budget can teach).
    pub classes_taught: Option<usize>,
    /// Held-out accuracy of guessing (1 / classes taught); `None` for regression.
    pub chance: Option<f64>,
    /// Second moment of the float task input over the training samples.
    pub input_q: Option<f64>,
    /// Loss of the best prediction that ignores the inputs (the label
    /// frequencies' entropy, or the targets' variance) on the training split:
    /// a run `trains` only below it ([`crate::Verdict::judge_with_reason`]).
    pub constant_loss: Option<f64>,
    pub train_samples: usize,
    pub heldout_samples: usize,
}

/// Where `digits.bin` is looked for: `$REINIT_DIGITS`, then the repository's
/// `fixtures/`.
pub fn digits_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("REINIT_DIGITS") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/digits.bin");
    p.exists().then_some(p)
}

/// sklearn's 8×8 digits: pixels scaled to [0, 1] and labels.
pub fn load_digits(path: &Path) -> Result<(Vec<[f32; 64]>, Vec<u32>), ExecError> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 12 || &bytes[..8] != b"DIGITS01" {
        return Err(ExecError::Invalid(format!(
            "{}: not a DIGITS01 file",
            path.display()
        )));
    }
    let count = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    if bytes.len() < 12 + 65 * count {
        return Err(ExecError::Invalid(format!("{}: truncated", path.display())));
    }
    let mut xs = Vec::with_capacity(count);
    let mut ys = Vec::with_capacity(count);
    for r in bytes[12..12 + 65 * count].chunks_exact(65) {
        let mut x = [0f32; 64];
        for (d, &p) in x.iter_mut().zip(&r[..64]) {
            *d = p as f32 / 16.0;
        }
        xs.push(x);
        ys.push(r[64] as u32);
    }
    Ok((xs, ys))
}

/// Sizes of a task's splits.
#[derive(Debug, Clone, Copy)]
pub struct TaskSize {
    pub train: usize,
    pub heldout: usize,
}

fn float_tensor(values: Vec<f32>, n: usize, sample: &[usize]) -> Result<Tensor, ExecError> {
    let mut shape = vec![n];
    shape.extend_from_slice(sample);
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Rows of the embedding table a token input indexes (2 if none).
fn vocab(exec: &Executor, model: &Model, input: &str) -> usize {
    let graph = model.proto().graph.as_ref();
    for node in graph.map(|g| g.node.as_slice()).unwrap_or_default() {
        if node.op_type.as_deref() == Some("Gather")
            && node.input.get(1).map(String::as_str) == Some(input)
            && let Some(p) = node.input.first().and_then(|n| exec.param(n))
        {
            return p.var.dim(0).unwrap_or(2);
        }
    }
    2
}

/// What shapes a task's data and how much of the output it uses.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    /// `--input-shape`: sizes for the model's inputs (dynamic dims otherwise
    /// get the defaults of [`crate::shapes`]).
    pub shapes: Option<ShapeRequest>,
    /// Rows of a training batch, recorded in the input shapes (1 if 0).
    pub batch: usize,
    /// Scale the float task input to this second moment (`--input-q`);
    /// otherwise float inputs are standardized (second moment ≈ 1).
    pub input_q: Option<f64>,
    /// Samples the training budget shows the model (steps × batch): a class
    /// task uses as many classes as that can teach ([`synth::classes_taught`]).
    pub budget: Option<usize>,
}

/// The most bytes the task's samples (train + held-out, all inputs) may take;
/// larger inputs get fewer samples (224×224 RGB: about 400).
pub const TASK_DATA_BYTES: usize = 256 << 20;

/// The fewest samples a task may have (train and held-out together): with
/// fewer, the data budget refuses the input size rather than train on noise.
const MIN_TASK_SAMPLES: usize = 8;

impl Task {
    /// Chooses the task for `model`: the digits where the input fits, else
    /// learnable synthetic data shaped from its inputs (see the crate docs).
    /// `options` (default: none) sets input shapes, the input scale and the
    /// training budget.
    pub fn for_model(
        exec: &Executor,
        model: &Model,
        seed: u64,
        size: TaskSize,
        options: Option<&TaskOptions>,
    ) -> Result<Task, ExecError> {
        let default = TaskOptions::default();
        let options = options.unwrap_or(&default);
        let declared = shapes::declared_inputs(model);
        if declared.is_empty() {
            return Err(ExecError::Invalid("the graph has no inputs".into()));
        }
        let resolved =
            shapes::resolve_inputs(&declared, options.shapes.as_ref(), options.batch.max(1))
                .map_err(ExecError::Usage)?;
        let mut inputs_used = resolved.inputs.clone();
        let main_idx = resolved.main;
        let main = &declared[main_idx];
        let is_float = main.dtype.is_float();
        let mut sample = inputs_used[main_idx].sample().to_vec();
        if options.shapes.is_none()
            && let Some(whole) = whole_input_if_no_batch_axis(exec, main, &sample)?
        {
            inputs_used[main_idx].shape =
                [vec![inputs_used[main_idx].shape[0]], whole.clone()].concat();
            inputs_used[main_idx].sources = std::iter::once("batch (broadcast)".to_string())
                .chain(whole.iter().map(|_| "model".to_string()))
                .collect();
            sample = whole;
        }
        if options.input_q.is_some() && !is_float {
            return Err(ExecError::Usage(format!(
                "--input-q scales float inputs; the task input `{}` holds token ids",
                main.name
            )));
        }
        if let Some(q) = options.input_q
            && !(q.is_finite() && q > 0.0)
        {
            return Err(ExecError::Usage(format!(
                "--input-q {q}: must be a positive number"
            )));
        }

        // Fewer samples where they would not fit the data budget.
        let sample_bytes: usize = inputs_used
            .iter()
            .map(|s| {
                s.sample().iter().product::<usize>().max(1)
                    * if s.dtype.starts_with('f') { 4 } else { 8 }
            })
            .sum::<usize>()
            .max(1);
        let fit = TASK_DATA_BYTES / sample_bytes;
        if fit < MIN_TASK_SAMPLES {
            // A task of one or two huge samples says nothing, and the model's
            // pass over such inputs is what would exhaust memory next.
            let need = (MIN_TASK_SAMPLES * sample_bytes) as u64;
            return Err(ExecError::TooLarge(format!(
                "a task needs at least {MIN_TASK_SAMPLES} samples of {} each ({} in all), more \
                 than the {} task-data budget; give a smaller --input-shape",
                crate::memory::human(sample_bytes as u64),
                crate::memory::human(need),
                crate::memory::human(TASK_DATA_BYTES as u64),
            )));
        }
        let size = if size.train + size.heldout > fit {
            let heldout = (size.heldout * fit / (size.train + size.heldout)).max(1);
            TaskSize {
                train: fit - heldout,
                heldout,
            }
        } else {
            size
        };
        let n = size.train + size.heldout;
        crate::memory::check_task_data(n, 4 * sample.iter().product::<usize>() as u64)?;
        let mut rng = Rng::new(seed ^ 0x7461_736b);

        // Auxiliary inputs: masks ones, positions 0..n-1, others zeros / true.
        let aux = |rows: usize| -> Result<HashMap<String, Tensor>, ExecError> {
            let mut m = HashMap::new();
            for (i, (d, s)) in declared.iter().zip(&inputs_used).enumerate() {
                if i == main_idx {
                    continue;
                }
                let mut shape = vec![rows];
                shape.extend_from_slice(s.sample());
                let t = match shapes::aux_fill(&d.name, d.dtype) {
                    Fill::True => Tensor::ones(shape, DType::U8, &Device::Cpu)?,
                    Fill::Ones if d.dtype.is_float() => {
                        Tensor::ones(shape, DType::F32, &Device::Cpu)?
                    }
                    Fill::Ones => Tensor::ones(shape, DType::I64, &Device::Cpu)?,
                    Fill::Positions => {
                        let last = *shape.last().unwrap_or(&1);
                        let count: usize = shape.iter().product();
                        let v: Vec<i64> = (0..count).map(|j| (j % last.max(1)) as i64).collect();
                        let t = Tensor::from_vec(v, shape, &Device::Cpu)?;
                        if d.dtype.is_float() {
                            t.to_dtype(DType::F32)?
                        } else {
                            t
                        }
                    }
                    _ if d.dtype.is_float() => Tensor::zeros(shape, DType::F32, &Device::Cpu)?,
                    _ => Tensor::zeros(shape, DType::I64, &Device::Cpu)?,
                };
                m.insert(d.name.clone(), t);
            }
            Ok(m)
        };

        // Output shape from a one-sample probe run; find out whether the graph
        // takes more than one sample at a time.
        let probe_inputs = |k: usize| -> Result<HashMap<String, Tensor>, ExecError> {
            let mut m = aux(k)?;
            let mut shape = vec![k];
            shape.extend_from_slice(&sample);
            let dtype = if is_float { DType::F32 } else { DType::I64 };
            m.insert(
                main.name.clone(),
                Tensor::zeros(shape, dtype, &Device::Cpu)?,
            );
            Ok(m)
        };
        let out = exec.forward(&probe_inputs(1)?, Mode::Eval)?;
        let out_sample: Vec<usize> = out.first().dims()[1..].to_vec();
        let micro_batch = exec.forward(&probe_inputs(2)?, Mode::Eval).is_err();

        let classes = out_sample.last().copied().unwrap_or(1);
        let classify =
            classes >= 2 && (out_sample.len() == 1 || (!is_float && out_sample.len() == 2));
        let k = synth::classes_taught(classes, options.budget);
        let numel: usize = sample.iter().product();

        let digits = digits_path().filter(|_| {
            is_float
                && classify
                && classes == 10
                && out_sample.len() == 1
                && (sample == [64] || sample == [1, 8, 8])
        });

        let split_note =
            |train: usize, held: usize| format!("{train} train / {held} held-out samples");
        let (name, description, x, targets, loss, chance, taught) = if let Some(path) = digits {
            let (xs, ys) = load_digits(&path)?;
            let order = Rng::new(seed).permutation(xs.len());
            let take = n.min(xs.len());
            let mut v = Vec::with_capacity(take * 64);
            let mut y = Vec::with_capacity(take);
            for &i in order.iter().take(take) {
                v.extend_from_slice(&xs[i]);
                y.push(ys[i]);
            }
            let n_train = size.train.min(take);
            synth::standardize(&mut v, n_train * 64);
            (
                "digits",
                format!(
                    "sklearn 8x8 digits, 10 classes, {}",
                    split_note(n_train, take - n_train)
                ),
                FloatOrIds::Float(v, take),
                Tensor::from_vec(y, take, &Device::Cpu)?,
                LossKind::CrossEntropy { classes: 10 },
                Some(0.1),
                Some(10),
            )
        } else if !is_float {
            if !classify {
                return Err(ExecError::Invalid(format!(
                    "token input `{}` without a class output (output per sample {out_sample:?})",
                    main.name
                )));
            }
            let full_vocab = vocab(exec, model, &main.name);
            let v = full_vocab.min(synth::MAX_TASK_VOCAB);
            let t = sample.last().copied().unwrap_or(1).max(1);
            let perm = rng.permutation(v);
            let mut ids = Vec::with_capacity(n * numel);
            for _ in 0..(n * numel).div_ceil(t) {
                let mut cur = rng.below(v);
                for _ in 0..t {
                    ids.push(cur as i64);
                    cur = if rng.uniform() < 0.8 {
                        perm[cur]
                    } else {
                        rng.below(v)
                    };
                }
            }
            ids.truncate(n * numel);
            let next_token = classes == full_vocab;
            let per_token = out_sample.len() == 2;
            let class_of: Vec<u32> = (0..v).map(|_| rng.below(k) as u32).collect();
            let mut y = Vec::new();
            for s in ids.chunks(t) {
                if per_token {
                    y.extend((0..s.len()).map(|i| {
                        if next_token {
                            // next-token prediction on the Markov chain
                            if i + 1 < s.len() {
                                s[i + 1] as u32
                            } else {
                                perm[s[i] as usize] as u32
                            }
                        } else {
                            class_of[s[i] as usize]
                        }
                    }));
                } else {
                    y.push(class_of[s[0] as usize]);
                }
            }
            let y = if per_token {
                Tensor::from_vec(y, (n, t), &Device::Cpu)?
            } else {
                Tensor::from_vec(y, n, &Device::Cpu)?
            };
            let (what, chance, taught) = if next_token && per_token {
                (
                    format!("next-token targets over {v} of {full_vocab} token ids"),
                    1.0 / v as f64,
                    v,
                )
            } else if per_token {
                (
                    format!("per-token classes: {k} of the output's {classes}"),
                    1.0 / k as f64,
                    k,
                )
            } else {
                (
                    format!(
                        "sequence classes (from the first token): {k} of the output's {classes}"
                    ),
                    1.0 / k as f64,
                    k,
                )
            };
            (
                "token-sequences",
                format!(
                    "Markov-chain token sequences of length {t} over {v} token ids; {what}; {}",
                    split_note(size.train, size.heldout)
                ),
                FloatOrIds::Ids(ids, n),
                y,
                LossKind::CrossEntropy { classes },
                Some(chance),
                Some(taught),
            )
        } else if classify && sample.len() >= 2 {
            let (mut v, y) = synth::image_patterns(&mut rng, &sample, k, n);
            synth::standardize(&mut v, size.train * numel);
            (
                "image-patterns",
                format!(
                    "class-dependent patterns (per-class channel offsets and plane waves, random phase, noise): {k} of the output's {classes} classes, {}",
                    split_note(size.train, size.heldout)
                ),
                FloatOrIds::Float(v, n),
                Tensor::from_vec(y, n, &Device::Cpu)?,
                LossKind::CrossEntropy { classes },
                Some(1.0 / k as f64),
                Some(k),
            )
        } else if classify {
            let v = rng.normals(n * numel);
            let y = synth::teacher_labels(&mut rng, &v, numel.max(1), k);
            (
                "teacher-classes",
                format!(
                    "labels of a fixed random tanh teacher: {k} of the output's {classes} classes, {}",
                    split_note(size.train, size.heldout)
                ),
                FloatOrIds::Float(v, n),
                Tensor::from_vec(y, n, &Device::Cpu)?,
                LossKind::CrossEntropy { classes },
                Some(1.0 / k as f64),
                Some(k),
            )
        } else {
            // regression onto a teacher: the same graph with resampled weights,
            // computed on the inputs as they are fed (after any --input-q scaling)
            let mut v = rng.normals(n * numel);
            if let Some(q) = options.input_q {
                synth::scale_to_second_moment(&mut v, size.train * numel, q);
            }
            let x = float_tensor(v.clone(), n, &sample)?;
            let teacher = Executor::new(model, &Device::Cpu)?;
            for p in teacher.params().iter().filter(|p| p.trainable) {
                let sd = p
                    .var
                    .as_tensor()
                    .to_dtype(DType::F64)?
                    .sqr()?
                    .mean_all()?
                    .to_scalar::<f64>()?
                    .sqrt();
                let fresh: Vec<f32> = rng
                    .normals(p.var.elem_count())
                    .iter()
                    .map(|x| x * sd as f32)
                    .collect();
                p.var.set(
                    &Tensor::from_vec(fresh, p.var.dims(), &Device::Cpu)?
                        .to_dtype(p.var.dtype())?,
                )?;
            }
            let mut inputs = aux(n)?;
            inputs.insert(main.name.clone(), x);
            // in chunks: one pass over every sample would hold all their activations
            let y = run_chunked(
                &teacher,
                &inputs,
                n,
                if micro_batch { 1 } else { TEACHER_CHUNK },
            )?;
            (
                "teacher-regression",
                format!(
                    "MSE to a teacher of the same output shape (this graph with resampled weights), {}",
                    split_note(size.train, size.heldout)
                ),
                FloatOrIds::Scaled(v, n),
                y.detach(),
                LossKind::Mse,
                None,
                None,
            )
        };

        let mut description = description;
        let (x, input_q) = match x {
            FloatOrIds::Float(mut v, rows) => {
                let train_elems = size.train.min(rows.saturating_sub(1)).max(1) * numel;
                if let Some(q) = options.input_q {
                    synth::scale_to_second_moment(&mut v, train_elems, q);
                }
                let q = second_moment(&v[..train_elems.min(v.len())]);
                (float_tensor(v, rows, &sample)?, Some(q))
            }
            FloatOrIds::Scaled(v, rows) => {
                let train_elems = size.train.min(rows.saturating_sub(1)).max(1) * numel;
                let q = second_moment(&v[..train_elems.min(v.len())]);
                (float_tensor(v, rows, &sample)?, Some(q))
            }
            FloatOrIds::Ids(ids, rows) => {
                let mut shape = vec![rows];
                shape.extend_from_slice(&sample);
                (Tensor::from_vec(ids, shape, &Device::Cpu)?, None)
            }
        };
        if let Some(q) = options.input_q {
            description.push_str(&format!("; inputs scaled to second moment {q}"));
        }

        let total = x.dim(0)?;
        let n_train = size.train.min(total.saturating_sub(1)).max(1);
        let constant_loss = {
            let train_targets = targets.narrow(0, 0, n_train)?;
            let per_sample = train_targets.elem_count() / n_train.max(1);
            let values: Vec<f32> = train_targets
                .flatten_all()?
                .to_dtype(DType::F32)?
                .to_vec1()?;
            let ce = matches!(loss, LossKind::CrossEntropy { .. });
            Some(crate::verdict::constant_prediction_loss(
                ce, &values, per_sample,
            ))
            .filter(|c| c.is_finite())
        };
        let mut inputs = aux(total)?;
        inputs.insert(main.name.clone(), x);
        let all = Split {
            inputs,
            targets,
            len: total,
        };
        Ok(Task {
            name: name.to_string(),
            loss,
            // views: the samples are held once
            train: all.range(0, n_train)?,
            heldout: all.range(n_train, total - n_train)?,
            micro_batch,
            info: TaskInfo {
                name: name.to_string(),
                description,
                classes_taught: taught,
                chance,
                input_q,
                constant_loss,
                train_samples: n_train,
                heldout_samples: total - n_train,
            },
            inputs: inputs_used,
        })
    }
}

/// The task input's values before they become a tensor.
enum FloatOrIds {
    /// Float samples (rows); `--input-q` scaling still to apply.
    Float(Vec<f32>, usize),
    /// Float samples already scaled (the regression teacher saw them so).
    Scaled(Vec<f32>, usize),
    Ids(Vec<i64>, usize),
}

fn second_moment(v: &[f32]) -> f64 {
    v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>() / v.len().max(1) as f64
}

/// Samples per teacher pass (bounded memory for image-sized inputs).
const TEACHER_CHUNK: usize = 16;

/// [`Mode::Eval`] passes over `n` samples `chunk` at a time, first outputs
/// concatenated.
fn run_chunked(
    exec: &Executor,
    inputs: &HashMap<String, Tensor>,
    n: usize,
    chunk: usize,
) -> Result<Tensor, ExecError> {
    let mut outs = Vec::with_capacity(n.div_ceil(chunk.max(1)));
    let mut start = 0;
    while start < n {
        let len = chunk.max(1).min(n - start);
        let part: HashMap<String, Tensor> = inputs
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.narrow(0, start, len)?)))
            .collect::<Result<_, ExecError>>()?;
        outs.push(exec.forward(&part, Mode::Eval)?.first().clone());
        start += len;
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// Runs a graph that takes one sample at a time over `n` samples and
/// concatenates the first output.
pub fn run_micro(
    exec: &Executor,
    inputs: &HashMap<String, Tensor>,
    n: usize,
    mode: Mode,
) -> Result<Tensor, ExecError> {
    let mut outs = Vec::with_capacity(n);
    for i in 0..n {
        let one: HashMap<String, Tensor> = inputs
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.narrow(0, i, 1)?)))
            .collect::<Result<_, ExecError>>()?;
        outs.push(exec.forward(&one, mode)?.first().clone());
    }
    Ok(Tensor::cat(&outs, 0)?)
}

/// A graph whose first input is fully static and that cannot run with axis 0
/// as the batch (e.g. `MatMul(W, X)` with samples along axis 1) takes the whole
/// input as one sample (returned); a leading batch axis is then added by
/// broadcasting ops.
fn whole_input_if_no_batch_axis(
    exec: &Executor,
    main: &shapes::DeclaredInput,
    sample: &[usize],
) -> Result<Option<Vec<usize>>, ExecError> {
    let whole: Option<Vec<usize>> = main.dims.as_ref().and_then(|dims| {
        dims.iter()
            .map(|d| match d {
                shapes::DeclaredDim::Fixed(v) => Some(*v),
                shapes::DeclaredDim::Dynamic(_) => None,
            })
            .collect()
    });
    let Some(whole) = whole.filter(|w| w.len() >= 2 && exec.inputs().len() == 1) else {
        return Ok(None);
    };
    let runs = |shape: &[usize]| -> Result<bool, ExecError> {
        let mut dims = vec![1];
        dims.extend_from_slice(shape);
        let dtype = if main.dtype.is_float() {
            DType::F32
        } else {
            DType::I64
        };
        let inputs =
            HashMap::from([(main.name.clone(), Tensor::zeros(dims, dtype, &Device::Cpu)?)]);
        Ok(exec.forward(&inputs, Mode::Eval).is_ok())
    };
    if !runs(sample)? && runs(&whole)? {
        return Ok(Some(whole));
    }
    Ok(None)
}
