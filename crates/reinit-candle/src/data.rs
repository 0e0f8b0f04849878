//! Tasks: what the network is trained on. The digits set from `fixtures/`
//! where the input fits, otherwise learnable synthetic data drawn from our own
//! seeded RNG (candle's CPU RNG cannot be seeded).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng as _, SeedableRng};
use reinit_onnx::Model;

use crate::error::ExecError;
use crate::executor::{Executor, Mode};

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

impl Task {
    /// Picks a task for the model's inputs and outputs. `sample_shape`
    /// overrides the per-sample shape of the first input (dynamic dims).
    /// Chooses the task for `model`: the digits where the input fits, else
    /// synthetic data shaped from its inputs.
    pub fn for_model(
        exec: &Executor,
        model: &Model,
        seed: u64,
        size: TaskSize,
        sample_shape: Option<&[usize]>,
    ) -> Result<Task, ExecError> {
        let specs = exec.inputs();
        let main = specs
            .first()
            .ok_or_else(|| ExecError::Invalid("the graph has no inputs".into()))?;
        let sample: Vec<usize> = match sample_shape {
            Some(s) => s.to_vec(),
            None => main
                .dims
                .iter()
                .skip(1)
                .map(|d| {
                    d.ok_or_else(|| {
                        ExecError::Invalid(format!(
                            "input `{}` has a dynamic dimension; give the sample shape",
                            main.name
                        ))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let n = size.train + size.heldout;
        let mut rng = Rng::new(seed ^ 0x7461_736b);
        let is_float = main.dtype.is_float();
        let sample = if sample_shape.is_none() {
            whole_input_if_no_batch_axis(exec, main, sample)?
        } else {
            sample
        };

        // Inputs besides the first: booleans true, others zeros.
        let extra = |n: usize| -> Result<HashMap<String, Tensor>, ExecError> {
            let mut m = HashMap::new();
            for s in specs.iter().skip(1) {
                let mut shape = vec![n];
                shape.extend(s.dims.iter().skip(1).map(|d| d.unwrap_or(1)));
                let t = if s.dtype == reinit_onnx::DType::Bool {
                    Tensor::ones(shape, DType::U8, &Device::Cpu)?
                } else if s.dtype.is_float() {
                    Tensor::zeros(shape, DType::F32, &Device::Cpu)?
                } else {
                    Tensor::zeros(shape, DType::I64, &Device::Cpu)?
                };
                m.insert(s.name.clone(), t);
            }
            Ok(m)
        };

        // The first input's values.
        let numel: usize = sample.iter().product();
        let tokens = if is_float {
            None
        } else {
            let v = vocab(exec, model, &main.name);
            let t = sample.last().copied().unwrap_or(1);
            let perm = rng.permutation(v);
            let mut ids = Vec::with_capacity(n * numel);
            for _ in 0..n * numel / t.max(1) {
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
            Some((v, perm, ids))
        };

        // Output shape from a one-sample probe run; find out whether the graph
        // takes more than one sample at a time.
        let probe_inputs = |k: usize| -> Result<HashMap<String, Tensor>, ExecError> {
            let mut m = extra(k)?;
            let mut shape = vec![k];
            shape.extend_from_slice(&sample);
            let t = if is_float {
                Tensor::zeros(shape, DType::F32, &Device::Cpu)?
            } else {
                Tensor::zeros(shape, DType::I64, &Device::Cpu)?
            };
            m.insert(main.name.clone(), t);
            Ok(m)
        };
        let out = exec.forward(&probe_inputs(1)?, Mode::Eval)?;
        let out_sample: Vec<usize> = out.first().dims()[1..].to_vec();
        let micro_batch = exec.forward(&probe_inputs(2)?, Mode::Eval).is_err();

        let classes = out_sample.last().copied().unwrap_or(1);
        let classify =
            classes >= 2 && (out_sample.len() == 1 || (!is_float && out_sample.len() == 2));

        let digits = digits_path().filter(|_| {
            is_float
                && classify
                && classes == 10
                && out_sample.len() == 1
                && (sample == [64] || sample == [1, 8, 8])
        });

        let (name, x, targets, loss) = if let Some(path) = digits {
            let (xs, ys) = load_digits(&path)?;
            let order = Rng::new(seed).permutation(xs.len());
            let take = n.min(xs.len());
            let mut v = Vec::with_capacity(take * 64);
            let mut y = Vec::with_capacity(take);
            for &i in order.iter().take(take) {
                v.extend_from_slice(&xs[i]);
                y.push(ys[i]);
            }
            // standardise with the training part's statistics
            let n_train = size.train.min(take);
            let mean: f32 = v[..n_train * 64].iter().sum::<f32>() / (n_train * 64) as f32;
            let var: f32 = v[..n_train * 64]
                .iter()
                .map(|x| (x - mean) * (x - mean))
                .sum::<f32>()
                / (n_train * 64) as f32;
            let sd = var.sqrt().max(1e-6);
            v.iter_mut().for_each(|x| *x = (*x - mean) / sd);
            (
                "digits",
                float_tensor(v, take, &sample)?,
                Tensor::from_vec(y, take, &Device::Cpu)?,
                LossKind::CrossEntropy { classes: 10 },
            )
        } else if let Some((v, perm, ids)) = tokens {
            let t = sample.last().copied().unwrap_or(1);
            let x = Tensor::from_vec(
                ids.clone(),
                {
                    let mut s = vec![n];
                    s.extend_from_slice(&sample);
                    s
                },
                &Device::Cpu,
            )?;
            if !classify {
                return Err(ExecError::Invalid(
                    "token input without a class output".into(),
                ));
            }
            let per_token = out_sample.len() == 2;
            let class_of: Vec<u32> = (0..v).map(|_| rng.below(classes) as u32).collect();
            let mut y = Vec::new();
            for s in ids.chunks(t) {
                let row: Vec<u32> = (0..t)
                    .map(|i| {
                        if classes == v {
                            // next-token prediction on the Markov chain
                            let next = if i + 1 < t {
                                s[i + 1] as usize
                            } else {
                                perm[s[i] as usize]
                            };
                            next as u32
                        } else {
                            class_of[s[i] as usize]
                        }
                    })
                    .collect();
                if per_token {
                    y.extend(row);
                } else {
                    y.push(class_of[s[0] as usize]);
                }
            }
            let y = if per_token {
                Tensor::from_vec(y, (n, t), &Device::Cpu)?
            } else {
                Tensor::from_vec(y, n, &Device::Cpu)?
            };
            ("token-sequences", x, y, LossKind::CrossEntropy { classes })
        } else if classify && sample.len() >= 2 {
            // class-dependent image patterns: a random prototype per class plus noise
            let protos: Vec<Vec<f32>> = (0..classes).map(|_| rng.normals(numel)).collect();
            let mut v = Vec::with_capacity(n * numel);
            let mut y = Vec::with_capacity(n);
            for _ in 0..n {
                let c = rng.below(classes);
                v.extend(protos[c].iter().map(|p| p + rng.normal() as f32));
                y.push(c as u32);
            }
            (
                "image-patterns",
                float_tensor(v, n, &sample)?,
                Tensor::from_vec(y, n, &Device::Cpu)?,
                LossKind::CrossEntropy { classes },
            )
        } else if classify {
            // a fixed random teacher: logits = tanh(x W1 / √d) W2, labels = argmax
            let hidden = 32;
            let w1 = rng.normals(numel * hidden);
            let w2 = rng.normals(hidden * classes);
            let v = rng.normals(n * numel);
            let mut y = Vec::with_capacity(n);
            for row in v.chunks(numel) {
                let h: Vec<f32> = (0..hidden)
                    .map(|j| {
                        let s: f32 = row
                            .iter()
                            .enumerate()
                            .map(|(i, x)| x * w1[i * hidden + j])
                            .sum();
                        (s / (numel as f32).sqrt()).tanh()
                    })
                    .collect();
                let best = (0..classes)
                    .map(|c| {
                        h.iter()
                            .enumerate()
                            .map(|(j, hj)| hj * w2[j * classes + c])
                            .sum::<f32>()
                    })
                    .enumerate()
                    .fold((0, f32::MIN), |b, (c, s)| if s > b.1 { (c, s) } else { b })
                    .0;
                y.push(best as u32);
            }
            (
                "teacher-classes",
                float_tensor(v, n, &sample)?,
                Tensor::from_vec(y, n, &Device::Cpu)?,
                LossKind::CrossEntropy { classes },
            )
        } else {
            // regression onto a teacher: the same graph with resampled weights
            let v = rng.normals(n * numel);
            let x = float_tensor(v, n, &sample)?;
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
            let mut inputs = extra(n)?;
            inputs.insert(main.name.clone(), x.clone());
            let y = if micro_batch {
                run_micro(&teacher, &inputs, n, Mode::Eval)?
            } else {
                teacher.forward(&inputs, Mode::Eval)?.first().clone()
            };
            ("teacher-regression", x, y.detach(), LossKind::Mse)
        };

        let total = x.dim(0)?;
        let n_train = size.train.min(total.saturating_sub(1)).max(1);
        let mut inputs = extra(total)?;
        inputs.insert(main.name.clone(), x);
        let all = Split {
            inputs,
            targets,
            len: total,
        };
        let train_idx: Vec<usize> = (0..n_train).collect();
        let held_idx: Vec<usize> = (n_train..total).collect();
        Ok(Task {
            name: name.to_string(),
            loss,
            train: all.rows(&train_idx, &Device::Cpu)?,
            heldout: all.rows(&held_idx, &Device::Cpu)?,
            micro_batch,
        })
    }
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
/// input as one sample; a leading batch axis is then added by broadcasting ops.
fn whole_input_if_no_batch_axis(
    exec: &Executor,
    main: &crate::executor::InputSpec,
    sample: Vec<usize>,
) -> Result<Vec<usize>, ExecError> {
    let whole: Option<Vec<usize>> = main.dims.iter().copied().collect();
    let Some(whole) = whole.filter(|w| w.len() >= 2 && exec.inputs().len() == 1) else {
        return Ok(sample);
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
    if !runs(&sample)? && runs(&whole)? {
        return Ok(whole);
    }
    Ok(sample)
}
