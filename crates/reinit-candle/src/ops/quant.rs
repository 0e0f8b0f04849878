//! QDQ graphs: DequantizeLinear and QuantizeLinear run in float. Quantized
//! values stay floats holding integers, and QuantizeLinear's rounding passes
//! the gradient straight through (`v + (q − v).detach()`), so a QDQ graph
//! trains like its float original. Ops that compute on the integers
//! themselves ([`INTEGER_ONLY`]) have no float gradient and are refused.

use candle_core::{DType, Device, Tensor};

use super::{Op, OpArgs, OpResult, Registry, axis};
use crate::error::OpError;

/// Ops whose arithmetic is defined on quantized integers; the executor lists
/// them as unsupported with this reason.
pub const INTEGER_ONLY: &[&str] = &[
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "com.microsoft::QLinearAdd",
    "com.microsoft::QLinearMul",
    "com.microsoft::QLinearConv",
    "com.microsoft::QLinearSigmoid",
    "com.microsoft::QLinearLeakyRelu",
    "com.microsoft::QLinearAveragePool",
    "com.microsoft::QLinearGlobalAveragePool",
    "com.microsoft::QLinearConcat",
    "com.microsoft::QLinearSoftmax",
    "com.microsoft::QGemm",
    "com.microsoft::QAttention",
    "com.microsoft::MatMulIntegerToFloat",
    "com.microsoft::DynamicQuantizeMatMul",
    "com.microsoft::DynamicQuantizeLSTM",
];

pub const INTEGER_ONLY_REASON: &str = "integer-only arithmetic has no float gradient; verify the float model or its QDQ form (QuantizeLinear/DequantizeLinear)";

pub fn register(r: &mut Registry) {
    r.insert(Op::DequantizeLinear, dequantize);
    r.insert(Op::QuantizeLinear, quantize);
}

/// `scale`/`zero point` shaped to broadcast against `x`: a scalar, or one value
/// per index of `axis`.
fn per_axis(args: &OpArgs, p: &Tensor, x: &Tensor) -> Result<Tensor, OpError> {
    let p = args.float(p)?;
    if p.elem_count() <= 1 || x.rank() == 0 {
        return Ok(p.flatten_all()?.reshape(())?);
    }
    if args.attr_i("block_size", 0) != 0 {
        return Err(OpError("blocked quantization is not supported".into()));
    }
    let a = axis(args.attr_i("axis", 1), x.rank())?;
    let mut shape = vec![1; x.rank()];
    shape[a] = p.elem_count();
    Ok(p.reshape(shape)?)
}

fn dequantize(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let xf = args.float(x)?;
    let scale = per_axis(args, args.input(1)?, x)?;
    let y = match args.opt_input(2) {
        Some(zp) => xf.broadcast_sub(&per_axis(args, zp, x)?)?,
        None => xf,
    };
    Ok(vec![y.broadcast_mul(&scale)?])
}

/// Range of an ONNX integer type (`output_dtype`; uint8 when unset).
fn range(onnx_type: i64) -> Result<(f64, f64), OpError> {
    Ok(match onnx_type {
        0 | 2 => (0.0, 255.0),
        3 => (-128.0, 127.0),
        4 => (0.0, 65535.0),
        5 => (-32768.0, 32767.0),
        6 => (i32::MIN as f64, i32::MAX as f64),
        21 => (0.0, 15.0),
        22 => (-8.0, 7.0),
        t => {
            return Err(OpError(format!(
                "QuantizeLinear to ONNX type {t} is not supported (integer targets are)"
            )));
        }
    })
}

/// `clamp(round_half_even(x / scale) + zp)` forward, identity of
/// `x / scale + zp` backward.
fn quantize(args: &OpArgs) -> OpResult {
    let x = args.float(args.input(0)?)?;
    let scale = per_axis(args, args.input(1)?, &x)?;
    let mut v = x.broadcast_div(&scale)?;
    if let Some(zp) = args.opt_input(2) {
        v = v.broadcast_add(&per_axis(args, zp, &x)?)?;
    }
    let (lo, hi) = range(args.attr_i("output_dtype", 0))?;
    let zp: Vec<f64> = match args.opt_input(2) {
        Some(zp) => per_axis(args, zp, &x)?
            .broadcast_as(x.dims())?
            .to_dtype(DType::F64)?
            .to_device(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?,
        None => vec![0.0; x.elem_count()],
    };
    // Round the scaled value before adding the zero point, as the spec does.
    let scaled: Vec<f64> = x
        .broadcast_div(&scale)?
        .to_dtype(DType::F64)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1()?;
    let q: Vec<f64> = scaled
        .iter()
        .zip(&zp)
        .map(|(s, z)| (s.round_ties_even() + z).clamp(lo, hi))
        .collect();
    let q = Tensor::from_vec(q, x.dims(), &Device::Cpu)?
        .to_dtype(args.dtype)?
        .to_device(args.device)?;
    let straight_through = (&v + (q - &v)?.detach())?;
    Ok(vec![straight_through])
}
