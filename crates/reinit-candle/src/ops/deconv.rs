//! ConvTranspose in general form (1-D to 3-D, per-axis strides, dilations and
//! output padding, groups): the input is spread by the strides (zeros between
//! samples) and convolved with the flipped, channel-swapped kernel through
//! [`super::conv`]'s convolutions, then cropped to the requested output. The
//! plain candle `conv_transpose2d` path in `conv.rs` handles the equal-stride
//! 1-D/2-D case and hands the rest here.

use candle_core::Tensor;

use super::conv::{conv2d, conv3d};
use super::{OpArgs, OpResult};
use crate::error::OpError;

fn per_axis(v: Option<Vec<i64>>, n: usize, default: usize, min: i64) -> Vec<usize> {
    v.map(|v| v.into_iter().map(|x| x.max(min) as usize).collect())
        .unwrap_or_else(|| vec![default; n])
}

/// `[…, L, …]` → `[…, (L−1)·s + 1, …]` with `s − 1` zeros between samples.
fn spread(x: &Tensor, dim: usize, s: usize) -> Result<Tensor, OpError> {
    if s == 1 {
        return Ok(x.clone());
    }
    let len = x.dim(dim)?;
    let mut shape = x.dims().to_vec();
    shape[dim] = len * s;
    let y = x
        .unsqueeze(dim + 1)?
        .pad_with_zeros(dim + 1, 0, s - 1)?
        .reshape(shape)?;
    Ok(y.narrow(dim, 0, (len - 1) * s + 1)?)
}

/// Reverses `dim` (gradient through index_select).
fn flip(t: &Tensor, dim: usize) -> Result<Tensor, OpError> {
    let n = t.dim(dim)?;
    let idx: Vec<u32> = (0..n as u32).rev().collect();
    Ok(t.index_select(&Tensor::from_vec(idx, n, t.device())?, dim)?)
}

/// (begin, length) of the output window per axis inside the full result.
fn crop(args: &OpArgs, full: &[usize], input: &[usize], strides: &[usize]) -> Vec<(usize, usize)> {
    let n = full.len();
    let out_pad = per_axis(args.attr_ints("output_padding"), n, 0, 0);
    let auto = args.attr_s("auto_pad").unwrap_or_default();
    let upper = auto == "SAME_UPPER";
    if let Some(shape) = args.attr_ints("output_shape") {
        let shape: Vec<usize> = shape
            .iter()
            .rev()
            .take(n)
            .rev()
            .map(|&x| x.max(0) as usize)
            .collect();
        return (0..n)
            .map(|i| {
                let total = (full[i] + out_pad[i]).saturating_sub(shape[i]);
                let begin = if upper { total / 2 } else { total - total / 2 };
                (begin, shape[i])
            })
            .collect();
    }
    (0..n)
        .map(|i| {
            let (b, e) = if auto == "SAME_UPPER" || auto == "SAME_LOWER" {
                let total = (full[i] + out_pad[i]).saturating_sub(input[i] * strides[i]);
                if upper {
                    (total / 2, total - total / 2)
                } else {
                    (total - total / 2, total / 2)
                }
            } else {
                let p = per_axis(args.attr_ints("pads"), 2 * n, 0, 0);
                (p[i], p[i + n])
            };
            (b, (full[i] + out_pad[i]).saturating_sub(b + e))
        })
        .collect()
}

pub fn conv_transpose_nd(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let w = args.input(1)?;
    let n = w.rank().saturating_sub(2);
    if !(1..=3).contains(&n) || x.rank() != n + 2 {
        return Err(OpError(format!(
            "ConvTranspose of input {:?} with kernel {:?} is not supported (1-D to 3-D are)",
            x.dims(),
            w.dims()
        )));
    }
    let groups = args.attr_i("group", 1).max(1) as usize;
    let strides = per_axis(args.attr_ints("strides"), n, 1, 1);
    let dilations = per_axis(args.attr_ints("dilations"), n, 1, 1);
    let kernel = w.dims()[2..].to_vec();
    let input = x.dims()[2..].to_vec();
    let full: Vec<usize> = (0..n)
        .map(|i| (input[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1)
        .collect();
    let window = crop(args, &full, &input, &strides);

    let mut spread_x = x.clone();
    for (i, &s) in strides.iter().enumerate() {
        spread_x = spread(&spread_x, 2 + i, s)?;
    }
    // [C_in, C_out/g, k…] → flipped [C_out, C_in/g, k…]
    let (c_in, c_out_g) = (w.dim(0)?, w.dim(1)?);
    let mut wf = w.clone();
    for i in 0..n {
        wf = flip(&wf, 2 + i)?;
    }
    let mut grouped = vec![groups, c_in / groups, c_out_g];
    grouped.extend_from_slice(&kernel);
    let mut swapped = vec![groups * c_out_g, c_in / groups];
    swapped.extend_from_slice(&kernel);
    let wf = wf
        .reshape(grouped)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(swapped)?;
    let pads: Vec<(usize, usize)> = (0..n)
        .map(|i| {
            let p = dilations[i] * (kernel[i] - 1);
            (p, p)
        })
        .collect();
    let ones = vec![1; n];
    let mut y = match n {
        1 => conv2d(
            &spread_x.unsqueeze(2)?,
            &wf.unsqueeze(2)?,
            [(0, 0), pads[0]],
            [1, 1],
            [1, dilations[0]],
            groups,
        )?
        .squeeze(2)?,
        2 => conv2d(
            &spread_x,
            &wf,
            [pads[0], pads[1]],
            [1, 1],
            [dilations[0], dilations[1]],
            groups,
        )?,
        _ => conv3d(&spread_x, &wf, &pads, &ones, &dilations, groups)?,
    };
    for (i, &(begin, len)) in window.iter().enumerate() {
        let dim = 2 + i;
        let have = y.dim(dim)?;
        if begin + len > have {
            y = y.pad_with_zeros(dim, 0, begin + len - have)?;
        }
        y = y.narrow(dim, begin, len)?;
    }
    let mut y = y.contiguous()?;
    if let Some(b) = args.opt_input(2) {
        let mut shape = vec![1; y.rank()];
        shape[1] = b.elem_count();
        y = y.broadcast_add(&b.reshape(shape)?)?;
    }
    Ok(vec![y])
}
