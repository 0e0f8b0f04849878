//! Conv (1-D, 2-D, 3-D; groups, pads, dilation) and ConvTranspose (1-D, 2-D
//! with equal strides here; 3-D and per-axis strides in [`super::deconv`]).
//!
//! candle 0.11 has only a 2-D convolution with correct gradients (its conv1d
//! kernel gradient is wrong and it has no conv3d), so every Conv runs as conv2d:
//! 1-D on `[N, C, 1, L]`, 3-D as a sum over depth taps of conv2d on
//! `[N·D_out, C, H, W]`. Asymmetric pads become an explicit zero pad.

use candle_core::{DType, Tensor};

use super::depthwise::{conv2d_depthwise, is_depthwise};
use super::im2col::{Conv2dGeometry, conv2d_im2col, im2col_applies};
use super::{Op, OpArgs, OpResult, Registry, subsample};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::Conv, conv);
    r.insert(Op::ConvTranspose, conv_transpose);
}

/// Begin/end padding per spatial axis, resolving `auto_pad`.
fn resolve_pads(
    args: &OpArgs,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> Result<Vec<(usize, usize)>, OpError> {
    let n = kernel.len();
    let auto = args.attr_s("auto_pad").unwrap_or_else(|| "NOTSET".into());
    match auto.as_str() {
        "NOTSET" | "" => {
            let pads = args.attr_ints("pads").unwrap_or_else(|| vec![0; 2 * n]);
            if pads.len() != 2 * n {
                return Err(OpError(format!("pads {pads:?} for {n} spatial axes")));
            }
            Ok((0..n)
                .map(|i| (pads[i].max(0) as usize, pads[i + n].max(0) as usize))
                .collect())
        }
        "VALID" => Ok(vec![(0, 0); n]),
        "SAME_UPPER" | "SAME_LOWER" => Ok((0..n)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                let eff = dilations[i] * (kernel[i] - 1) + 1;
                let total = ((out - 1) * strides[i] + eff).saturating_sub(input[i]);
                let small = total / 2;
                if auto == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect()),
        other => Err(OpError(format!("auto_pad {other} is not supported"))),
    }
}

fn usizes(v: Option<Vec<i64>>, n: usize, default: usize) -> Vec<usize> {
    v.map(|v| v.into_iter().map(|x| x.max(1) as usize).collect())
        .unwrap_or_else(|| vec![default; n])
}

pub(super) fn conv(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let w = args.input(1)?;
    let spatial = w.rank().saturating_sub(2);
    if x.rank() != spatial + 2 || spatial == 0 {
        return Err(OpError(format!(
            "input {:?} and kernel {:?} do not match",
            x.dims(),
            w.dims()
        )));
    }
    let kernel = &w.dims()[2..];
    let strides = usizes(args.attr_ints("strides"), spatial, 1);
    let dilations = usizes(args.attr_ints("dilations"), spatial, 1);
    let groups = args.attr_i("group", 1).max(1) as usize;
    let pads = resolve_pads(args, &x.dims()[2..], kernel, &strides, &dilations)?;
    let y = match spatial {
        1 => conv2d(
            &x.unsqueeze(2)?,
            &w.unsqueeze(2)?,
            [(0, 0), pads[0]],
            [1, strides[0]],
            [1, dilations[0]],
            groups,
        )?
        .squeeze(2)?,
        2 => conv2d(
            x,
            w,
            [pads[0], pads[1]],
            [strides[0], strides[1]],
            [dilations[0], dilations[1]],
            groups,
        )?,
        3 => conv3d(x, w, &pads, &strides, &dilations, groups)?,
        n => return Err(OpError(format!("{n}-D convolution is not supported"))),
    };
    Ok(vec![add_bias(y, args.opt_input(2))?])
}

fn add_bias(y: Tensor, bias: Option<&Tensor>) -> Result<Tensor, OpError> {
    let Some(b) = bias else { return Ok(y) };
    let mut shape = vec![1; y.rank()];
    shape[1] = b.elem_count();
    Ok(y.broadcast_add(&b.reshape(shape)?)?)
}

/// Which 2-D convolution kernel runs on CPU in f32/f64: by default the
/// direct depthwise kernel ([`super::depthwise`]) where every group reads one
/// channel and im2col ([`super::im2col`]) otherwise; `REINIT_CONV=im2col`
/// sends depthwise convs through im2col too and `REINIT_CONV=candle` uses
/// candle's own conv2d (both for comparisons).
#[derive(Clone, Copy, PartialEq, Eq)]
enum ConvKernels {
    Default,
    Im2colOnly,
    Candle,
}

fn conv_kernels() -> ConvKernels {
    static CHOICE: std::sync::OnceLock<ConvKernels> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("REINIT_CONV").as_deref() {
        Ok("candle") => ConvKernels::Candle,
        Ok("im2col") => ConvKernels::Im2colOnly,
        _ => ConvKernels::Default,
    })
}

/// A 2-D convolution with per-axis pads, strides and dilations: the
/// depthwise kernel or im2col + matmul on CPU (see [`ConvKernels`]),
/// elsewhere candle's conv2d (which takes one padding, stride and dilation
/// for both axes).
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    pads: [(usize, usize); 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    groups: usize,
) -> Result<Tensor, OpError> {
    let kernels = conv_kernels();
    if kernels != ConvKernels::Candle && im2col_applies(x, w) {
        let geometry = Conv2dGeometry {
            pads,
            strides,
            dilations,
            groups,
        };
        let (c, o, cg) = (x.dim(1)?, w.dim(0)?, w.dim(1)?);
        if kernels == ConvKernels::Default && is_depthwise(c, o, cg, groups) {
            return Ok(conv2d_depthwise(x, w, geometry)?);
        }
        return Ok(conv2d_im2col(x, w, geometry)?);
    }
    let (kh, kw) = (w.dim(2)?, w.dim(3)?);
    // An axis with a 1-wide kernel ignores its dilation.
    let mut dil = dilations;
    if kh == 1 {
        dil[0] = dil[1];
    }
    if kw == 1 {
        dil[1] = dil[0];
    }
    if dil[0] != dil[1] {
        return Err(OpError(format!("dilations {dilations:?} differ per axis")));
    }
    // candle's conv2d backward assumes the strided windows cover the padded
    // input exactly (it returns a shorter input gradient otherwise), so rows
    // and columns no window reaches are cropped first.
    let spans = [dil[0] * (kh - 1) + 1, dil[0] * (kw - 1) + 1];
    let padded = [
        x.dim(2)? + pads[0].0 + pads[0].1,
        x.dim(3)? + pads[1].0 + pads[1].1,
    ];
    for a in 0..2 {
        if padded[a] < spans[a] {
            return Err(OpError(format!(
                "kernel span {} exceeds padded input {}",
                spans[a], padded[a]
            )));
        }
    }
    let st = strides;
    let leftover = [
        (padded[0] - spans[0]) % st[0],
        (padded[1] - spans[1]) % st[1],
    ];
    let symmetric = pads.iter().all(|&(b, e)| b == e) && pads[0].0 == pads[1].0;
    let (x, padding) = if symmetric && leftover == [0, 0] && st[0] == st[1] {
        (x.clone(), pads[0].0)
    } else {
        let mut x = x.pad_with_zeros(2, pads[0].0, pads[0].1)?;
        x = x.pad_with_zeros(3, pads[1].0, pads[1].1)?;
        if leftover[0] > 0 {
            x = x.narrow(2, 0, padded[0] - leftover[0])?;
        }
        if leftover[1] > 0 {
            x = x.narrow(3, 0, padded[1] - leftover[1])?;
        }
        (x, 0)
    };
    let out_len = |len: usize, span: usize, s: usize| (len + 2 * padding - span) / s + 1;
    let (h, wd) = (x.dim(2)?, x.dim(3)?);
    // An axis with a single output position ignores its stride.
    let mut st = st;
    if out_len(h, spans[0], 1) == 1 {
        st[0] = st[1];
    }
    if out_len(wd, spans[1], 1) == 1 {
        st[1] = st[0];
    }
    if st[0] == st[1] {
        return Ok(x.conv2d(w, padding, st[0], dil[0], groups)?);
    }
    // Unequal strides: stride 1, then keep every s-th row/column.
    let y = x.conv2d(w, padding, 1, dil[0], groups)?;
    let y = subsample(&y, 2, st[0], out_len(h, spans[0], st[0]))?;
    subsample(&y, 3, st[1], out_len(wd, spans[1], st[1]))
}

/// 3-D convolution as a sum over depth taps of 2-D convolutions.
pub(super) fn conv3d(
    x: &Tensor,
    w: &Tensor,
    pads: &[(usize, usize)],
    strides: &[usize],
    dilations: &[usize],
    groups: usize,
) -> Result<Tensor, OpError> {
    let x = x.pad_with_zeros(2, pads[0].0, pads[0].1)?;
    let (n, c, d, h, wd) = x.dims5()?;
    let kd = w.dim(2)?;
    let span = dilations[0] * (kd - 1) + 1;
    if d < span {
        return Err(OpError(format!(
            "depth {d} is smaller than the kernel span {span}"
        )));
    }
    let d_out = (d - span) / strides[0] + 1;
    let mut sum: Option<Tensor> = None;
    for t in 0..kd {
        let start = t * dilations[0];
        let xs = if strides[0] == 1 {
            x.narrow(2, start, d_out)?
        } else {
            let idx: Vec<u32> = (0..d_out)
                .map(|o| (start + o * strides[0]) as u32)
                .collect();
            let idx = Tensor::from_vec(idx, d_out, x.device())?;
            x.index_select(&idx, 2)?
        };
        let xs = xs
            .permute((0, 2, 1, 3, 4))?
            .reshape((n * d_out, c, h, wd))?;
        let wt = w.narrow(2, t, 1)?.squeeze(2)?.contiguous()?;
        let y = conv2d(
            &xs,
            &wt,
            [pads[1], pads[2]],
            [strides[1], strides[2]],
            [dilations[1], dilations[2]],
            groups,
        )?;
        sum = Some(match sum {
            None => y,
            Some(s) => (s + y)?,
        });
    }
    let y = sum.ok_or_else(|| OpError("empty kernel".into()))?;
    let (_, o, ho, wo) = y.dims4()?;
    Ok(y.reshape((n, d_out, o, ho, wo))?
        .permute((0, 2, 1, 3, 4))?
        .contiguous()?)
}

fn conv_transpose(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let w = args.input(1)?;
    let spatial = w.rank().saturating_sub(2);
    let (x4, w4) = match spatial {
        1 => (x.unsqueeze(2)?, w.unsqueeze(2)?),
        2 => (x.clone(), w.clone()),
        _ => return super::deconv::conv_transpose_nd(args),
    };
    let lift = |v: Vec<usize>, fill: usize| if spatial == 1 { vec![fill, v[0]] } else { v };
    let kernel = w4.dims()[2..].to_vec();
    let input = x4.dims()[2..].to_vec();
    let strides = lift(usizes(args.attr_ints("strides"), spatial, 1), 1);
    let dilations = lift(usizes(args.attr_ints("dilations"), spatial, 1), 1);
    let out_pad: Vec<usize> = lift(
        args.attr_ints("output_padding")
            .map(|v| v.into_iter().map(|x| x.max(0) as usize).collect())
            .unwrap_or_else(|| vec![0; spatial]),
        0,
    );
    let groups = args.attr_i("group", 1).max(1) as usize;
    let full: Vec<usize> = (0..2)
        .map(|i| (input[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1)
        .collect();
    // (begin padding, output length) per axis
    let crop: Vec<(usize, usize)> = match args.attr_ints("output_shape") {
        Some(shape) => {
            let shape = lift(shape.into_iter().map(|x| x.max(0) as usize).collect(), 1);
            let upper = args.attr_s("auto_pad").as_deref() == Some("SAME_UPPER");
            (0..2)
                .map(|i| {
                    let total = (full[i] + out_pad[i]).saturating_sub(shape[i]);
                    let begin = if upper { total / 2 } else { total - total / 2 };
                    (begin, shape[i])
                })
                .collect()
        }
        None => {
            let pads: Vec<(usize, usize)> = match args.attr_s("auto_pad").as_deref() {
                Some("SAME_UPPER") | Some("SAME_LOWER") => {
                    let upper = args.attr_s("auto_pad").as_deref() == Some("SAME_UPPER");
                    (0..2)
                        .map(|i| {
                            let total =
                                (full[i] + out_pad[i]).saturating_sub(input[i] * strides[i]);
                            if upper {
                                (total / 2, total - total / 2)
                            } else {
                                (total - total / 2, total / 2)
                            }
                        })
                        .collect()
                }
                _ => {
                    let p = args
                        .attr_ints("pads")
                        .unwrap_or_else(|| vec![0; 2 * spatial]);
                    let p: Vec<usize> = p.into_iter().map(|x| x.max(0) as usize).collect();
                    if spatial == 1 {
                        vec![(0, 0), (p[0], p[1])]
                    } else {
                        vec![(p[0], p[2]), (p[1], p[3])]
                    }
                }
            };
            (0..2)
                .map(|i| {
                    (
                        pads[i].0,
                        (full[i] + out_pad[i]).saturating_sub(pads[i].0 + pads[i].1),
                    )
                })
                .collect()
        }
    };
    let mut st = strides.clone();
    let mut dil = dilations.clone();
    if input[0] == 1 && kernel[0] == 1 {
        st[0] = st[1];
        dil[0] = dil[1];
    }
    if st[0] != st[1] || dil[0] != dil[1] {
        return super::deconv::conv_transpose_nd(args);
    }
    let c_in = x4.dim(1)?;
    let y = if groups == 1 {
        x4.conv_transpose2d(&w4, 0, 0, st[0], dil[0])?
    } else {
        let cg = c_in / groups;
        let parts = (0..groups)
            .map(|g| {
                let xg = x4.narrow(1, g * cg, cg)?;
                let wg = w4.narrow(0, g * cg, cg)?;
                xg.conv_transpose2d(&wg, 0, 0, st[0], dil[0])
            })
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::cat(&parts, 1)?
    };
    let mut y = y;
    for (i, &(begin, len)) in crop.iter().enumerate() {
        let dim = 2 + i;
        let have = y.dim(dim)?;
        if begin + len > have {
            y = y.pad_with_zeros(dim, 0, begin + len - have)?;
        }
        y = y.narrow(dim, begin, len)?;
    }
    if spatial == 1 {
        y = y.squeeze(2)?;
    }
    let y = add_bias(y.contiguous()?, args.opt_input(2))?;
    debug_assert!(y.dtype() != DType::U8);
    Ok(vec![y])
}
