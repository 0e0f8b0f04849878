//! MaxPool, AveragePool (1/2/3-D, padded, overlapping windows, ceil mode,
//! dilation), GlobalAveragePool, GlobalMaxPool.
//!
//! candle's max_pool2d gradient is scaled by 1/k² and its pools have no
//! backward for overlapping windows, so windows are built here from
//! pad/narrow/reshape: one strided view per kernel tap, stacked, then reduced
//! with `max`/`sum`, whose gradients are exact.

use candle_core::Tensor;

use super::{OpArgs, OpResult, Registry, pad_const, subsample};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert("MaxPool", max_pool);
    r.insert("AveragePool", average_pool);
    r.insert("GlobalAveragePool", global_average_pool);
    r.insert("GlobalMaxPool", global_max_pool);
    r.insert("LpPool", lp_pool);
}

struct Window {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    /// explicit (begin, end) padding per spatial axis
    pads: Vec<(usize, usize)>,
    /// extra end padding needed by ceil mode, per axis
    extra: Vec<usize>,
    out: Vec<usize>,
}

impl Window {
    fn new(args: &OpArgs, input: &[usize]) -> Result<Window, OpError> {
        let kernel: Vec<usize> = args
            .attr_ints("kernel_shape")
            .ok_or_else(|| OpError("kernel_shape is required".into()))?
            .into_iter()
            .map(|k| k.max(1) as usize)
            .collect();
        let n = kernel.len();
        if n != input.len() {
            return Err(OpError(format!("{n}-D kernel on {}-D input", input.len())));
        }
        let get = |name: &str, default: usize| -> Vec<usize> {
            args.attr_ints(name)
                .map(|v| v.into_iter().map(|x| x.max(0) as usize).collect())
                .unwrap_or_else(|| vec![default; n])
        };
        let strides = get("strides", 1);
        let dilations = get("dilations", 1);
        let ceil = args.attr_i("ceil_mode", 0) != 0;
        let auto = args.attr_s("auto_pad").unwrap_or_else(|| "NOTSET".into());
        let pads: Vec<(usize, usize)> = match auto.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => (0..n)
                .map(|i| {
                    let out = input[i].div_ceil(strides[i]);
                    let span = dilations[i] * (kernel[i] - 1) + 1;
                    let total = ((out - 1) * strides[i] + span).saturating_sub(input[i]);
                    if auto == "SAME_UPPER" {
                        (total / 2, total - total / 2)
                    } else {
                        (total - total / 2, total / 2)
                    }
                })
                .collect(),
            "VALID" => vec![(0, 0); n],
            _ => {
                let p = args
                    .attr_ints("pads")
                    .map(|v| v.into_iter().map(|x| x.max(0) as usize).collect())
                    .unwrap_or_else(|| vec![0; 2 * n]);
                if p.len() != 2 * n {
                    return Err(OpError(format!("pads {p:?} for {n} spatial axes")));
                }
                (0..n).map(|i| (p[i], p[i + n])).collect()
            }
        };
        let mut out = Vec::with_capacity(n);
        let mut extra = Vec::with_capacity(n);
        for i in 0..n {
            let padded = input[i] + pads[i].0 + pads[i].1;
            let span = dilations[i] * (kernel[i] - 1) + 1;
            if padded < span {
                return Err(OpError(format!(
                    "window {span} larger than padded input {padded}"
                )));
            }
            let room = padded - span;
            let mut o = if ceil {
                room.div_ceil(strides[i])
            } else {
                room / strides[i]
            } + 1;
            // the last window must start inside the input or the left padding
            if ceil && (o - 1) * strides[i] >= input[i] + pads[i].0 {
                o -= 1;
            }
            let need = (o - 1) * strides[i] + span;
            extra.push(need.saturating_sub(padded));
            out.push(o);
        }
        Ok(Window {
            kernel,
            strides,
            dilations,
            pads,
            extra,
            out,
        })
    }

    /// One tensor `[N, C, out…]` per kernel tap.
    fn taps(&self, x: &Tensor, pad_value: f64, extra_value: f64) -> Result<Vec<Tensor>, OpError> {
        let mut x = x.clone();
        for i in 0..self.kernel.len() {
            let d = 2 + i;
            x = pad_const(&x, d, self.pads[i].0, self.pads[i].1, pad_value)?;
            x = pad_const(&x, d, 0, self.extra[i], extra_value)?;
        }
        let mut taps = vec![x];
        for i in 0..self.kernel.len() {
            let d = 2 + i;
            let mut next = Vec::with_capacity(taps.len() * self.kernel[i]);
            for t in &taps {
                for k in 0..self.kernel[i] {
                    let start = k * self.dilations[i];
                    let len = t.dim(d)? - start;
                    let view = t.narrow(d, start, len)?;
                    next.push(subsample(&view, d, self.strides[i], self.out[i])?);
                }
            }
            taps = next;
        }
        Ok(taps)
    }
}

fn max_pool(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    if args.wants_output(1) {
        return Err(OpError("MaxPool Indices output is not supported".into()));
    }
    let w = Window::new(args, &x.dims()[2..])?;
    let taps = w.taps(x, f64::NEG_INFINITY, f64::NEG_INFINITY)?;
    let y = Tensor::stack(&taps, 0)?.max(0)?;
    Ok(vec![y])
}

fn average_pool(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let w = Window::new(args, &x.dims()[2..])?;
    let sum = Tensor::stack(&w.taps(x, 0.0, 0.0)?, 0)?.sum(0)?;
    let include_pad = args.attr_i("count_include_pad", 0) != 0;
    // Divisor per output position: how many counted cells the window covers.
    let mut ones_shape = vec![1usize, 1];
    ones_shape.extend_from_slice(&x.dims()[2..]);
    let ones = Tensor::ones(ones_shape.as_slice(), x.dtype(), x.device())?;
    let counted = if include_pad { 1.0 } else { 0.0 };
    let count = Tensor::stack(&w.taps(&ones, counted, 0.0)?, 0)?.sum(0)?;
    Ok(vec![sum.broadcast_div(&count)?])
}

fn lp_pool(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let p = args.attr_i("p", 2) as f64;
    let w = Window::new(args, &x.dims()[2..])?;
    let taps: Vec<Tensor> = w
        .taps(x, 0.0, 0.0)?
        .into_iter()
        .map(|t| if p == 2.0 { t.sqr() } else { t.abs()?.powf(p) })
        .collect::<Result<_, _>>()?;
    let s = Tensor::stack(&taps, 0)?.sum(0)?;
    Ok(vec![if p == 2.0 {
        s.sqrt()?
    } else {
        s.powf(1.0 / p)?
    }])
}

fn global_average_pool(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let dims: Vec<usize> = (2..x.rank()).collect();
    Ok(vec![x.mean_keepdim(dims)?])
}

fn global_max_pool(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let (n, c) = (x.dim(0)?, x.dim(1)?);
    let y = x
        .reshape((n, c, x.elem_count() / (n * c)))?
        .max_keepdim(2)?;
    let mut shape = vec![n, c];
    shape.resize(x.rank(), 1);
    Ok(vec![y.reshape(shape)?])
}
