//! BatchNormalization, LayerNormalization, GroupNormalization,
//! InstanceNormalization, LRN — composed from mean/sub/sqrt so the gradients are
//! candle's elementwise ones (its fused layer_norm passes no gradient).

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use super::host::with_host;

use super::{Op, OpArgs, OpResult, Registry, axis};
use crate::error::OpError;
use crate::executor::Mode;

pub fn register(r: &mut Registry) {
    r.insert(Op::BatchNormalization, batch_norm);
    r.insert(Op::LayerNormalization, layer_norm);
    r.insert(Op::GroupNormalization, group_norm);
    r.insert(Op::InstanceNormalization, instance_norm);
    r.insert(Op::LRN, lrn);
}

/// Per-channel view `[1, C, 1, …]` of a 1-D tensor for an input of `rank`.
fn channel(t: &Tensor, rank: usize) -> Result<Tensor, OpError> {
    let mut shape = vec![1; rank];
    shape[1] = t.elem_count();
    Ok(t.reshape(shape)?)
}

/// (x − mean) / sqrt(var + eps) over `dims`, with the biased variance.
fn normalize(x: &Tensor, dims: &[usize], eps: f64) -> Result<(Tensor, Tensor, Tensor), OpError> {
    let mean = x.mean_keepdim(dims)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(dims)?;
    let inv_std = var.affine(1.0, eps)?.sqrt()?.recip()?;
    Ok((centered.broadcast_mul(&inv_std)?, mean, var))
}

fn batch_norm(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let scale = channel(args.input(1)?, x.rank())?;
    let bias = channel(args.input(2)?, x.rank())?;
    let running_mean = args.input(3)?;
    let running_var = args.input(4)?;
    let eps = args.attr_f("epsilon", 1e-5) as f64;
    let momentum = args.attr_f("momentum", 0.9) as f64;
    let y = match args.mode {
        Mode::Eval => {
            let mean = channel(running_mean, x.rank())?;
            let inv_std = channel(&running_var.affine(1.0, eps)?.sqrt()?.recip()?, x.rank())?;
            x.broadcast_sub(&mean)?.broadcast_mul(&inv_std)?
        }
        Mode::Train | Mode::Probe => {
            let dims: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
            let fused = batch_norm_train_fused(x, args.input(1)?, args.input(2)?, eps)?;
            let (y, mean, var, affine) = match fused {
                Some((y, mean, var)) => (y, mean, var, false),
                None => {
                    let (y, mean, var) = normalize(x, &dims, eps)?;
                    (y, mean, var, true)
                }
            };
            if args.mode == Mode::Train || args.n_outputs() > 1 {
                let n = x.elem_count() / x.dim(1)?;
                let unbiased = (n as f64 / (n.max(2) - 1) as f64).max(1.0);
                let mean = mean.detach().flatten_all()?;
                let var = var.detach().flatten_all()?.affine(unbiased, 0.0)?;
                let new_mean =
                    (running_mean.affine(momentum, 0.0)? + mean.affine(1.0 - momentum, 0.0)?)?;
                let new_var =
                    (running_var.affine(momentum, 0.0)? + var.affine(1.0 - momentum, 0.0)?)?;
                if args.mode == Mode::Train {
                    args.update_state(3, new_mean.clone());
                    args.update_state(4, new_var.clone());
                }
                let y = if affine {
                    y.broadcast_mul(&scale)?.broadcast_add(&bias)?
                } else {
                    y
                };
                let mut out = vec![y, new_mean, new_var];
                out.truncate(args.n_outputs().max(1));
                return Ok(out);
            }
            if !affine {
                return Ok(vec![y]);
            }
            y
        }
    };
    Ok(vec![y.broadcast_mul(&scale)?.broadcast_add(&bias)?])
}

fn layer_norm(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let a = axis(args.attr_i("axis", -1), x.rank())?;
    let eps = args.attr_f("epsilon", 1e-5) as f64;
    let dims: Vec<usize> = (a..x.rank()).collect();
    let (y, mean, var) = normalize(x, &dims, eps)?;
    let mut y = y.broadcast_mul(args.input(1)?)?;
    if let Some(b) = args.opt_input(2) {
        y = y.broadcast_add(b)?;
    }
    let mut out = vec![y];
    if args.n_outputs() > 1 {
        out.push(mean);
        out.push(var.affine(1.0, eps)?.sqrt()?.recip()?);
        out.truncate(args.n_outputs());
    }
    Ok(out)
}

fn group_norm(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let groups = args.attr_i("num_groups", 1).max(1) as usize;
    let eps = args.attr_f("epsilon", 1e-5) as f64;
    let dims = x.dims().to_vec();
    let (n, c) = (dims[0], dims[1]);
    if c % groups != 0 {
        return Err(OpError(format!("{c} channels in {groups} groups")));
    }
    let grouped = x.reshape((n, groups, x.elem_count() / (n * groups)))?;
    let (y, _, _) = normalize(&grouped, &[2], eps)?;
    let (scale, bias) = (args.input(1)?, args.input(2)?);
    let y = if scale.elem_count() == groups && groups != c {
        // opset 18: one scale and bias per group
        let s = scale.reshape((1, groups, 1))?;
        let b = bias.reshape((1, groups, 1))?;
        y.broadcast_mul(&s)?.broadcast_add(&b)?.reshape(dims)?
    } else {
        let y = y.reshape(dims.as_slice())?;
        y.broadcast_mul(&channel(scale, dims.len())?)?
            .broadcast_add(&channel(bias, dims.len())?)?
    };
    Ok(vec![y])
}

fn instance_norm(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let eps = args.attr_f("epsilon", 1e-5) as f64;
    let dims: Vec<usize> = (2..x.rank()).collect();
    let (y, _, _) = normalize(x, &dims, eps)?;
    let y = y
        .broadcast_mul(&channel(args.input(1)?, x.rank())?)?
        .broadcast_add(&channel(args.input(2)?, x.rank())?)?;
    Ok(vec![y])
}

/// `Σ f(v)` over `v` in f64 with four independent accumulators (a single
/// running sum is one long dependency chain: 4× slower on these planes).
fn sum_f64<T: WithDType>(v: &[T], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; 4];
    let mut chunks = v.chunks_exact(4);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += f(x.to_f64());
        }
    }
    let tail: f64 = chunks.remainder().iter().map(|x| f(x.to_f64())).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Batch statistics per channel of `x` viewed as `[N, C, S]`: (mean, biased
/// variance), accumulated in f64, channels in parallel (each channel's sums
/// in a fixed order, so any thread count gives the same bits).
fn channel_stats<T: WithDType>(x: &[T], n: usize, c: usize, s: usize) -> Vec<(f64, f64)> {
    let m = (n * s).max(1) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let planes = (0..n).map(|i| &x[(i * c + ch) * s..][..s]);
            let mean = planes.clone().map(|p| sum_f64(p, |v| v)).sum::<f64>() / m;
            let var = planes
                .map(|p| sum_f64(p, |v| (v - mean) * (v - mean)))
                .sum::<f64>()
                / m;
            (mean, var)
        })
        .collect()
}

/// Training-mode batch normalisation `γ·(x − μ_B)/√(σ²_B + ε) + β` over all
/// axes but 1, fused as a candle [`CustomOp3`] on CPU (f32/f64) with the
/// closed-form backward, planes in parallel. candle's reductions over axes
/// (0, 2, 3) and the gradients of the `[1, C, 1, 1]` broadcasts walk strided
/// indices; on the tiny ResNet they were ~60% of a training step.
///
/// The forward's batch statistics are kept in `stats` (shared with the
/// caller, who reports them as the running-statistics update, and read
/// again by the backward), so `x` is reduced once per step, not three times.
#[derive(Debug, Clone)]
struct BatchNormTrain {
    eps: f64,
    stats: Arc<OnceLock<Vec<(f64, f64)>>>,
}

fn ncs(dims: &[usize]) -> (usize, usize, usize) {
    let (n, c) = (dims[0], dims.get(1).copied().unwrap_or(1));
    (n, c, dims.iter().skip(2).product())
}

impl BatchNormTrain {
    fn forward<T: WithDType>(&self, x: &[T], dims: &[usize], g: &[T], b: &[T]) -> Vec<T> {
        let (n, c, s) = ncs(dims);
        let stats = self
            .stats
            .get_or_init(|| channel_stats(x, n, c, s))
            .as_slice();
        let mut y = vec![T::zero(); x.len()];
        if s == 0 {
            return y;
        }
        y.par_chunks_mut(s)
            .zip(x.par_chunks(s))
            .enumerate()
            .for_each(|(plane, (yp, xp))| {
                let ch = plane % c;
                let (mean, var) = stats[ch];
                let k = g[ch].to_f64() / (var + self.eps).sqrt();
                let off = b[ch].to_f64() - mean * k;
                for (d, v) in yp.iter_mut().zip(xp) {
                    *d = T::from_f64(v.to_f64() * k + off);
                }
            });
        y
    }

    fn backward<T: WithDType>(
        &self,
        x: &Tensor,
        g: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let dims = x.dims();
        let (n, c, s) = ncs(dims);
        let dev = x.device();
        let (dx, dg, db) = with_host::<T, _>(x, |xs| {
            with_host::<T, _>(g, |gs| {
                with_host::<T, _>(dy, |dys| {
                    let computed;
                    let stats = match self.stats.get() {
                        Some(st) => st.as_slice(),
                        None => {
                            computed = channel_stats(xs, n, c, s);
                            computed.as_slice()
                        }
                    };
                    let m = (n * s).max(1) as f64;
                    // per channel: Σ dy and Σ dy·x̂
                    let sums: Vec<(f64, f64)> = (0..c)
                        .into_par_iter()
                        .map(|ch| {
                            let (mean, var) = stats[ch];
                            let istd = 1.0 / (var + self.eps).sqrt();
                            let (mut sum_dy, mut sum_dy_xc) = (0.0f64, 0.0f64);
                            for i in 0..n {
                                let at = (i * c + ch) * s;
                                let (dp, xp) = (&dys[at..at + s], &xs[at..at + s]);
                                sum_dy += sum_f64(dp, |d| d);
                                let mut acc = [0.0f64; 4];
                                for (j, (d, v)) in dp.iter().zip(xp).enumerate() {
                                    acc[j % 4] += d.to_f64() * (v.to_f64() - mean);
                                }
                                sum_dy_xc += (acc[0] + acc[1]) + (acc[2] + acc[3]);
                            }
                            (sum_dy, sum_dy_xc * istd)
                        })
                        .collect();
                    let mut dx = vec![T::zero(); xs.len()];
                    if s > 0 {
                        dx.par_chunks_mut(s).enumerate().for_each(|(plane, dxp)| {
                            let ch = plane % c;
                            let (mean, var) = stats[ch];
                            let (sum_dy, sum_dy_xhat) = sums[ch];
                            let istd = 1.0 / (var + self.eps).sqrt();
                            let k = gs[ch].to_f64() * istd / m;
                            // dx = k·(m·dy − Σdy − x̂·Σdy·x̂), x̂ = (x − μ)·istd
                            let a = k * m;
                            let bias = -k * sum_dy + k * sum_dy_xhat * istd * mean;
                            let slope = -k * sum_dy_xhat * istd;
                            let at = plane * s;
                            for ((o, d), v) in
                                dxp.iter_mut().zip(&dys[at..at + s]).zip(&xs[at..at + s])
                            {
                                *o = T::from_f64(a * d.to_f64() + slope * v.to_f64() + bias);
                            }
                        });
                    }
                    let dg: Vec<T> = sums.iter().map(|s| T::from_f64(s.1)).collect();
                    let db: Vec<T> = sums.iter().map(|s| T::from_f64(s.0)).collect();
                    Ok((dx, dg, db))
                })
            })
        })?;
        Ok((
            Tensor::from_vec(dx, dims, dev)?,
            Tensor::from_vec(dg, g.dims(), dev)?,
            Tensor::from_vec(db, g.dims(), dev)?,
        ))
    }
}

fn contiguous_slice<'a, T: WithDType>(
    s: &'a CpuStorage,
    l: &Layout,
) -> candle_core::Result<&'a [T]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("batch-norm: non-contiguous operand".into()))?;
    Ok(&s.as_slice::<T>()?[a..b])
}

impl CustomOp3 for BatchNormTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let shape = l1.shape().clone();
        let out = match s1 {
            CpuStorage::F32(_) => f32::to_cpu_storage_owned(self.forward(
                contiguous_slice::<f32>(s1, l1)?,
                l1.dims(),
                contiguous_slice::<f32>(s2, l2)?,
                contiguous_slice::<f32>(s3, l3)?,
            )),
            CpuStorage::F64(_) => f64::to_cpu_storage_owned(self.forward(
                contiguous_slice::<f64>(s1, l1)?,
                l1.dims(),
                contiguous_slice::<f64>(s2, l2)?,
                contiguous_slice::<f64>(s3, l3)?,
            )),
            _ => return Err(candle_core::Error::Msg("batch-norm: f32 or f64".into())),
        };
        Ok((out, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(x.dtype())?;
        let (dx, dg, db) = match x.dtype() {
            DType::F32 => self.backward::<f32>(x, g, &grad)?,
            _ => self.backward::<f64>(x, g, &grad)?,
        };
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

/// Fused training-mode BN when it applies: CPU, f32/f64, one dtype, rank ≥ 2.
/// Returns `(y, batch mean [C], biased batch variance [C])`, the statistics
/// detached.
fn batch_norm_train_fused(
    x: &Tensor,
    scale: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<(Tensor, Tensor, Tensor)>, OpError> {
    let ok = x.device().is_cpu()
        && x.rank() >= 2
        && matches!(x.dtype(), DType::F32 | DType::F64)
        && scale.dtype() == x.dtype()
        && bias.dtype() == x.dtype()
        && scale.elem_count() == x.dim(1)?
        && bias.elem_count() == x.dim(1)?
        && std::env::var_os("REINIT_BN").is_none_or(|v| v != "composed");
    if !ok {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let (g, b) = (
        scale.flatten_all()?.contiguous()?,
        bias.flatten_all()?.contiguous()?,
    );
    let stats = Arc::new(OnceLock::new());
    let y = x.apply_op3(
        &g,
        &b,
        BatchNormTrain {
            eps,
            stats: stats.clone(),
        },
    )?;
    let stats = stats
        .get()
        .ok_or_else(|| OpError("batch-norm: the fused kernel recorded no statistics".into()))?;
    let column = |pick: fn(&(f64, f64)) -> f64| -> Result<Tensor, OpError> {
        let v: Vec<f64> = stats.iter().map(pick).collect();
        Ok(Tensor::from_vec(v, stats.len(), x.device())?.to_dtype(x.dtype())?)
    };
    let (mean, var) = (column(|s| s.0)?, column(|s| s.1)?);
    Ok(Some((y, mean, var)))
}

/// Local response normalisation across channels:
/// `y = x / (bias + α/size · Σ_{window} x²)^β`, the window
/// `[c − ⌊(size−1)/2⌋, c + ⌈(size−1)/2⌉]` clipped to the channels.
fn lrn(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let size = args.attr_i("size", 0);
    if size < 1 {
        return Err(OpError(format!("LRN size {size} must be ≥ 1")));
    }
    let size = size as usize;
    let alpha = args.attr_f("alpha", 1e-4) as f64;
    let beta = args.attr_f("beta", 0.75) as f64;
    let bias = args.attr_f("bias", 1.0) as f64;
    let channels = x.dim(1)?;
    let before = (size - 1) / 2;
    let padded = x.sqr()?.pad_with_zeros(1, before, size - 1 - before)?;
    let mut window = padded.narrow(1, 0, channels)?;
    for i in 1..size {
        window = (window + padded.narrow(1, i, channels)?)?;
    }
    let denom = window.affine(alpha / size as f64, bias)?.powf(beta)?;
    Ok(vec![(x / denom)?])
}
