//! onnxruntime's fused attention contrib ops, `com.microsoft::Attention` (the
//! BERT/GPT-2 fusion: one packed QKV projection) and
//! `com.microsoft::MultiHeadAttention` (projected Q, K, V), as plain scaled
//! dot-product attention over candle ops so the gradient flows to the
//! projection weights.
//!
//! Masked positions get `mask_filter_value` (−10000 by default) added to their
//! score, as onnxruntime's CPU kernel does; `tests/reference.rs` checks both
//! ops against onnxruntime's own output.

use candle_core::{Device, Tensor};

use super::activation::softmax_last;
use super::{Op, OpArgs, OpResult, Registry, int_vec};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::Attention, attention);
    r.insert(Op::MultiHeadAttention, multi_head_attention);
}

/// `[B, S, N·H]` → `[B, N, S, H]`.
fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor, OpError> {
    let (b, s, hidden) = x.dims3()?;
    if hidden % heads != 0 {
        return Err(OpError(format!("hidden size {hidden} over {heads} heads")));
    }
    Ok(x.reshape((b, s, heads, hidden / heads))?
        .transpose(1, 2)?
        .contiguous()?)
}

/// `[B, N, S, H]` → `[B, S, N·H]`.
fn merge_heads(x: &Tensor) -> Result<Tensor, OpError> {
    let (b, n, s, h) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, s, n * h))?)
}

/// Which keys each query may see, as 0/1 of shape `[B, S, T]`, from an
/// onnxruntime mask: `[B]` valid lengths, `[2B]` ends then starts, `[B, T]`,
/// `[B, S, T]` or `[B, 1, M, M]` raw 0/1 masks.
fn key_mask(mask: &Tensor, b: usize, s: usize, t: usize) -> Result<Vec<f64>, OpError> {
    let v = int_vec(mask)?;
    let dims = mask.dims();
    let mut keep = vec![1.0; b * s * t];
    let mut set = |bi: usize, si: usize, ti: usize, on: bool| {
        if !on {
            keep[(bi * s + si) * t + ti] = 0.0;
        }
    };
    match dims {
        [n] if *n == b || *n == 2 * b => {
            for bi in 0..b {
                let end = v[bi].max(0) as usize;
                let start = if *n == 2 * b {
                    v[b + bi].max(0) as usize
                } else {
                    0
                };
                for si in 0..s {
                    for ti in 0..t {
                        set(bi, si, ti, ti < end && ti >= start);
                    }
                }
            }
        }
        [nb, nt] if *nb == b && *nt == t => {
            for bi in 0..b {
                for si in 0..s {
                    for ti in 0..t {
                        set(bi, si, ti, v[bi * t + ti] > 0);
                    }
                }
            }
        }
        [nb, ns, nt] if *nb == b && *ns == s && *nt == t => {
            for (i, &m) in v.iter().enumerate() {
                set(i / (s * t), (i / t) % s, i % t, m > 0);
            }
        }
        [nb, 1, m1, m2] if *nb == b && *m1 >= s && *m2 >= t => {
            let past = t - s;
            for bi in 0..b {
                for si in 0..s {
                    for ti in 0..t {
                        set(bi, si, ti, v[(bi * m1 + past + si) * m2 + ti] > 0);
                    }
                }
            }
        }
        other => {
            return Err(OpError(format!(
                "mask of shape {other:?} for batch {b}, {s} queries and {t} keys is not supported"
            )));
        }
    }
    Ok(keep)
}

/// Softmax(Q Kᵀ·scale + bias) V over `[B, N, S, H]` heads; the additive bias
/// combines the mask, causality and `attention_bias`.
fn attend(
    args: &OpArgs,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    attention_bias: Option<&Tensor>,
) -> Result<Tensor, OpError> {
    let (b, _, s, h) = q.dims4()?;
    let t = k.dim(2)?;
    // scale 0 (the default) means 1/√head_size
    let scale = match args.attr_f("scale", 0.0) {
        0.0 => 1.0 / (h as f64).sqrt(),
        x => x as f64,
    };
    let filter = args.attr_f("mask_filter_value", -10000.0) as f64;
    let causal = args.attr_i("unidirectional", 0) != 0;
    let mut scores = q
        .contiguous()?
        .matmul(&k.transpose(2, 3)?.contiguous()?)?
        .affine(scale, 0.0)?;
    if mask.is_some() || causal {
        let keep = match mask {
            Some(m) => key_mask(m, b, s, t)?,
            None => vec![1.0; b * s * t],
        };
        let past = t.saturating_sub(s);
        let mut add = vec![0.0; b * s * t];
        for (i, a) in add.iter_mut().enumerate() {
            let (si, ti) = ((i / t) % s, i % t);
            if keep[i] == 0.0 {
                *a += filter;
            }
            if causal && ti > past + si {
                *a += filter;
            }
        }
        let add = Tensor::from_vec(add, (b, 1, s, t), &Device::Cpu)?
            .to_dtype(args.dtype)?
            .to_device(args.device)?;
        scores = scores.broadcast_add(&add)?;
    }
    if let Some(bias) = attention_bias {
        scores = scores.broadcast_add(bias)?;
    }
    Ok(softmax_last(&scores)?.matmul(&v.contiguous()?)?)
}

/// Inputs: input, weights, bias?, mask_index?, past?, attention_bias?;
/// outputs: output, present (`[2, B, N, T, H]`).
fn attention(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let w = args.input(1)?;
    let heads = args.attr_i("num_heads", 0).max(0) as usize;
    if heads == 0 {
        return Err(OpError("Attention needs num_heads".into()));
    }
    if args.attr_i("do_rotary", 0) != 0 {
        return Err(OpError("Attention with do_rotary is not supported".into()));
    }
    let total = w.dim(1)?;
    let sizes: Vec<usize> = match args.attr_ints("qkv_hidden_sizes") {
        Some(v) if v.len() == 3 => v.into_iter().map(|x| x.max(0) as usize).collect(),
        _ => vec![total / 3; 3],
    };
    if sizes.iter().sum::<usize>() != total {
        return Err(OpError(format!(
            "qkv sizes {sizes:?} do not add up to the weight's {total} columns"
        )));
    }
    let mut qkv = super::linear::matmul_nd(x, w)?;
    if let Some(bias) = args.opt_input(2) {
        qkv = qkv.broadcast_add(bias)?;
    }
    let q = split_heads(&qkv.narrow(2, 0, sizes[0])?, heads)?;
    let mut k = split_heads(&qkv.narrow(2, sizes[0], sizes[1])?, heads)?;
    let mut v = split_heads(&qkv.narrow(2, sizes[0] + sizes[1], sizes[2])?, heads)?;
    if let Some(past) = args.opt_input(4) {
        k = Tensor::cat(&[&past.get(0)?, &k], 2)?;
        v = Tensor::cat(&[&past.get(1)?, &v], 2)?;
    }
    let y = attend(args, &q, &k, &v, args.opt_input(3), args.opt_input(5))?;
    let mut out = vec![merge_heads(&y)?];
    if args.n_outputs() > 1 {
        out.push(Tensor::stack(&[&k, &v], 0)?);
    }
    Ok(out)
}

/// Inputs: query, key?, value?, bias?, key_padding_mask?, attention_bias?,
/// past_key?, past_value?; outputs: output, present_key, present_value.
/// Query/key/value are `[B, S, D]`, or packed: query `[B, S, N, 3, H]` with no
/// key, key `[B, L, N, 2, H]` with no value; a 4-D key/value is already
/// `[B, N, L, H]`.
fn multi_head_attention(args: &OpArgs) -> OpResult {
    let heads = args.attr_i("num_heads", 0).max(0) as usize;
    if heads == 0 {
        return Err(OpError("MultiHeadAttention needs num_heads".into()));
    }
    let query = args.input(0)?;
    let bias = args.opt_input(3);
    // bias slice of `len` values from `start`, added to a [B, S, D] tensor
    let biased = |x: Tensor, start: usize| -> Result<Tensor, OpError> {
        Ok(match bias {
            Some(b) => x.broadcast_add(&b.narrow(0, start, x.dim(2)?)?)?,
            None => x,
        })
    };
    let unpack = |t: &Tensor, i: usize| -> Result<Tensor, OpError> {
        // [B, S, N, n, H] → part i as [B, S, N·H]
        let (b, s, n, _, h) = t.dims5()?;
        Ok(t.narrow(3, i, 1)?.contiguous()?.reshape((b, s, n * h))?)
    };
    let (q, k, v) = match (query.rank(), args.opt_input(1), args.opt_input(2)) {
        (5, None, None) => {
            let d = query.dim(2)? * query.dim(4)?;
            (
                biased(unpack(query, 0)?, 0)?,
                biased(unpack(query, 1)?, d)?,
                biased(unpack(query, 2)?, 2 * d)?,
            )
        }
        (3, Some(kv), None) if kv.rank() == 5 => {
            let d = query.dim(2)?;
            (
                biased(query.clone(), 0)?,
                biased(unpack(kv, 0)?, d)?,
                biased(unpack(kv, 1)?, 2 * d)?,
            )
        }
        (3, Some(k), Some(v)) if k.rank() == 3 && v.rank() == 3 => {
            let d = query.dim(2)?;
            (
                biased(query.clone(), 0)?,
                biased(k.clone(), d)?,
                biased(v.clone(), d + k.dim(2)?)?,
            )
        }
        (3, Some(k), Some(v)) if k.rank() == 4 && v.rank() == 4 => {
            let q = split_heads(&biased(query.clone(), 0)?, heads)?;
            let y = attend(args, &q, k, v, args.opt_input(4), args.opt_input(5))?;
            let mut out = vec![merge_heads(&y)?, k.clone(), v.clone()];
            out.truncate(args.n_outputs().max(1));
            return Ok(out);
        }
        _ => {
            return Err(OpError(format!(
                "MultiHeadAttention with query {:?}, key {:?}, value {:?} is not supported",
                query.dims(),
                args.opt_input(1).map(|t| t.dims().to_vec()),
                args.opt_input(2).map(|t| t.dims().to_vec()),
            )));
        }
    };
    let q = split_heads(&q, heads)?;
    let mut k = split_heads(&k, heads)?;
    let mut v = split_heads(&v, heads)?;
    if let (Some(pk), Some(pv)) = (args.opt_input(6), args.opt_input(7)) {
        k = Tensor::cat(&[pk, &k], 2)?;
        v = Tensor::cat(&[pv, &v], 2)?;
    }
    let y = attend(args, &q, &k, &v, args.opt_input(4), args.opt_input(5))?;
    let mut out = vec![merge_heads(&y)?, k, v];
    out.truncate(args.n_outputs().max(1));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_masks_hide_the_keys_past_each_rows_end() {
        let m = Tensor::from_vec(vec![2i64, 3], 2, &Device::Cpu).unwrap();
        let keep = key_mask(&m, 2, 1, 3).unwrap();
        assert_eq!(keep, vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
        let raw = Tensor::from_vec(vec![1i64, 0, 1], (1, 3), &Device::Cpu).unwrap();
        assert_eq!(
            key_mask(&raw, 1, 2, 3).unwrap(),
            vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0]
        );
        assert!(key_mask(&raw, 2, 2, 3).is_err());
    }
}
