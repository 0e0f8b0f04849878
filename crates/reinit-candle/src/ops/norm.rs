//! BatchNormalization, LayerNormalization, GroupNormalization,
//! InstanceNormalization — composed from mean/sub/sqrt so the gradients are
//! candle's elementwise ones (its fused layer_norm passes no gradient).

use candle_core::Tensor;

use super::{OpArgs, OpResult, Registry, axis};
use crate::error::OpError;
use crate::executor::Mode;

pub fn register(r: &mut Registry) {
    r.insert("BatchNormalization", batch_norm);
    r.insert("LayerNormalization", layer_norm);
    r.insert("GroupNormalization", group_norm);
    r.insert("InstanceNormalization", instance_norm);
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
            let (y, mean, var) = normalize(x, &dims, eps)?;
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
                let y = y.broadcast_mul(&scale)?.broadcast_add(&bias)?;
                let mut out = vec![y, new_mean, new_var];
                out.truncate(args.n_outputs().max(1));
                return Ok(out);
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
