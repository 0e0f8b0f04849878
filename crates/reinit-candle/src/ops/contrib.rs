//! onnxruntime's `com.microsoft` contrib ops that its graph optimizer writes
//! into CNN and transformer exports (ORT_ENABLE_EXTENDED, or the
//! `onnxruntime.transformers` optimizer): fused conv/gemm + activation, the
//! GELU family, bias/skip additions and the fused layer norms. The attention
//! ops live in [`super::attention`].
//!
//! Semantics follow onnxruntime's `docs/ContribOperators.md` and its CPU
//! kernels; `tests/reference.rs` checks each against onnxruntime's own output.
//! The op table (`reinit_graph::ops`) keeps the domain apart, so a contrib op
//! never shadows a standard one of the same name (`Gelu` is `Op::MsGelu`).

use candle_core::{D, Tensor};

use super::{Op, OpArgs, OpResult, Registry, int_vec};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::FusedConv, fused_conv);
    r.insert(Op::FusedGemm, fused_gemm);
    r.insert(Op::MsGelu, gelu);
    r.insert(Op::BiasGelu, bias_gelu);
    r.insert(Op::FastGelu, fast_gelu);
    r.insert(Op::QuickGelu, quick_gelu);
    r.insert(Op::BiasAdd, bias_add);
    r.insert(Op::SkipLayerNormalization, skip_layer_norm);
    r.insert(
        Op::SkipSimplifiedLayerNormalization,
        skip_simplified_layer_norm,
    );
    r.insert(Op::EmbedLayerNormalization, embed_layer_norm);
}

/// The activation a FusedConv/FusedGemm applies after its linear part.
fn activation(args: &OpArgs, y: Tensor) -> Result<Tensor, OpError> {
    let Some(kind) = args.attr_s("activation") else {
        return Ok(y);
    };
    // FusedConv carries `activation_params`; FusedGemm `activation_alpha`/`_beta`.
    let params = args.attr_floats("activation_params").unwrap_or_default();
    let param = |i: usize, name: &str, default: f32| -> f64 {
        params
            .get(i)
            .copied()
            .unwrap_or_else(|| args.attr_f(name, default)) as f64
    };
    Ok(match kind.as_str() {
        "Relu" => y.relu()?,
        "Tanh" => y.tanh()?,
        "Sigmoid" => candle_nn::ops::sigmoid(&y)?,
        "Silu" => (&y * candle_nn::ops::sigmoid(&y)?)?,
        "LeakyRelu" => {
            let alpha = param(0, "activation_alpha", 0.01);
            (y.relu()? - y.neg()?.relu()?.affine(alpha, 0.0)?)?
        }
        "HardSigmoid" => {
            let (alpha, beta) = (
                param(0, "activation_alpha", 0.2),
                param(1, "activation_beta", 0.5),
            );
            let z = y.affine(alpha, beta)?;
            (z.relu()? - z.affine(1.0, -1.0)?.relu()?)?
        }
        "Clip" => {
            let (lo, hi) = (
                param(0, "activation_alpha", f32::MIN),
                param(1, "activation_beta", f32::MAX),
            );
            let z = y.affine(1.0, -lo)?.relu()?.affine(1.0, lo)?;
            (&z - z.affine(1.0, -hi)?.relu()?)?
        }
        other => {
            return Err(OpError(format!(
                "fused activation `{other}` is not supported (Relu, Tanh, Sigmoid, Silu, LeakyRelu, HardSigmoid, Clip are)"
            )));
        }
    })
}

/// Conv (+ optional sum input Z) followed by the fused activation.
fn fused_conv(args: &OpArgs) -> OpResult {
    let mut y = super::conv::conv(args)?.remove(0);
    if let Some(z) = args.opt_input(3) {
        y = y.broadcast_add(z)?;
    }
    Ok(vec![activation(args, y)?])
}

/// Gemm followed by the fused activation.
fn fused_gemm(args: &OpArgs) -> OpResult {
    let y = super::linear::gemm(args)?.remove(0);
    Ok(vec![activation(args, y)?])
}

fn with_bias(args: &OpArgs, x: &Tensor, bias: usize) -> Result<Tensor, OpError> {
    Ok(match args.opt_input(bias) {
        Some(b) => x.broadcast_add(b)?,
        None => x.clone(),
    })
}

fn gelu(args: &OpArgs) -> OpResult {
    Ok(vec![args.input(0)?.gelu_erf()?])
}

fn bias_gelu(args: &OpArgs) -> OpResult {
    Ok(vec![with_bias(args, args.input(0)?, 1)?.gelu_erf()?])
}

/// The tanh approximation, `0.5x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
fn fast_gelu(args: &OpArgs) -> OpResult {
    Ok(vec![with_bias(args, args.input(0)?, 1)?.gelu()?])
}

fn quick_gelu(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let alpha = args.attr_f("alpha", 1.702) as f64;
    Ok(vec![
        (x * candle_nn::ops::sigmoid(&x.affine(alpha, 0.0)?)?)?,
    ])
}

/// `X + bias + skip` (bias over the last axis).
fn bias_add(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let y = x.broadcast_add(args.input(1)?)?;
    Ok(vec![y.broadcast_add(args.input(2)?)?])
}

/// Layer norm over the last axis: `(y, mean, inv_std)`.
fn last_axis_norm(x: &Tensor, eps: f64) -> Result<(Tensor, Tensor, Tensor), OpError> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let inv_std = centered
        .sqr()?
        .mean_keepdim(D::Minus1)?
        .affine(1.0, eps)?
        .sqrt()?
        .recip()?;
    Ok((centered.broadcast_mul(&inv_std)?, mean, inv_std))
}

/// `input + skip (+ bias)`, the sum both skip norms normalise.
fn skip_sum(args: &OpArgs, bias: usize) -> Result<Tensor, OpError> {
    let x = args.input(0)?;
    let s = x.broadcast_add(args.input(1)?)?;
    with_bias(args, &s, bias)
}

/// Outputs: normalised, mean, inv_std_var, input_skip_bias_sum.
fn skip_layer_norm(args: &OpArgs) -> OpResult {
    let eps = args.attr_f("epsilon", 1e-12) as f64;
    let sum = skip_sum(args, 4)?;
    let (y, mean, inv_std) = last_axis_norm(&sum, eps)?;
    let y = with_bias(args, &y.broadcast_mul(args.input(2)?)?, 3)?;
    let mut out = vec![y, mean, inv_std, sum];
    out.truncate(args.n_outputs().max(1));
    Ok(out)
}

/// RMS norm of the skip sum. Inputs: input, skip, gamma, bias; outputs:
/// normalised, mean (unused), inv_std_var, input_skip_bias_sum.
fn skip_simplified_layer_norm(args: &OpArgs) -> OpResult {
    let eps = args.attr_f("epsilon", 1e-12) as f64;
    let sum = skip_sum(args, 3)?;
    let inv_rms = sum
        .sqr()?
        .mean_keepdim(D::Minus1)?
        .affine(1.0, eps)?
        .sqrt()?
        .recip()?;
    let y = sum.broadcast_mul(&inv_rms)?.broadcast_mul(args.input(2)?)?;
    let mean = inv_rms.zeros_like()?;
    let mut out = vec![y, mean, inv_rms, sum];
    out.truncate(args.n_outputs().max(1));
    Ok(out)
}

/// Rows of `table` picked by integer `ids` of shape `[B, S]` → `[B, S, H]`.
fn embed(table: &Tensor, ids: &Tensor) -> Result<Tensor, OpError> {
    let rows = table.dim(0)? as i64;
    let idx: Vec<u32> = int_vec(ids)?
        .into_iter()
        .map(|i| {
            if (0..rows).contains(&i) {
                Ok(i as u32)
            } else {
                Err(OpError(format!("id {i} out of range for {rows} rows")))
            }
        })
        .collect::<Result<_, _>>()?;
    let n = idx.len();
    let picked = table.index_select(&Tensor::from_vec(idx, n, table.device())?, 0)?;
    let mut shape = ids.dims().to_vec();
    shape.push(table.dim(1)?);
    Ok(picked.reshape(shape)?)
}

/// Inputs: input_ids, segment_ids?, word_embedding, position_embedding,
/// segment_embedding?, gamma, beta, mask?, position_ids?. Outputs: normalised
/// embedding sum, mask_index (ones per row of the mask, int32), embedding_sum.
fn embed_layer_norm(args: &OpArgs) -> OpResult {
    let eps = args.attr_f("epsilon", 1e-12) as f64;
    let ids = args.input(0)?;
    let (batch, seq) = ids.dims2()?;
    let mut sum = embed(args.input(2)?, ids)?;
    let positions = match args.opt_input(8) {
        Some(p) => p.broadcast_as((batch, seq))?.contiguous()?,
        None => Tensor::arange(0i64, seq as i64, ids.device())?
            .unsqueeze(0)?
            .broadcast_as((batch, seq))?
            .contiguous()?,
    };
    sum = (sum + embed(args.input(3)?, &positions)?)?;
    if let (Some(seg), Some(table)) = (args.opt_input(1), args.opt_input(4)) {
        sum = (sum + embed(table, seg)?)?;
    }
    let (y, _, _) = last_axis_norm(&sum, eps)?;
    let y = y
        .broadcast_mul(args.input(5)?)?
        .broadcast_add(args.input(6)?)?;
    let mask_index: Vec<i64> = match args.opt_input(7) {
        Some(m) => int_vec(m)?
            .chunks(seq.max(1))
            .map(|row| row.iter().filter(|&&v| v == 1).count() as i64)
            .collect(),
        None => vec![0; batch],
    };
    let mask_index = Tensor::from_vec(mask_index, batch, &candle_core::Device::Cpu)?;
    let mut out = vec![y, mask_index, sum];
    out.truncate(args.n_outputs().max(1));
    Ok(out)
}
