//! Elementwise arithmetic, comparisons, logic and Where, with numpy
//! broadcasting. Integer operands stay i64 on the CPU.

use candle_core::{DType, Device, Tensor};

use super::{
    Op, OpArgs, OpResult, Registry, broadcast_shape, int_vec, ints_tensor, is_float, unify,
};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::Add, add);
    r.insert(Op::Sub, sub);
    r.insert(Op::Mul, mul);
    r.insert(Op::Div, div);
    r.insert(Op::Pow, pow);
    r.insert(Op::Mod, modulo);
    r.insert(Op::Neg, neg);
    r.insert(Op::Abs, abs);
    r.insert(Op::Sqrt, sqrt);
    r.insert(Op::Exp, exp);
    r.insert(Op::Log, log);
    r.insert(Op::Reciprocal, reciprocal);
    r.insert(Op::Sin, sin);
    r.insert(Op::Cos, cos);
    r.insert(Op::Floor, floor);
    r.insert(Op::Ceil, ceil);
    r.insert(Op::Round, round);
    r.insert(Op::Sign, sign);
    r.insert(Op::Min, min);
    r.insert(Op::Max, max);
    r.insert(Op::Sum, sum);
    r.insert(Op::Mean, mean);
    r.insert(Op::Equal, equal);
    r.insert(Op::IsNaN, is_nan);
    r.insert(Op::IsInf, is_inf);
    r.insert(Op::Less, less);
    r.insert(Op::LessOrEqual, less_or_equal);
    r.insert(Op::Greater, greater);
    r.insert(Op::GreaterOrEqual, greater_or_equal);
    r.insert(Op::Not, not);
    r.insert(Op::And, and);
    r.insert(Op::Or, or);
    r.insert(Op::Xor, xor);
    r.insert(Op::Where, where_op);
}

fn one(t: Tensor) -> OpResult {
    Ok(vec![t])
}

fn operands(args: &OpArgs) -> Result<(Tensor, Tensor), OpError> {
    unify(args, args.input(0)?, args.input(1)?)
}

/// [`operands`] for arithmetic, with an untracked operand that is broadcast
/// against a tracked one (a scale or bias computed from shapes, an attention
/// mask, a constant) made a variable of its own. candle's backward computes
/// the gradient of both operands of a binary op and keeps an untracked
/// operand's, at the broadcast size, until the backward returns: about
/// 0.7 GiB in a batch-2 ViT-B/16 step (README "`reinit verify` on real
/// models"). A variable's is summed back to its own (small) shape instead.
/// The values computed are the same.
fn arith_operands(args: &OpArgs) -> Result<(Tensor, Tensor), OpError> {
    let (a, b) = operands(args)?;
    Ok((own_gradient(&a, &b)?, own_gradient(&b, &a)?))
}

fn own_gradient(t: &Tensor, other: &Tensor) -> Result<Tensor, OpError> {
    Ok(
        if t.dtype().is_float()
            && !t.track_op()
            && other.track_op()
            && t.elem_count() < other.elem_count()
        {
            candle_core::Var::from_tensor(t)?.as_tensor().clone()
        } else {
            t.clone()
        },
    )
}

fn add(args: &OpArgs) -> OpResult {
    let (a, b) = arith_operands(args)?;
    one(a.broadcast_add(&b)?)
}

fn sub(args: &OpArgs) -> OpResult {
    let (a, b) = arith_operands(args)?;
    one(a.broadcast_sub(&b)?)
}

fn mul(args: &OpArgs) -> OpResult {
    let (a, b) = arith_operands(args)?;
    one(a.broadcast_mul(&b)?)
}

fn div(args: &OpArgs) -> OpResult {
    let (a, b) = arith_operands(args)?;
    one(a.broadcast_div(&b)?)
}

/// Integer powers by repeated products (candle's powf is exp(e·ln x), NaN
/// for negative bases), otherwise exp(y·ln x).
fn pow(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let y = args.input(1)?;
    if !is_float(x) {
        let base = int_vec(x)?;
        let e = int_vec(y)?;
        let shape = broadcast_shape(x.dims(), y.dims())?;
        let (b, e) = (ints_tensor(base, x.dims())?, ints_tensor(e, y.dims())?);
        let b = int_vec(&b.broadcast_as(shape.as_slice())?)?;
        let e = int_vec(&e.broadcast_as(shape.as_slice())?)?;
        let v = b
            .iter()
            .zip(&e)
            .map(|(&b, &e)| b.pow(e.max(0) as u32))
            .collect();
        return one(ints_tensor(v, &shape)?);
    }
    if y.elem_count() == 1 {
        let e = super::scalar_f64(y)?;
        let out = match e {
            1.0 => x.clone(),
            2.0 => x.sqr()?,
            3.0 => (x.sqr()? * x)?,
            0.5 => x.sqrt()?,
            -1.0 => x.recip()?,
            0.0 => x.ones_like()?,
            e => x.powf(e)?,
        };
        let shape = broadcast_shape(x.dims(), y.dims())?;
        return one(out.broadcast_as(shape.as_slice())?.contiguous()?);
    }
    let y = args.float(y)?;
    one(x.log()?.broadcast_mul(&y)?.exp()?)
}

fn modulo(args: &OpArgs) -> OpResult {
    let (a, b) = operands(args)?;
    let fmod = args.attr_i("fmod", 0) != 0;
    if is_float(&a) {
        let q = a.broadcast_div(&b)?;
        let q = if fmod {
            // truncate toward zero
            (q.sign()? * q.abs()?.floor()?)?
        } else {
            q.floor()?
        };
        return one(a.broadcast_sub(&q.detach().broadcast_mul(&b)?)?);
    }
    let shape = broadcast_shape(a.dims(), b.dims())?;
    let av = int_vec(&a.broadcast_as(shape.as_slice())?)?;
    let bv = int_vec(&b.broadcast_as(shape.as_slice())?)?;
    let v = av
        .iter()
        .zip(&bv)
        .map(|(&x, &y)| {
            if y == 0 {
                0
            } else if fmod {
                x % y
            } else {
                let r = x % y;
                if r != 0 && ((r < 0) != (y < 0)) {
                    r + y
                } else {
                    r
                }
            }
        })
        .collect();
    one(ints_tensor(v, &shape)?)
}

fn neg(args: &OpArgs) -> OpResult {
    one(args.input(0)?.neg()?)
}

fn abs(args: &OpArgs) -> OpResult {
    one(args.input(0)?.abs()?)
}

fn sqrt(args: &OpArgs) -> OpResult {
    one(args.input(0)?.sqrt()?)
}

fn exp(args: &OpArgs) -> OpResult {
    one(args.input(0)?.exp()?)
}

fn log(args: &OpArgs) -> OpResult {
    one(args.input(0)?.log()?)
}

fn reciprocal(args: &OpArgs) -> OpResult {
    one(args.input(0)?.recip()?)
}

fn sin(args: &OpArgs) -> OpResult {
    one(args.input(0)?.sin()?)
}

fn cos(args: &OpArgs) -> OpResult {
    one(args.input(0)?.cos()?)
}

/// Piecewise-constant ops: no gradient (detached), like PyTorch's.
fn floor(args: &OpArgs) -> OpResult {
    one(args.input(0)?.detach().floor()?)
}

fn ceil(args: &OpArgs) -> OpResult {
    one(args.input(0)?.detach().ceil()?)
}

fn round(args: &OpArgs) -> OpResult {
    one(args.input(0)?.detach().round()?)
}

fn sign(args: &OpArgs) -> OpResult {
    one(args.input(0)?.detach().sign()?)
}

fn fold(
    args: &OpArgs,
    f: fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> Result<Tensor, OpError> {
    let mut acc = args.input(0)?.clone();
    for i in 1..args.inputs.len() {
        let (a, b) = unify(args, &acc, args.input(i)?)?;
        acc = f(&a, &b)?;
    }
    Ok(acc)
}

fn min(args: &OpArgs) -> OpResult {
    one(fold(args, Tensor::broadcast_minimum)?)
}

fn max(args: &OpArgs) -> OpResult {
    one(fold(args, Tensor::broadcast_maximum)?)
}

fn sum(args: &OpArgs) -> OpResult {
    one(fold(args, Tensor::broadcast_add)?)
}

fn mean(args: &OpArgs) -> OpResult {
    let n = args.inputs.len() as f64;
    one(fold(args, Tensor::broadcast_add)?.affine(1.0 / n, 0.0)?)
}

/// Comparisons give u8 (0/1) on the CPU, like the rest of the boolean values.
fn compare(args: &OpArgs, f: fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>) -> OpResult {
    let (a, b) = operands(args)?;
    let a = a.detach();
    let b = b.detach();
    one(f(&a, &b)?.to_device(&Device::Cpu)?)
}

fn equal(args: &OpArgs) -> OpResult {
    compare(args, Tensor::broadcast_eq)
}

/// NaN is the one value unequal to itself (exports guard softmax with it).
fn is_nan(args: &OpArgs) -> OpResult {
    let x = args.input(0)?.detach();
    one(x.ne(&x)?.to_device(&Device::Cpu)?)
}

fn is_inf(args: &OpArgs) -> OpResult {
    let x = args.input(0)?.detach();
    if !x.dtype().is_float() {
        return one(x
            .zeros_like()?
            .to_dtype(DType::U8)?
            .to_device(&Device::Cpu)?);
    }
    let (pos, neg) = (
        args.attr_i("detect_positive", 1) != 0,
        args.attr_i("detect_negative", 1) != 0,
    );
    let pos_inf = x.ge(f64::INFINITY)?;
    let neg_inf = x.le(f64::NEG_INFINITY)?;
    let hit = match (pos, neg) {
        (true, true) => pos_inf.maximum(&neg_inf)?,
        (true, false) => pos_inf,
        (false, true) => neg_inf,
        (false, false) => pos_inf.zeros_like()?,
    };
    one(hit.to_device(&Device::Cpu)?)
}

fn less(args: &OpArgs) -> OpResult {
    compare(args, Tensor::broadcast_lt)
}

fn less_or_equal(args: &OpArgs) -> OpResult {
    compare(args, Tensor::broadcast_le)
}

fn greater(args: &OpArgs) -> OpResult {
    compare(args, Tensor::broadcast_gt)
}

fn greater_or_equal(args: &OpArgs) -> OpResult {
    compare(args, Tensor::broadcast_ge)
}

fn as_bool(t: &Tensor) -> Result<Tensor, OpError> {
    Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::I64)?.ne(0i64)?)
}

fn not(args: &OpArgs) -> OpResult {
    one(as_bool(args.input(0)?)?.eq(0u8)?)
}

fn logic(args: &OpArgs, f: fn(u8, u8) -> bool) -> OpResult {
    let a = as_bool(args.input(0)?)?;
    let b = as_bool(args.input(1)?)?;
    let shape = broadcast_shape(a.dims(), b.dims())?;
    let av = int_vec(&a.broadcast_as(shape.as_slice())?)?;
    let bv = int_vec(&b.broadcast_as(shape.as_slice())?)?;
    let v: Vec<u8> = av
        .iter()
        .zip(&bv)
        .map(|(&x, &y)| u8::from(f(x as u8, y as u8)))
        .collect();
    one(Tensor::from_vec(v, shape.as_slice(), &Device::Cpu)?)
}

fn and(args: &OpArgs) -> OpResult {
    logic(args, |a, b| a != 0 && b != 0)
}

fn or(args: &OpArgs) -> OpResult {
    logic(args, |a, b| a != 0 || b != 0)
}

fn xor(args: &OpArgs) -> OpResult {
    logic(args, |a, b| (a != 0) != (b != 0))
}

fn where_op(args: &OpArgs) -> OpResult {
    let cond = as_bool(args.input(0)?)?;
    let (x, y) = unify(args, args.input(1)?, args.input(2)?)?;
    let shape = broadcast_shape(&broadcast_shape(cond.dims(), x.dims())?, y.dims())?;
    let cond = cond
        .to_device(x.device())?
        .broadcast_as(shape.as_slice())?
        .contiguous()?;
    let x = x.broadcast_as(shape.as_slice())?;
    let y = y.broadcast_as(shape.as_slice())?;
    one(cond.where_cond(&x, &y)?)
}

#[cfg(test)]
mod tests {
    use super::own_gradient;
    use candle_core::{DType, Device, Tensor, Var, backprop::GradStore};

    /// Elements of every gradient the store keeps after the backward.
    fn kept(grads: &GradStore) -> usize {
        grads
            .get_ids()
            .filter_map(|id| grads.get_id(*id))
            .map(Tensor::elem_count)
            .sum()
    }

    #[test]
    fn a_broadcast_constant_keeps_no_gradient_of_the_broadcast_size() {
        let x =
            Var::from_tensor(&Tensor::ones((64, 64), DType::F32, &Device::Cpu).unwrap()).unwrap();
        let scale = Tensor::new(&[2f32], &Device::Cpu).unwrap(); // untracked
        let plain = x.as_tensor().broadcast_mul(&scale).unwrap();
        let grads = plain.sum_all().unwrap().backward().unwrap();
        // candle keeps the untracked operand's gradient at the broadcast size
        assert_eq!(kept(&grads), 2 * 64 * 64);
        let own = own_gradient(&scale, x.as_tensor()).unwrap();
        let y = x.as_tensor().broadcast_mul(&own).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert_eq!(kept(&grads), 64 * 64 + 1);
        // the same values and the same gradient for x
        let diff = (y - plain).unwrap().abs().unwrap().sum_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        let g = grads.get(x.as_tensor()).unwrap().sum_all().unwrap();
        assert_eq!(g.to_scalar::<f32>().unwrap(), 2.0 * 64.0 * 64.0);
    }
}
