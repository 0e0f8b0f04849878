//! Conversions between the stored ONNX layout of a weight and the canonical
//! forward-matrix layout `[groups·n_out][n_in][k…]` (PyTorch `out × in × k`,
//! schemes.md §0.1), and the delta-tap rule of §0.4.

use crate::types::{Layer, OperandLayout, Transform};

impl Layer {
    /// Canonical dims: `[groups·n_out, n_in, k…]`.
    pub fn canonical_shape(&self) -> Vec<usize> {
        let mut dims = vec![self.groups * self.n_out, self.n_in];
        dims.extend_from_slice(&self.kernel);
        dims
    }

    /// Number of values in the weight.
    pub fn numel(&self) -> usize {
        self.stored_shape.iter().product()
    }

    /// Values in stored order → canonical order.
    ///
    /// # Panics
    /// When `stored.len()` is not the weight's element count (a caller bug).
    pub fn stored_to_canonical(&self, stored: &[f64]) -> Vec<f64> {
        assert_eq!(stored.len(), self.numel(), "{}: wrong value count", self.weight_name);
        let mut dims = self.stored_shape.clone();
        let mut data = stored.to_vec();
        for step in &self.layout.steps {
            match step {
                Transform::Transpose(perm) => {
                    data = permute(&data, &dims, perm);
                    dims = perm.iter().map(|&p| dims[p]).collect();
                }
                Transform::Reshape(to) => dims = to.clone(),
            }
        }
        self.operand_to_canonical(&data, &dims)
    }

    /// Values in canonical order → stored order (inverse of [`Layer::stored_to_canonical`]).
    ///
    /// # Panics
    /// When `canonical.len()` is not the weight's element count (a caller bug).
    pub fn canonical_to_stored(&self, canonical: &[f64]) -> Vec<f64> {
        assert_eq!(canonical.len(), self.numel(), "{}: wrong value count", self.weight_name);
        // Dims before each step, so every step can be undone in reverse.
        let mut before = Vec::with_capacity(self.layout.steps.len());
        let mut dims = self.stored_shape.clone();
        for step in &self.layout.steps {
            before.push(dims.clone());
            dims = match step {
                Transform::Transpose(perm) => perm.iter().map(|&p| dims[p]).collect(),
                Transform::Reshape(to) => to.clone(),
            };
        }
        let mut data = self.canonical_to_operand(canonical, &dims);
        for (step, dims_before) in self.layout.steps.iter().zip(before).rev() {
            if let Transform::Transpose(perm) = step {
                let after: Vec<usize> = perm.iter().map(|&p| dims_before[p]).collect();
                data = permute(&data, &after, &inverse(perm));
            }
        }
        data
    }

    fn operand_to_canonical(&self, data: &[f64], dims: &[usize]) -> Vec<f64> {
        match self.layout.operand {
            OperandLayout::OutIn | OperandLayout::Conv => data.to_vec(),
            OperandLayout::InOut => permute(data, dims, &[1, 0]),
            OperandLayout::ConvTranspose => {
                let (g, cin_g, cout_g, taps) = self.ct_dims();
                let mut out = vec![0.0; data.len()];
                for gi in 0..g {
                    for i in 0..cin_g {
                        for o in 0..cout_g {
                            let src = ((gi * cin_g + i) * cout_g + o) * taps;
                            let dst = ((gi * cout_g + o) * cin_g + i) * taps;
                            out[dst..dst + taps].copy_from_slice(&data[src..src + taps]);
                        }
                    }
                }
                out
            }
        }
    }

    fn canonical_to_operand(&self, data: &[f64], operand_dims: &[usize]) -> Vec<f64> {
        match self.layout.operand {
            OperandLayout::OutIn | OperandLayout::Conv => data.to_vec(),
            OperandLayout::InOut => permute(data, &[operand_dims[1], operand_dims[0]], &[1, 0]),
            OperandLayout::ConvTranspose => {
                let (g, cin_g, cout_g, taps) = self.ct_dims();
                let mut out = vec![0.0; data.len()];
                for gi in 0..g {
                    for i in 0..cin_g {
                        for o in 0..cout_g {
                            let dst = ((gi * cin_g + i) * cout_g + o) * taps;
                            let src = ((gi * cout_g + o) * cin_g + i) * taps;
                            out[dst..dst + taps].copy_from_slice(&data[src..src + taps]);
                        }
                    }
                }
                out
            }
        }
    }

    /// (groups, C_in/g, C_out/g, Πk) of a ConvTranspose.
    fn ct_dims(&self) -> (usize, usize, usize, usize) {
        (self.groups, self.n_in, self.n_out, self.kernel.iter().product())
    }
}

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// Row-major transpose: `out.dims[i] = dims[perm[i]]`.
pub(crate) fn permute(data: &[f64], dims: &[usize], perm: &[usize]) -> Vec<f64> {
    let rank = dims.len();
    let mut in_strides = vec![1usize; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * dims[i + 1];
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = Vec::with_capacity(data.len());
    let mut index = vec![0usize; rank];
    for _ in 0..data.len() {
        let offset: usize = index.iter().zip(&strides).map(|(i, s)| i * s).sum();
        out.push(data[offset]);
        for axis in (0..rank).rev() {
            index[axis] += 1;
            if index[axis] < out_dims[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
    out
}

/// The tap that maps output pixel `p` to input pixel `p` (schemes.md §0.4),
/// per spatial axis: `pad_begin / dilation`, when every stride is 1, the
/// padding keeps the size (`begin + end = d·(k−1)`) and the division is exact.
/// `None` otherwise (the scheme falls back to its own convention).
pub fn delta_tap(
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &[(usize, usize)],
) -> Option<Vec<usize>> {
    if strides.iter().any(|&s| s != 1) {
        return None;
    }
    kernel
        .iter()
        .enumerate()
        .map(|(axis, &k)| {
            let d = dilations.get(axis).copied().unwrap_or(1).max(1);
            let (begin, end) = pads.get(axis).copied().unwrap_or((0, 0));
            let keeps_size = begin + end == d * k.saturating_sub(1);
            (keeps_size && begin % d == 0 && begin / d < k).then_some(begin / d)
        })
        .collect()
}

/// `(begin, end)` padding for `auto_pad` SAME_* at stride `s` when the input
/// size is a multiple of the stride (exact for stride 1).
pub(crate) fn same_pads(k: usize, s: usize, d: usize, upper: bool) -> (usize, usize) {
    let total = (d * k.saturating_sub(1) + 1).saturating_sub(s.max(1));
    if upper {
        (total / 2, total - total / 2)
    } else {
        (total - total / 2, total / 2)
    }
}
