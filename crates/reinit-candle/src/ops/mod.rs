//! The op registry: an [`Op`] of the shared op table (`reinit_graph::ops`) →
//! a small function over candle tensors. An op outside the table cannot be
//! registered; an op in it without a kernel is refused by `Executor::new`.
//!
//! Conventions every op relies on:
//! - floating values are in the executor's compute dtype (f32, or f64 for
//!   gradient checks) on the executor's device, whatever the ONNX float type;
//! - integer values are `i64` tensors on the CPU and booleans `u8` on the CPU,
//!   evaluated eagerly: shape-computation chains never touch the device;
//! - every op is built from candle ops whose backward is correct (see
//!   `stack.md` §2), so gradients flow through candle's autograd.

use std::cell::RefCell;
use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use rand_chacha::ChaCha8Rng;
use reinit_onnx::proto::{AttributeProto, NodeProto, TensorProto};

use crate::error::OpError;
use crate::executor::Mode;
pub use reinit_graph::Op;

mod activation;
mod attention;
pub mod contrib;
mod conv;
mod deconv;
mod depthwise;
mod einsum;
mod elementwise;
mod host;
pub mod im2col;
mod index;
mod linear;
mod norm;
mod pool;
pub mod quant;
mod reduce;
mod shape;

#[cfg(test)]
mod gradcheck;

pub type OpResult = Result<Vec<Tensor>, OpError>;
/// An op implementation: inputs and attributes in, outputs out.
pub type OpFn = fn(&OpArgs) -> OpResult;
pub type Registry = HashMap<Op, OpFn>;

/// Ops the executor handles itself because they run subgraphs.
pub const CONTROL_FLOW: &[Op] = &[Op::If];

/// Every supported op, one family per file.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    activation::register(&mut r);
    attention::register(&mut r);
    contrib::register(&mut r);
    conv::register(&mut r);
    einsum::register(&mut r);
    elementwise::register(&mut r);
    index::register(&mut r);
    linear::register(&mut r);
    norm::register(&mut r);
    pool::register(&mut r);
    quant::register(&mut r);
    reduce::register(&mut r);
    shape::register(&mut r);
    r
}

/// What an op sees of its node and of the run.
pub struct OpArgs<'a> {
    pub node: &'a NodeProto,
    /// One entry per ONNX input; `None` for an omitted optional input.
    pub inputs: Vec<Option<Tensor>>,
    pub mode: Mode,
    pub opset: i64,
    /// Compute dtype for floating values.
    pub dtype: DType,
    pub device: &'a Device,
    pub(crate) rng: &'a RefCell<ChaCha8Rng>,
    /// New values for stateful inputs (BatchNormalization running statistics):
    /// `(input index, value)`, applied by the executor in training mode.
    pub(crate) state: RefCell<Vec<(usize, Tensor)>>,
}

impl<'a> OpArgs<'a> {
    pub fn input(&self, i: usize) -> Result<&Tensor, OpError> {
        self.opt_input(i)
            .ok_or_else(|| OpError(format!("required input {i} is missing")))
    }

    pub fn opt_input(&self, i: usize) -> Option<&Tensor> {
        self.inputs.get(i).and_then(Option::as_ref)
    }

    /// Number of outputs the node declares (trailing empty names included).
    pub fn n_outputs(&self) -> usize {
        self.node.output.len()
    }

    /// True when output `i` is declared with a non-empty name.
    pub fn wants_output(&self, i: usize) -> bool {
        self.node.output.get(i).is_some_and(|n| !n.is_empty())
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    pub fn has_attr(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }

    pub fn attr_i(&self, name: &str, default: i64) -> i64 {
        self.attr(name).and_then(|a| a.i).unwrap_or(default)
    }

    pub fn attr_f(&self, name: &str, default: f32) -> f32 {
        self.attr(name).and_then(|a| a.f).unwrap_or(default)
    }

    pub fn attr_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.attr(name).map(|a| a.ints.clone())
    }

    pub fn attr_floats(&self, name: &str) -> Option<Vec<f32>> {
        self.attr(name).map(|a| a.floats.clone())
    }

    pub fn attr_s(&self, name: &str) -> Option<String> {
        self.attr(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    pub fn attr_tensor(&self, name: &str) -> Option<&TensorProto> {
        self.attr(name).and_then(|a| a.t.as_ref())
    }

    /// Input `i` read as integers (a shape, axes, indices…).
    pub fn ints(&self, i: usize) -> Result<Vec<i64>, OpError> {
        int_vec(self.input(i)?)
    }

    /// Optional integer input `i`, or `None` when omitted.
    pub fn opt_ints(&self, i: usize) -> Result<Option<Vec<i64>>, OpError> {
        self.opt_input(i).map(int_vec).transpose()
    }

    /// `axes` from input `i` (newer opsets) or from the attribute (older ones).
    pub fn axes(&self, input: usize, attr: &str) -> Result<Option<Vec<i64>>, OpError> {
        match self.opt_ints(input)? {
            Some(v) => Ok(Some(v)),
            None => Ok(self.attr_ints(attr)),
        }
    }

    /// A float scalar from input `i`.
    pub fn scalar(&self, i: usize) -> Result<Option<f64>, OpError> {
        self.opt_input(i).map(scalar_f64).transpose()
    }

    /// Records the new value of a stateful input (see [`OpArgs::state`]).
    pub fn update_state(&self, input: usize, value: Tensor) {
        self.state.borrow_mut().push((input, value));
    }

    /// Brings a value into the float compute dtype on the device.
    pub fn float(&self, t: &Tensor) -> Result<Tensor, OpError> {
        Ok(t.to_device(self.device)?.to_dtype(self.dtype)?)
    }

    /// A constant float tensor in the compute dtype on the device.
    pub fn const_f(&self, values: Vec<f64>, shape: &[usize]) -> Result<Tensor, OpError> {
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?
            .to_dtype(self.dtype)?
            .to_device(self.device)?)
    }
}

pub fn is_float(t: &Tensor) -> bool {
    t.dtype().is_float()
}

/// All elements as i64 (any dtype, any device).
pub fn int_vec(t: &Tensor) -> Result<Vec<i64>, OpError> {
    let t = t.to_device(&Device::Cpu)?;
    let t = if t.dtype().is_float() {
        // Round rather than truncate so 2.9999999 → 3.
        t.to_dtype(DType::F64)?.round()?.to_dtype(DType::I64)?
    } else {
        t.to_dtype(DType::I64)?
    };
    Ok(t.flatten_all()?.to_vec1::<i64>()?)
}

pub fn scalar_f64(t: &Tensor) -> Result<f64, OpError> {
    let v = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    v.first()
        .copied()
        .ok_or_else(|| OpError("expected a scalar, got an empty tensor".into()))
}

/// An i64 tensor on the CPU.
pub fn ints_tensor(values: Vec<i64>, shape: &[usize]) -> Result<Tensor, OpError> {
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Normalises a possibly negative axis against `rank`.
pub fn axis(a: i64, rank: usize) -> Result<usize, OpError> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if v < 0 || v >= r.max(1) {
        return Err(OpError(format!("axis {a} out of range for rank {rank}")));
    }
    Ok(v as usize)
}

/// Numpy-style broadcast of two shapes.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let x = if i + a.len() >= n {
            a[i + a.len() - n]
        } else {
            1
        };
        let y = if i + b.len() >= n {
            b[i + b.len() - n]
        } else {
            1
        };
        out[i] = match (x, y) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(OpError(format!("cannot broadcast {a:?} with {b:?}"))),
        };
    }
    Ok(out)
}

/// Brings two operands to a common device and type: if either is a float, both
/// become floats in the compute dtype on the device.
pub fn unify(args: &OpArgs, a: &Tensor, b: &Tensor) -> Result<(Tensor, Tensor), OpError> {
    if is_float(a) || is_float(b) {
        Ok((args.float(a)?, args.float(b)?))
    } else {
        Ok((
            a.to_device(&Device::Cpu)?.to_dtype(DType::I64)?,
            b.to_device(&Device::Cpu)?.to_dtype(DType::I64)?,
        ))
    }
}

/// Every `s`-th element along `dim`, starting at 0, `out` elements. Built from
/// narrow/pad/reshape so the gradient is exact.
pub fn subsample(t: &Tensor, dim: usize, s: usize, out: usize) -> Result<Tensor, OpError> {
    if s == 1 {
        return Ok(t.narrow(dim, 0, out)?);
    }
    let len = t.dim(dim)?;
    let want = out * s;
    let t = if len >= want {
        t.narrow(dim, 0, want)?
    } else {
        t.pad_with_zeros(dim, 0, want - len)?
    };
    let mut shape = t.dims().to_vec();
    shape[dim] = out;
    shape.insert(dim + 1, s);
    Ok(t.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?)
}

/// Pads `dim` with a constant value (zeros use candle's own pad).
pub fn pad_const(
    t: &Tensor,
    dim: usize,
    before: usize,
    after: usize,
    value: f64,
) -> Result<Tensor, OpError> {
    if before == 0 && after == 0 {
        return Ok(t.clone());
    }
    if value == 0.0 {
        return Ok(t.pad_with_zeros(dim, before, after)?);
    }
    let mut parts = Vec::with_capacity(3);
    let mut shape = t.dims().to_vec();
    if before > 0 {
        shape[dim] = before;
        parts.push(Tensor::full(value, shape.as_slice(), t.device())?.to_dtype(t.dtype())?);
    }
    parts.push(t.clone());
    if after > 0 {
        shape[dim] = after;
        parts.push(Tensor::full(value, shape.as_slice(), t.device())?.to_dtype(t.dtype())?);
    }
    Ok(Tensor::cat(&parts, dim)?)
}

/// Reads a small `TensorProto` attribute (Constant, ConstantOfShape) into a
/// tensor: floats in the compute dtype on the device, integers i64 on the CPU.
pub fn tensor_from_proto(args: &OpArgs, t: &TensorProto) -> Result<Tensor, OpError> {
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let dtype = reinit_onnx::DType::from_onnx(t.data_type.unwrap_or(1));
    let raw = t.raw_data.as_deref().unwrap_or_default();
    let n: usize = dims.iter().product();
    let float = |v: Vec<f64>| args.const_f(v, &dims);
    use reinit_onnx::DType as D;
    match dtype {
        D::F32 | D::F64 | D::F16 | D::BF16 => {
            let v: Vec<f64> = if !t.float_data.is_empty() {
                t.float_data.iter().map(|&x| x as f64).collect()
            } else if !t.double_data.is_empty() {
                t.double_data.clone()
            } else if dtype == D::F32 {
                raw.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                    .collect()
            } else if dtype == D::F64 {
                raw.chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                    .collect()
            } else {
                return Err(OpError(format!(
                    "{dtype} constant attributes are not supported"
                )));
            };
            check_len(v.len(), n)?;
            float(v)
        }
        _ => {
            let v: Vec<i64> = if !t.int64_data.is_empty() {
                t.int64_data.clone()
            } else if !t.int32_data.is_empty() {
                t.int32_data.iter().map(|&x| x as i64).collect()
            } else {
                let size = dtype.size().unwrap_or(8);
                raw.chunks_exact(size)
                    .map(|c| match size {
                        1 => c[0] as i8 as i64,
                        2 => i16::from_le_bytes([c[0], c[1]]) as i64,
                        4 => i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64,
                        _ => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
                    })
                    .collect()
            };
            check_len(v.len(), n)?;
            let t = ints_tensor(v, &dims)?;
            if dtype == D::Bool {
                Ok(t.ne(0i64)?)
            } else {
                Ok(t)
            }
        }
    }
}

fn check_len(got: usize, want: usize) -> Result<(), OpError> {
    if got != want {
        return Err(OpError(format!(
            "constant tensor holds {got} values for {want} elements"
        )));
    }
    Ok(())
}
