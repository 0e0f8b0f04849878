//! Shape and data-movement ops, plus the shape-computation ops exporters emit
//! (Shape, Gather on shapes, Concat, Range, ConstantOfShape, Cast …). Integer
//! values are i64 tensors on the CPU, so these chains evaluate eagerly.

use candle_core::{DType, Device, Tensor};
use rand_chacha::rand_core::Rng;

use super::{
    Op, OpArgs, OpResult, Registry, axis, broadcast_shape, int_vec, ints_tensor, is_float,
    pad_const, tensor_from_proto,
};
use crate::error::OpError;
use crate::executor::Mode;

pub fn register(r: &mut Registry) {
    r.insert(Op::Shape, shape);
    r.insert(Op::Size, size);
    r.insert(Op::Reshape, reshape);
    r.insert(Op::Flatten, flatten);
    r.insert(Op::Transpose, transpose);
    r.insert(Op::Concat, concat);
    r.insert(Op::Split, split);
    r.insert(Op::Slice, slice);
    r.insert(Op::Gather, gather);
    r.insert(Op::Unsqueeze, unsqueeze);
    r.insert(Op::Squeeze, squeeze);
    r.insert(Op::Expand, expand);
    r.insert(Op::Tile, tile);
    r.insert(Op::Range, range);
    r.insert(Op::ConstantOfShape, constant_of_shape);
    r.insert(Op::Constant, constant);
    r.insert(Op::Cast, cast);
    r.insert(Op::CastLike, cast_like);
    r.insert(Op::Identity, identity);
    r.insert(Op::Dropout, dropout);
    r.insert(Op::Pad, pad);
}

fn one(t: Tensor) -> OpResult {
    Ok(vec![t])
}

fn to_usize(dims: &[i64]) -> Vec<usize> {
    dims.iter().map(|&d| d.max(0) as usize).collect()
}

fn shape(args: &OpArgs) -> OpResult {
    let dims: Vec<i64> = args.input(0)?.dims().iter().map(|&d| d as i64).collect();
    let r = dims.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(args.attr_i("start", 0));
    let end = clampi(args.attr_i("end", r));
    let v = dims[start..end.max(start)].to_vec();
    let n = v.len();
    one(ints_tensor(v, &[n])?)
}

fn size(args: &OpArgs) -> OpResult {
    one(ints_tensor(vec![args.input(0)?.elem_count() as i64], &[])?)
}

/// Resolves 0 (copy, unless `allowzero`) and -1 (infer) in a target shape.
pub fn target_shape(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>, OpError> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.replace(i).is_some() {
                    return Err(OpError(format!("shape {spec:?} has two -1")));
                }
                out.push(1);
            }
            0 if !allowzero => {
                out.push(*input.get(i).ok_or_else(|| {
                    OpError(format!("shape {spec:?} copies axis {i} of {input:?}"))
                })?)
            }
            d if d >= 0 => out.push(d as usize),
            d => return Err(OpError(format!("invalid dimension {d}"))),
        }
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(OpError(format!("cannot reshape {input:?} to {spec:?}")));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(OpError(format!("cannot reshape {input:?} to {spec:?}")));
    }
    Ok(out)
}

fn reshape(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let spec = if args.opset >= 5 {
        args.ints(1)?
    } else {
        args.attr_ints("shape").unwrap_or_default()
    };
    let shape = target_shape(x.dims(), &spec, args.attr_i("allowzero", 0) != 0)?;
    one(x.reshape(shape)?)
}

fn flatten(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let r = x.rank() as i64;
    let a = args.attr_i("axis", 1);
    let a = if a < 0 { a + r } else { a }.clamp(0, r) as usize;
    let rows: usize = x.dims()[..a].iter().product();
    let cols: usize = x.dims()[a..].iter().product();
    one(x.reshape((rows, cols))?)
}

fn transpose(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let perm: Vec<usize> = match args.attr_ints("perm") {
        Some(p) => p
            .into_iter()
            .map(|a| axis(a, x.rank()))
            .collect::<Result<_, _>>()?,
        None => (0..x.rank()).rev().collect(),
    };
    // A view, not a copy: readers that need contiguous data copy it
    // themselves (candle's matmul reads a transposed matrix through its
    // strides), and a copied weight transpose would be kept for the backward
    // as a second copy of the weight (311 MiB per pass in ViT-B/16).
    one(x.permute(perm)?)
}

fn concat(args: &OpArgs) -> OpResult {
    let parts: Vec<Tensor> = args.inputs.iter().flatten().cloned().collect();
    let first = parts.first().ok_or_else(|| OpError("no inputs".into()))?;
    let a = axis(args.attr_i("axis", 0), first.rank())?;
    let float = parts.iter().any(is_float);
    let parts = parts
        .iter()
        .filter(|p| p.elem_count() > 0 || p.rank() == first.rank())
        .map(|p| {
            if float {
                args.float(p)
            } else {
                Ok(p.to_device(&Device::Cpu)?.to_dtype(DType::I64)?)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    one(Tensor::cat(&parts, a)?)
}

fn split(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let a = axis(args.attr_i("axis", 0), x.rank())?;
    let len = x.dim(a)?;
    let n = args.n_outputs();
    let sizes: Vec<usize> = match args.opt_ints(1)?.or_else(|| args.attr_ints("split")) {
        Some(s) if !s.is_empty() => to_usize(&s),
        _ => {
            let parts = args.attr_i("num_outputs", n as i64).max(1) as usize;
            let chunk = len.div_ceil(parts);
            (0..parts)
                .map(|i| chunk.min(len.saturating_sub(i * chunk)))
                .collect()
        }
    };
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for s in sizes {
        out.push(x.narrow(a, start, s)?);
        start += s;
    }
    Ok(out)
}

/// Index list of ONNX `Slice` along one axis of length `len`.
fn slice_indices(len: usize, start: i64, end: i64, step: i64) -> Vec<usize> {
    let n = len as i64;
    let norm = |v: i64| if v < 0 { v + n } else { v };
    let mut out = Vec::new();
    if step > 0 {
        let (s, e) = (norm(start).clamp(0, n), norm(end).clamp(0, n));
        let mut i = s;
        while i < e {
            out.push(i as usize);
            i += step;
        }
    } else if step < 0 {
        let (s, e) = (norm(start).clamp(-1, n - 1), norm(end).clamp(-1, n - 1));
        let mut i = s;
        while i > e {
            out.push(i as usize);
            i += step;
        }
    }
    out
}

fn slice(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let (starts, ends, axes, steps) = if args.opset >= 10 {
        (
            args.ints(1)?,
            args.ints(2)?,
            args.opt_ints(3)?,
            args.opt_ints(4)?,
        )
    } else {
        (
            args.attr_ints("starts").unwrap_or_default(),
            args.attr_ints("ends").unwrap_or_default(),
            args.attr_ints("axes"),
            None,
        )
    };
    let axes = axes.unwrap_or_else(|| (0..starts.len() as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; starts.len()]);
    let mut y = x.clone();
    for i in 0..starts.len() {
        let a = axis(axes[i], x.rank())?;
        let len = y.dim(a)?;
        let idx = slice_indices(len, starts[i], ends[i], steps[i]);
        if steps[i] == 1 {
            let begin = idx.first().copied().unwrap_or(0);
            y = y.narrow(a, begin, idx.len())?;
        } else {
            let idx: Vec<u32> = idx.iter().map(|&v| v as u32).collect();
            let n = idx.len();
            y = y.index_select(&Tensor::from_vec(idx, n, y.device())?, a)?;
        }
    }
    one(y)
}

fn gather(args: &OpArgs) -> OpResult {
    let data = args.input(0)?;
    let indices = args.input(1)?;
    let a = axis(args.attr_i("axis", 0), data.rank())?;
    let len = data.dim(a)? as i64;
    let idx: Vec<u32> = int_vec(indices)?
        .into_iter()
        .map(|i| {
            let j = if i < 0 { i + len } else { i };
            if (0..len).contains(&j) {
                Ok(j as u32)
            } else {
                Err(OpError(format!("index {i} out of range for axis of {len}")))
            }
        })
        .collect::<Result<_, _>>()?;
    let n = idx.len();
    let picked = data.index_select(&Tensor::from_vec(idx, n, data.device())?, a)?;
    let mut shape = data.dims()[..a].to_vec();
    shape.extend_from_slice(indices.dims());
    shape.extend_from_slice(&data.dims()[a + 1..]);
    one(picked.reshape(shape)?)
}

fn unsqueeze(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let axes = args
        .axes(1, "axes")?
        .ok_or_else(|| OpError("Unsqueeze needs axes".into()))?;
    let out_rank = x.rank() + axes.len();
    let mut axes = axes
        .into_iter()
        .map(|a| axis(a, out_rank))
        .collect::<Result<Vec<_>, _>>()?;
    axes.sort_unstable();
    let mut shape = x.dims().to_vec();
    for a in axes {
        shape.insert(a, 1);
    }
    one(x.reshape(shape)?)
}

fn squeeze(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let dims = x.dims();
    let drop: Vec<usize> = match args.axes(1, "axes")? {
        Some(a) => a
            .into_iter()
            .map(|a| axis(a, x.rank()))
            .collect::<Result<_, _>>()?,
        None => (0..x.rank()).filter(|&d| dims[d] == 1).collect(),
    };
    let shape: Vec<usize> = (0..x.rank())
        .filter(|d| !drop.contains(d))
        .map(|d| dims[d])
        .collect();
    one(x.reshape(shape)?)
}

fn expand(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let target = to_usize(&args.ints(1)?);
    let shape = broadcast_shape(x.dims(), &target)?;
    one(x.broadcast_as(shape)?.contiguous()?)
}

fn tile(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let reps = to_usize(&args.ints(1)?);
    one(x.repeat(reps)?)
}

fn range(args: &OpArgs) -> OpResult {
    let (s, l, d) = (args.input(0)?, args.input(1)?, args.input(2)?);
    if is_float(s) {
        let (s, l, d) = (
            super::scalar_f64(s)?,
            super::scalar_f64(l)?,
            super::scalar_f64(d)?,
        );
        let n = ((l - s) / d).ceil().max(0.0) as usize;
        let v: Vec<f64> = (0..n).map(|i| s + i as f64 * d).collect();
        return one(args.const_f(v, &[n])?);
    }
    let (s, l, d) = (int_vec(s)?[0], int_vec(l)?[0], int_vec(d)?[0]);
    if d == 0 {
        return Err(OpError("Range with delta 0".into()));
    }
    let n = ((l - s) as f64 / d as f64).ceil().max(0.0) as usize;
    let v: Vec<i64> = (0..n as i64).map(|i| s + i * d).collect();
    one(ints_tensor(v, &[n])?)
}

fn constant_of_shape(args: &OpArgs) -> OpResult {
    let shape = to_usize(&args.ints(0)?);
    let value = match args.attr_tensor("value") {
        Some(t) => tensor_from_proto(args, t)?,
        None => args.const_f(vec![0.0], &[1])?,
    };
    let value = value.flatten_all()?.narrow(0, 0, 1)?.reshape(())?;
    one(value.broadcast_as(shape)?.contiguous()?)
}

fn constant(args: &OpArgs) -> OpResult {
    if let Some(t) = args.attr_tensor("value") {
        return one(tensor_from_proto(args, t)?);
    }
    if args.has_attr("value_float") {
        return one(args.const_f(vec![args.attr_f("value_float", 0.0) as f64], &[])?);
    }
    if let Some(v) = args
        .attr_floats("value_floats")
        .filter(|_| args.has_attr("value_floats"))
    {
        let n = v.len();
        return one(args.const_f(v.into_iter().map(|x| x as f64).collect(), &[n])?);
    }
    if args.has_attr("value_int") {
        return one(ints_tensor(vec![args.attr_i("value_int", 0)], &[])?);
    }
    if let Some(v) = args.attr_ints("value_ints") {
        let n = v.len();
        return one(ints_tensor(v, &[n])?);
    }
    Err(OpError(
        "Constant without a supported value attribute".into(),
    ))
}

/// Casts to any float type become the compute dtype on the device (so fp16 and
/// bf16 models run, and train, in f32); integer casts give i64 on the CPU.
fn cast_to(args: &OpArgs, x: &Tensor, to: i64) -> Result<Tensor, OpError> {
    use reinit_onnx::DType as D;
    match D::from_onnx(to as i32) {
        D::F32 | D::F64 | D::F16 | D::BF16 => args.float(x),
        D::Bool => Ok(x.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.ne(0.0)?),
        D::Other(code) => Err(OpError(format!("Cast to ONNX type {code}"))),
        _ => {
            let x = x.detach().to_device(&Device::Cpu)?;
            let x = if is_float(&x) {
                // truncate toward zero, like C casts
                let x = x.to_dtype(DType::F64)?;
                (x.sign()? * x.abs()?.floor()?)?
            } else {
                x
            };
            Ok(x.to_dtype(DType::I64)?)
        }
    }
}

fn cast(args: &OpArgs) -> OpResult {
    one(cast_to(args, args.input(0)?, args.attr_i("to", 1))?)
}

fn cast_like(args: &OpArgs) -> OpResult {
    let target = args.input(1)?;
    let x = args.input(0)?;
    one(if is_float(target) {
        args.float(x)?
    } else if target.dtype() == DType::U8 {
        cast_to(args, x, 9)?
    } else {
        cast_to(args, x, 7)?
    })
}

fn identity(args: &OpArgs) -> OpResult {
    one(args.input(0)?.clone())
}

/// Active only in [`Mode::Train`]; the mask comes from the executor's seeded
/// RNG (candle's CPU RNG cannot be seeded).
fn dropout(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let ratio = if args.opset >= 12 {
        args.scalar(1)?.unwrap_or(0.5)
    } else {
        args.attr_f("ratio", 0.5) as f64
    };
    let active = args.mode == Mode::Train && ratio > 0.0;
    let mask: Vec<f64> = if active {
        let mut rng = args.rng.borrow_mut();
        (0..x.elem_count())
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                if u >= ratio { 1.0 } else { 0.0 }
            })
            .collect()
    } else {
        vec![1.0; x.elem_count()]
    };
    let keep = Tensor::from_vec(mask, x.dims(), &Device::Cpu)?;
    let y = if active {
        let m = keep.to_dtype(x.dtype())?.to_device(x.device())?;
        (x * m)?.affine(1.0 / (1.0 - ratio), 0.0)?
    } else {
        x.clone()
    };
    let mut out = vec![y];
    if args.wants_output(1) {
        out.push(keep.ne(0.0)?);
    }
    Ok(out)
}

fn pad(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let mode = args.attr_s("mode").unwrap_or_else(|| "constant".into());
    if mode != "constant" {
        return Err(OpError(format!("Pad mode {mode} is not supported")));
    }
    let (pads, value, axes) = if args.opset >= 11 {
        (
            args.ints(1)?,
            args.scalar(2)?.unwrap_or(0.0),
            args.opt_ints(3)?,
        )
    } else {
        (
            args.attr_ints("pads").unwrap_or_default(),
            args.attr_f("value", 0.0) as f64,
            None,
        )
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a
            .into_iter()
            .map(|a| axis(a, x.rank()))
            .collect::<Result<_, _>>()?,
        None => (0..x.rank()).collect(),
    };
    let n = axes.len();
    let mut y = x.clone();
    for (i, &a) in axes.iter().enumerate() {
        let (b, e) = (pads[i], pads[i + n]);
        if b < 0 || e < 0 {
            let len = y.dim(a)? as i64;
            let start = (-b).max(0);
            let stop = len - (-e).max(0);
            y = y.narrow(a, start as usize, (stop - start).max(0) as usize)?;
        }
        y = pad_const(&y, a, b.max(0) as usize, e.max(0) as usize, value)?;
    }
    one(y)
}
