//! ReduceMean/Sum/Max/Min/SumSquare/L2 and ArgMax/ArgMin.

use candle_core::{DType, Device, Tensor};

use super::{Op, OpArgs, OpResult, Registry, axis};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::ReduceMean, reduce_mean);
    r.insert(Op::ReduceSum, reduce_sum);
    r.insert(Op::ReduceMax, reduce_max);
    r.insert(Op::ReduceMin, reduce_min);
    r.insert(Op::ReduceSumSquare, reduce_sum_square);
    r.insert(Op::ReduceL2, reduce_l2);
    r.insert(Op::ArgMax, arg_max);
    r.insert(Op::ArgMin, arg_min);
}

/// Reduced axes: from input 1 (ReduceSum since opset 13, the others since 18)
/// or the `axes` attribute. `None` means "nothing to reduce" (noop).
fn axes(args: &OpArgs, input_since: i64) -> Result<Option<Vec<usize>>, OpError> {
    let x = args.input(0)?;
    let given = if args.opset >= input_since {
        args.opt_ints(1)?
    } else {
        args.attr_ints("axes")
    };
    let given = given.filter(|v| !v.is_empty());
    match given {
        Some(v) => {
            let mut v = v
                .into_iter()
                .map(|a| axis(a, x.rank()))
                .collect::<Result<Vec<_>, _>>()?;
            v.sort_unstable();
            v.dedup();
            Ok(Some(v))
        }
        None if args.attr_i("noop_with_empty_axes", 0) != 0 => Ok(None),
        None => Ok(Some((0..x.rank()).collect())),
    }
}

fn reduce(
    args: &OpArgs,
    input_since: i64,
    f: fn(&Tensor, usize) -> candle_core::Result<Tensor>,
) -> OpResult {
    let x = args.input(0)?;
    let Some(dims) = axes(args, input_since)? else {
        return Ok(vec![x.clone()]);
    };
    let mut y = x.clone();
    for &d in &dims {
        y = f(&y, d)?;
    }
    if args.attr_i("keepdims", 1) == 0 {
        for &d in dims.iter().rev() {
            y = y.squeeze(d)?;
        }
    }
    Ok(vec![y])
}

fn reduce_mean(args: &OpArgs) -> OpResult {
    reduce(args, 18, |t, d| t.mean_keepdim(d))
}

fn reduce_sum(args: &OpArgs) -> OpResult {
    reduce(args, 13, |t, d| t.sum_keepdim(d))
}

fn reduce_max(args: &OpArgs) -> OpResult {
    reduce(args, 18, |t, d| t.max_keepdim(d))
}

fn reduce_min(args: &OpArgs) -> OpResult {
    reduce(args, 18, |t, d| t.min_keepdim(d))
}

fn reduce_sum_square(args: &OpArgs) -> OpResult {
    let sq = args.input(0)?.sqr()?;
    let mut inputs = args.inputs.clone();
    inputs[0] = Some(sq);
    let inner = OpArgs {
        inputs,
        state: Default::default(),
        ..*args
    };
    reduce(&inner, 18, |t, d| t.sum_keepdim(d))
}

fn reduce_l2(args: &OpArgs) -> OpResult {
    let mut out = reduce_sum_square(args)?;
    out[0] = out[0].sqrt()?;
    Ok(out)
}

fn arg(args: &OpArgs, max: bool) -> OpResult {
    let x = args.input(0)?.detach();
    let a = axis(args.attr_i("axis", 0), x.rank())?;
    let x = if args.attr_i("select_last_index", 0) != 0 {
        return Err(OpError("select_last_index is not supported".into()));
    } else {
        x
    };
    let y = if max {
        x.argmax_keepdim(a)?
    } else {
        x.argmin_keepdim(a)?
    };
    let y = y.to_device(&Device::Cpu)?.to_dtype(DType::I64)?;
    let y = if args.attr_i("keepdims", 1) == 0 {
        y.squeeze(a)?
    } else {
        y
    };
    Ok(vec![y])
}

fn arg_max(args: &OpArgs) -> OpResult {
    arg(args, true)
}

fn arg_min(args: &OpArgs) -> OpResult {
    arg(args, false)
}
