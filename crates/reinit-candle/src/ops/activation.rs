//! Pointwise activations, Softmax and LogSoftmax — all composed from candle ops
//! with correct gradients (candle's fused `softmax_last_dim` has none).

use candle_core::{D, Tensor};

use super::{Op, OpArgs, OpResult, Registry, axis};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::Relu, relu);
    r.insert(Op::LeakyRelu, leaky_relu);
    r.insert(Op::PRelu, prelu);
    r.insert(Op::Elu, elu);
    r.insert(Op::Selu, selu);
    r.insert(Op::Celu, celu);
    r.insert(Op::Sigmoid, sigmoid);
    r.insert(Op::HardSigmoid, hard_sigmoid);
    r.insert(Op::HardSwish, hard_swish);
    r.insert(Op::Tanh, tanh);
    r.insert(Op::Gelu, gelu);
    r.insert(Op::Erf, erf);
    r.insert(Op::Softplus, softplus);
    r.insert(Op::Softsign, softsign);
    r.insert(Op::Mish, mish);
    r.insert(Op::Clip, clip);
    r.insert(Op::Softmax, softmax);
    r.insert(Op::LogSoftmax, log_softmax);
}

fn one(t: Tensor) -> OpResult {
    Ok(vec![t])
}

fn relu(args: &OpArgs) -> OpResult {
    one(args.input(0)?.relu()?)
}

/// `relu(x) − α·relu(−x)`: exact gradient on both sides.
fn leaky(x: &Tensor, alpha: f64) -> Result<Tensor, OpError> {
    Ok((x.relu()? - x.neg()?.relu()?.affine(alpha, 0.0)?)?)
}

fn leaky_relu(args: &OpArgs) -> OpResult {
    one(leaky(args.input(0)?, args.attr_f("alpha", 0.01) as f64)?)
}

fn prelu(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let slope = args.input(1)?;
    // ONNX broadcasts the slope unidirectionally; a 1-D slope of C values
    // follows the channel axis when x is N×C×…
    let slope =
        if slope.rank() == 1 && x.rank() > 2 && slope.dim(0)? == x.dim(1)? && slope.dim(0)? > 1 {
            let mut shape = vec![1; x.rank() - 1];
            shape[0] = slope.dim(0)?;
            slope.reshape(shape)?
        } else {
            slope.clone()
        };
    one((x.relu()? - x.neg()?.relu()?.broadcast_mul(&slope)?)?)
}

/// `relu(x) + α·(exp(−relu(−x)) − 1)`.
fn elu_of(x: &Tensor, alpha: f64) -> Result<Tensor, OpError> {
    let neg = x.neg()?.relu()?.neg()?.exp()?.affine(alpha, -alpha)?;
    Ok((x.relu()? + neg)?)
}

fn elu(args: &OpArgs) -> OpResult {
    one(elu_of(args.input(0)?, args.attr_f("alpha", 1.0) as f64)?)
}

fn selu(args: &OpArgs) -> OpResult {
    let alpha = args.attr_f("alpha", 1.673_263_2) as f64;
    let gamma = args.attr_f("gamma", 1.050_701) as f64;
    one(elu_of(args.input(0)?, alpha)?.affine(gamma, 0.0)?)
}

fn celu(args: &OpArgs) -> OpResult {
    let alpha = args.attr_f("alpha", 1.0) as f64;
    let x = args.input(0)?;
    // max(0,x) + min(0, α(exp(x/α) − 1))
    let neg = x
        .neg()?
        .relu()?
        .neg()?
        .affine(1.0 / alpha, 0.0)?
        .exp()?
        .affine(alpha, -alpha)?;
    one((x.relu()? + neg)?)
}

fn sigmoid(args: &OpArgs) -> OpResult {
    one(candle_nn::ops::sigmoid(args.input(0)?)?)
}

fn hard_sigmoid_of(x: &Tensor, alpha: f64, beta: f64) -> Result<Tensor, OpError> {
    // clamp(αx+β, 0, 1) = relu(αx+β) − relu(αx+β−1)
    let y = x.affine(alpha, beta)?;
    Ok((y.relu()? - y.affine(1.0, -1.0)?.relu()?)?)
}

fn hard_sigmoid(args: &OpArgs) -> OpResult {
    let alpha = args.attr_f("alpha", 0.2) as f64;
    let beta = args.attr_f("beta", 0.5) as f64;
    one(hard_sigmoid_of(args.input(0)?, alpha, beta)?)
}

fn hard_swish(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    one((x * hard_sigmoid_of(x, 1.0 / 6.0, 0.5)?)?)
}

fn tanh(args: &OpArgs) -> OpResult {
    one(args.input(0)?.tanh()?)
}

fn gelu(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    match args.attr_s("approximate").as_deref() {
        Some("tanh") => one(x.gelu()?),
        _ => one(x.gelu_erf()?),
    }
}

fn erf(args: &OpArgs) -> OpResult {
    one(args.input(0)?.erf()?)
}

/// Stable `log(1 + eˣ) = relu(x) + log(1 + e^{−|x|})`.
pub fn softplus_of(x: &Tensor) -> Result<Tensor, OpError> {
    Ok((x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?)
}

fn softplus(args: &OpArgs) -> OpResult {
    one(softplus_of(args.input(0)?)?)
}

fn softsign(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    one((x / x.abs()?.affine(1.0, 1.0)?)?)
}

fn mish(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    one((x * softplus_of(x)?.tanh()?)?)
}

fn clip(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let (lo, hi) = if args.opset >= 11 {
        (args.scalar(1)?, args.scalar(2)?)
    } else {
        (
            args.has_attr("min").then(|| args.attr_f("min", 0.0) as f64),
            args.has_attr("max").then(|| args.attr_f("max", 0.0) as f64),
        )
    };
    if !x.dtype().is_float() {
        let mut y = x.clone();
        if let Some(lo) = lo {
            y = y.maximum(lo as i64)?;
        }
        if let Some(hi) = hi {
            y = y.minimum(hi as i64)?;
        }
        return one(y);
    }
    // lo + relu(x − lo) − relu(x − hi): exact piecewise gradient.
    let mut y = x.clone();
    if let Some(lo) = lo {
        y = y.affine(1.0, -lo)?.relu()?.affine(1.0, lo)?;
    }
    if let Some(hi) = hi {
        y = (&y - y.affine(1.0, -hi)?.relu()?)?;
    }
    one(y)
}

/// Softmax axis: opset ≥ 13 normalises one axis; older opsets flatten
/// `[..axis] × [axis..]` and normalise the second part.
fn softmax_layout(args: &OpArgs, x: &Tensor) -> Result<(Tensor, Vec<usize>), OpError> {
    let dims = x.dims().to_vec();
    if args.opset >= 13 {
        let a = axis(args.attr_i("axis", -1), x.rank())?;
        let last = x.rank() - 1;
        let t = if a == last {
            x.clone()
        } else {
            x.transpose(a, last)?
        };
        return Ok((t, dims));
    }
    let a = axis(args.attr_i("axis", 1), x.rank())?;
    let rows: usize = dims[..a].iter().product();
    Ok((
        x.reshape((rows, dims[a..].iter().product::<usize>()))?,
        dims,
    ))
}

fn softmax_restore(args: &OpArgs, y: Tensor, dims: &[usize]) -> Result<Tensor, OpError> {
    if args.opset >= 13 {
        let a = axis(args.attr_i("axis", -1), dims.len())?;
        let last = dims.len() - 1;
        return Ok(if a == last {
            y
        } else {
            y.transpose(a, last)?.contiguous()?
        });
    }
    Ok(y.reshape(dims)?)
}

/// Softmax over the last axis from exp/sum (gradient intact).
pub fn softmax_last(x: &Tensor) -> Result<Tensor, OpError> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

pub fn log_softmax_last(x: &Tensor) -> Result<Tensor, OpError> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let s = x.broadcast_sub(&m)?;
    let lse = s.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(s.broadcast_sub(&lse)?)
}

fn softmax(args: &OpArgs) -> OpResult {
    let (t, dims) = softmax_layout(args, args.input(0)?)?;
    one(softmax_restore(args, softmax_last(&t)?, &dims)?)
}

fn log_softmax(args: &OpArgs) -> OpResult {
    let (t, dims) = softmax_layout(args, args.input(0)?)?;
    one(softmax_restore(args, log_softmax_last(&t)?, &dims)?)
}
