//! Gemm and MatMul.

use candle_core::Tensor;

use super::{Op, OpArgs, OpResult, Registry};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::Gemm, gemm);
    r.insert(Op::MatMul, matmul);
}

pub(super) fn gemm(args: &OpArgs) -> OpResult {
    let a = args.input(0)?;
    let b = args.input(1)?;
    let a = if args.attr_i("transA", 0) != 0 {
        a.t()?
    } else {
        a.clone()
    };
    let b = if args.attr_i("transB", 0) != 0 {
        b.t()?
    } else {
        b.clone()
    };
    let alpha = args.attr_f("alpha", 1.0) as f64;
    let beta = args.attr_f("beta", 1.0) as f64;
    let mut y = a.matmul(&b)?;
    if alpha != 1.0 {
        y = y.affine(alpha, 0.0)?;
    }
    if let Some(c) = args.opt_input(2) {
        let c = if beta != 1.0 {
            c.affine(beta, 0.0)?
        } else {
            c.clone()
        };
        y = y.broadcast_add(&c)?;
    }
    Ok(vec![y])
}

/// numpy matmul: 1-D operands are promoted and the added axis removed again;
/// a 2-D right operand is applied to the flattened rows of the left one.
pub fn matmul_nd(a: &Tensor, b: &Tensor) -> Result<Tensor, OpError> {
    let (a1, b1) = (a.rank() == 1, b.rank() == 1);
    let a = if a1 { a.unsqueeze(0)? } else { a.clone() };
    let b = if b1 { b.unsqueeze(1)? } else { b.clone() };
    let y = if b.rank() == 2 && a.rank() > 2 {
        let dims = a.dims().to_vec();
        let k = dims[dims.len() - 1];
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let y = a.reshape((rows, k))?.matmul(&b)?;
        let mut out = dims;
        let last = out.len() - 1;
        out[last] = b.dim(1)?;
        y.reshape(out)?
    } else if a.rank() == 2 && b.rank() == 2 {
        a.matmul(&b)?
    } else {
        a.contiguous()?.broadcast_matmul(&b.contiguous()?)?
    };
    let y = if a1 { y.squeeze(y.rank() - 2)? } else { y };
    let y = if b1 { y.squeeze(y.rank() - 1)? } else { y };
    Ok(y)
}

fn matmul(args: &OpArgs) -> OpResult {
    Ok(vec![matmul_nd(args.input(0)?, args.input(1)?)?])
}
