//! Index arithmetic ops real exports use: GatherElements (BERT's token type
//! ids, `torch.gather`), GatherND / ScatterND (the dynamo exporter's
//! indexing), CumSum (position ids) and Trilu (causal masks).
//!
//! All are built from `index_select`, `index_add`, `where_cond` and `matmul`,
//! whose candle backward is exact, so gradients need no code here. Index
//! tensors are read eagerly on the CPU (they are small and integer).

use candle_core::{DType, Device, Tensor};

use super::{Op, OpArgs, OpResult, Registry, axis, int_vec};
use crate::error::OpError;

pub fn register(r: &mut Registry) {
    r.insert(Op::GatherElements, gather_elements);
    r.insert(Op::GatherND, gather_nd);
    r.insert(Op::ScatterND, scatter_nd);
    r.insert(Op::CumSum, cumsum);
    r.insert(Op::Trilu, trilu);
}

/// `out[i…] = data[i… with i_axis ← indices[i…]]`: the flat data position of
/// every output element, computed on the CPU, then one `index_select` over the
/// flattened data (its backward is an `index_add`, exact for repeated indices).
fn gather_elements(args: &OpArgs) -> OpResult {
    let data = args.input(0)?;
    let indices = args.input(1)?;
    let ddims = data.dims();
    let idims = indices.dims();
    let a = axis(args.attr_i("axis", 0), ddims.len())?;
    if idims.len() != ddims.len() {
        return Err(OpError(format!(
            "indices {idims:?} and data {ddims:?} must have the same rank"
        )));
    }
    if let Some(d) = (0..ddims.len()).find(|&d| d != a && idims[d] > ddims[d]) {
        return Err(OpError(format!(
            "indices {idims:?} exceed data {ddims:?} on axis {d}"
        )));
    }
    let mut strides = vec![1usize; ddims.len()];
    for d in (0..ddims.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * ddims[d + 1];
    }
    let len = ddims[a] as i64;
    let values = int_vec(indices)?;
    let mut flat = Vec::with_capacity(values.len());
    let mut coord = vec![0usize; idims.len()];
    for &i in &values {
        let j = if i < 0 { i + len } else { i };
        if !(0..len).contains(&j) {
            return Err(OpError(format!(
                "index {i} out of range for axis {a} of {len}"
            )));
        }
        let pos: usize = coord
            .iter()
            .zip(&strides)
            .enumerate()
            .map(|(d, (&c, &s))| if d == a { j as usize * s } else { c * s })
            .sum();
        flat.push(u32::try_from(pos).map_err(|_| {
            OpError(format!(
                "data {ddims:?} is too large to index (> 2^32 elements)"
            ))
        })?);
        // Next coordinate of the indices tensor, row-major.
        for d in (0..coord.len()).rev() {
            coord[d] += 1;
            if coord[d] < idims[d] {
                break;
            }
            coord[d] = 0;
        }
    }
    let n = flat.len();
    let index = Tensor::from_vec(flat, n, data.device())?;
    let picked = data.flatten_all()?.index_select(&index, 0)?;
    Ok(vec![picked.reshape(idims)?])
}

/// Where GatherND/ScatterND index: the data viewed as `[rows, rest…]` with one
/// row per (batch, index tuple) address, and the row each index tuple names.
struct NdRows {
    /// Data reshaped so that dim 0 enumerates the addressed slices.
    rows_shape: Vec<usize>,
    /// One flat row number per index tuple, in index order.
    rows: Vec<u32>,
    /// `indices.shape[..-1]`, the leading shape of the gathered result.
    lead: Vec<usize>,
    /// The dims of one addressed slice.
    slice: Vec<usize>,
}

fn nd_rows(data: &[usize], indices: &Tensor, batch_dims: usize) -> Result<NdRows, OpError> {
    let idims = indices.dims();
    let Some(&depth) = idims.last() else {
        return Err(OpError("indices must have rank ≥ 1".into()));
    };
    if batch_dims + depth > data.len() || batch_dims >= idims.len() {
        return Err(OpError(format!(
            "indices {idims:?} (batch_dims {batch_dims}) do not fit data {data:?}"
        )));
    }
    if idims[..batch_dims] != data[..batch_dims] {
        return Err(OpError(format!(
            "batch dims of indices {idims:?} and data {data:?} differ"
        )));
    }
    let batch: usize = data[..batch_dims].iter().product();
    let addressed = &data[batch_dims..batch_dims + depth];
    let per_batch: usize = addressed.iter().product();
    let slice = data[batch_dims + depth..].to_vec();
    let values = int_vec(indices)?;
    let tuples = values.len() / depth.max(1);
    let per_batch_tuples = tuples / batch.max(1);
    let mut rows = Vec::with_capacity(tuples);
    for (t, tuple) in values.chunks(depth.max(1)).enumerate().take(tuples) {
        let mut flat = (t / per_batch_tuples.max(1)) * per_batch;
        let mut stride = per_batch;
        for (&i, &len) in tuple.iter().zip(addressed) {
            stride /= len;
            let j = if i < 0 { i + len as i64 } else { i };
            if !(0..len as i64).contains(&j) {
                return Err(OpError(format!("index {i} out of range for axis of {len}")));
            }
            flat += j as usize * stride;
        }
        rows.push(flat as u32);
    }
    let mut rows_shape = vec![batch * per_batch];
    rows_shape.extend_from_slice(&slice);
    Ok(NdRows {
        rows_shape,
        rows,
        lead: idims[..idims.len() - 1].to_vec(),
        slice,
    })
}

fn gather_nd(args: &OpArgs) -> OpResult {
    let data = args.input(0)?;
    let b = args.attr_i("batch_dims", 0).max(0) as usize;
    let nd = nd_rows(data.dims(), args.input(1)?, b)?;
    let n = nd.rows.len();
    let index = Tensor::from_vec(nd.rows, n, data.device())?;
    let picked = data.reshape(nd.rows_shape)?.index_select(&index, 0)?;
    let mut shape = nd.lead;
    shape.extend_from_slice(&nd.slice);
    Ok(vec![picked.reshape(shape)?])
}

fn scatter_nd(args: &OpArgs) -> OpResult {
    let data = args.input(0)?;
    let updates = args.input(2)?;
    let nd = nd_rows(data.dims(), args.input(1)?, 0)?;
    let (data, updates) = if data.dtype().is_float() || updates.dtype().is_float() {
        (args.float(data)?, args.float(updates)?)
    } else {
        (data.clone(), updates.to_dtype(data.dtype())?)
    };
    let n_rows = nd.rows_shape[0];
    let k = nd.rows.len();
    let flat_data = data.reshape(nd.rows_shape.as_slice())?;
    let mut upd_shape = vec![k];
    upd_shape.extend_from_slice(&nd.slice);
    let flat_updates = updates.reshape(upd_shape)?;
    let out = match args.attr_s("reduction").as_deref().unwrap_or("none") {
        "none" => {
            // Row r comes from the data, or from the last update naming it.
            let mut source: Vec<u32> = (0..n_rows as u32).collect();
            for (u, &row) in nd.rows.iter().enumerate() {
                source[row as usize] = (n_rows + u) as u32;
            }
            let both = Tensor::cat(&[&flat_data, &flat_updates], 0)?;
            let index = Tensor::from_vec(source, n_rows, both.device())?;
            both.index_select(&index, 0)?
        }
        "add" => {
            let index = Tensor::from_vec(nd.rows, k, flat_data.device())?;
            flat_data.index_add(&index, &flat_updates, 0)?
        }
        other => {
            return Err(OpError(format!(
                "ScatterND reduction `{other}` is not supported (none and add are)"
            )));
        }
    };
    Ok(vec![out.reshape(data.dims())?])
}

fn cumsum(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    let a = axis(args.ints(1)?.first().copied().unwrap_or(0), x.rank())?;
    let exclusive = args.attr_i("exclusive", 0) != 0;
    let reverse = args.attr_i("reverse", 0) != 0;
    let len = x.dim(a)?;
    // y[.., j] = Σ_i x[.., i] T[i, j]: T picks the summed positions.
    let keep = |i: usize, j: usize| match (reverse, exclusive) {
        (false, false) => i <= j,
        (false, true) => i < j,
        (true, false) => i >= j,
        (true, true) => i > j,
    };
    let tri: Vec<f64> = (0..len * len)
        .map(|p| if keep(p / len, p % len) { 1.0 } else { 0.0 })
        .collect();
    let last = x.rank() - 1;
    if !x.dtype().is_float() {
        // Integer sums (position ids) exactly, on the CPU.
        let xf = x.to_dtype(DType::F64)?.transpose(a, last)?.contiguous()?;
        let t = Tensor::from_vec(tri, (len, len), &Device::Cpu)?;
        let y = xf.broadcast_matmul(&t)?.transpose(a, last)?;
        return Ok(vec![y.round()?.to_dtype(DType::I64)?]);
    }
    let t = args.const_f(tri, &[len, len])?;
    let moved = x.transpose(a, last)?.contiguous()?;
    let y = moved
        .broadcast_matmul(&t)?
        .transpose(a, last)?
        .contiguous()?;
    Ok(vec![y])
}

fn trilu(args: &OpArgs) -> OpResult {
    let x = args.input(0)?;
    if x.rank() < 2 {
        return Err(OpError(format!("Trilu needs rank ≥ 2, got {:?}", x.dims())));
    }
    let k = args
        .opt_ints(1)?
        .and_then(|v| v.first().copied())
        .unwrap_or(0);
    let upper = args.attr_i("upper", 1) != 0;
    let (rows, cols) = (x.dim(x.rank() - 2)?, x.dim(x.rank() - 1)?);
    let mask: Vec<u8> = (0..rows * cols)
        .map(|p| {
            let d = (p % cols) as i64 - (p / cols) as i64;
            u8::from(if upper { d >= k } else { d <= k })
        })
        .collect();
    let mask = Tensor::from_vec(mask, (rows, cols), x.device())?.broadcast_as(x.dims())?;
    let zeros = x.zeros_like()?;
    Ok(vec![mask.where_cond(x, &zeros)?])
}
