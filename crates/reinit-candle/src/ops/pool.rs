//! MaxPool, AveragePool (1/2/3-D, padded, overlapping windows, ceil mode,
//! dilation), GlobalAveragePool, GlobalMaxPool.
//!
//! candle's max_pool2d gradient is scaled by 1/k² and its pools have no
//! backward for overlapping windows, so windows are built here from
//! pad/narrow/reshape: one strided view per kernel tap, stacked, then reduced
//! with `max`/`sum`, whose gradients are exact.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Shape, Tensor, WithDType};

use super::{Op, OpArgs, OpResult, Registry, pad_const, subsample};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::MaxPool, max_pool);
    r.insert(Op::AveragePool, average_pool);
    r.insert(Op::GlobalAveragePool, global_average_pool);
    r.insert(Op::GlobalMaxPool, global_max_pool);
    r.insert(Op::LpPool, lp_pool);
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
    if !no_pool_kernel()
        && let Some(y) = max_pool_kernel(x, &w)?
    {
        return Ok(vec![y]);
    }
    let taps = w.taps(x, f64::NEG_INFINITY, f64::NEG_INFINITY)?;
    let y = Tensor::stack(&taps, 0)?.max(0)?;
    Ok(vec![y])
}

/// `REINIT_POOL=taps` keeps the stacked-taps max pool everywhere (for comparisons).
fn no_pool_kernel() -> bool {
    static TAPS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TAPS.get_or_init(|| std::env::var("REINIT_POOL").is_ok_and(|v| v == "taps"))
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

/// A 2-D max pool over `[N, C, H, W]` as a candle [`CustomOp1`] on CPU
/// (f32/f64): the forward takes each window's maximum, the backward routes
/// each output gradient to the first input position holding that maximum
/// (PyTorch's rule). Out-of-range taps (padding, ceil-mode overhang) are
/// skipped, i.e. act as −∞. About 10× less memory traffic than the stacked
/// taps on the tiny ResNet stem; other ranks and devices use the taps.
#[derive(Debug, Clone)]
struct MaxPool2d {
    /// `(output index, input index)` of every window's maximum, recorded by
    /// the forward for the backward (the op runs once per graph node).
    argmax: std::sync::Arc<std::sync::Mutex<Vec<(u32, u32)>>>,
    kernel: [usize; 2],
    strides: [usize; 2],
    dilations: [usize; 2],
    pad_begin: [usize; 2],
    out: [usize; 2],
}

impl MaxPool2d {
    fn from_window(w: &Window) -> Option<MaxPool2d> {
        let two = |v: &[usize]| -> Option<[usize; 2]> { v.try_into().ok() };
        Some(MaxPool2d {
            argmax: Default::default(),
            kernel: two(&w.kernel)?,
            strides: two(&w.strides)?,
            dilations: two(&w.dilations)?,
            pad_begin: [w.pads.first()?.0, w.pads.get(1)?.0],
            out: two(&w.out)?,
        })
    }

    /// Output positions `o` in `[lo, hi)` whose tap at offset `off` lands in
    /// `[0, len)` after removing the begin padding `pad`.
    fn valid(out: usize, len: usize, s: usize, off: usize, pad: usize) -> (usize, usize) {
        let lo = if pad > off {
            (pad - off).div_ceil(s)
        } else {
            0
        };
        let hi = if len + pad > off {
            (len + pad - off).div_ceil(s)
        } else {
            0
        };
        (lo.min(out), hi.min(out).max(lo.min(out)))
    }

    /// Calls `f(output index, input index)` with the first maximum of every
    /// non-empty window (NaN wins, as in candle's `max`).
    fn argmax<T: WithDType>(&self, x: &[T], dims: &[usize], mut f: impl FnMut(usize, usize)) {
        let (nc, h, w) = (dims[0] * dims[1], dims[2], dims[3]);
        let [oh_n, ow_n] = self.out;
        let [sh, sw] = self.strides;
        let [ph, pw] = self.pad_begin;
        let mut best_v = vec![T::zero(); ow_n];
        let mut best_i = vec![usize::MAX; ow_n];
        for plane in 0..nc {
            let xs = &x[plane * h * w..(plane + 1) * h * w];
            for oh in 0..oh_n {
                best_i.fill(usize::MAX);
                for ki in 0..self.kernel[0] {
                    let ih = oh * sh + ki * self.dilations[0];
                    if ih < ph || ih - ph >= h {
                        continue;
                    }
                    let row = &xs[(ih - ph) * w..(ih - ph + 1) * w];
                    for kj in 0..self.kernel[1] {
                        let off = kj * self.dilations[1];
                        let (lo, hi) = Self::valid(ow_n, w, sw, off, pw);
                        for ow in lo..hi {
                            let iw = ow * sw + off - pw;
                            let v = row[iw];
                            let b = best_i[ow];
                            let take = b == usize::MAX
                                || v > best_v[ow]
                                || (v.to_f64().is_nan() && !best_v[ow].to_f64().is_nan());
                            if take {
                                best_v[ow] = v;
                                best_i[ow] = (ih - ph) * w + iw;
                            }
                        }
                    }
                }
                for (ow, &b) in best_i.iter().enumerate() {
                    if b != usize::MAX {
                        f((plane * oh_n + oh) * ow_n + ow, plane * h * w + b);
                    }
                }
            }
        }
    }

    fn forward<T: WithDType>(&self, x: &[T], dims: &[usize]) -> (CpuStorage, Shape) {
        let mut y =
            vec![T::from_f64(f64::NEG_INFINITY); dims[0] * dims[1] * self.out[0] * self.out[1]];
        let mut record = Vec::with_capacity(y.len());
        let fits = x.len() <= u32::MAX as usize;
        self.argmax(x, dims, |o, i| {
            y[o] = x[i];
            if fits {
                record.push((o as u32, i as u32));
            }
        });
        if fits && let Ok(mut a) = self.argmax.lock() {
            *a = record;
        }
        (
            T::to_cpu_storage_owned(y),
            Shape::from((dims[0], dims[1], self.out[0], self.out[1])),
        )
    }

    fn backward<T: WithDType>(&self, x: &Tensor, grad: &Tensor) -> candle_core::Result<Tensor> {
        let g = grad.flatten_all()?.to_vec1::<T>()?;
        let mut dx = vec![T::zero(); x.elem_count()];
        let recorded = self.argmax.lock().ok().filter(|a| !a.is_empty());
        match recorded {
            Some(a) => {
                for &(o, i) in a.iter() {
                    dx[i as usize] += g[o as usize];
                }
            }
            None => {
                let xs = x.flatten_all()?.to_vec1::<T>()?;
                self.argmax(&xs, x.dims(), |o, i| dx[i] += g[o]);
            }
        }
        Tensor::from_vec(dx, x.dims(), x.device())
    }
}

impl CustomOp1 for MaxPool2d {
    fn name(&self) -> &'static str {
        "max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let Some((a, b)) = l.contiguous_offsets() else {
            return Err(candle_core::Error::Msg(
                "max-pool2d: non-contiguous input".into(),
            ));
        };
        match s {
            CpuStorage::F32(v) => Ok(self.forward(&v[a..b], l.dims())),
            CpuStorage::F64(v) => Ok(self.forward(&v[a..b], l.dims())),
            _ => Err(candle_core::Error::Msg(
                "max-pool2d: f32 or f64 input".into(),
            )),
        }
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = grad.to_dtype(x.dtype())?.contiguous()?;
        Ok(Some(match x.dtype() {
            DType::F32 => self.backward::<f32>(x, &grad)?,
            _ => self.backward::<f64>(x, &grad)?,
        }))
    }
}

/// The [`MaxPool2d`] kernel when it applies (CPU, f32/f64, 1-D or 2-D).
fn max_pool_kernel(x: &Tensor, w: &Window) -> Result<Option<Tensor>, OpError> {
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return Ok(None);
    }
    match x.rank() {
        4 => match MaxPool2d::from_window(w) {
            Some(op) => Ok(Some(x.contiguous()?.apply_op1(op)?)),
            None => Ok(None),
        },
        3 => {
            let lift = |v: &[usize], fill: usize| vec![fill, v[0]];
            let w2 = Window {
                kernel: lift(&w.kernel, 1),
                strides: lift(&w.strides, 1),
                dilations: lift(&w.dilations, 1),
                pads: vec![(0, 0), w.pads[0]],
                extra: lift(&w.extra, 0),
                out: lift(&w.out, 1),
            };
            Ok(max_pool_kernel(&x.unsqueeze(2)?, &w2)?
                .map(|y| y.squeeze(2))
                .transpose()?)
        }
        _ => Ok(None),
    }
}
