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
        assert_eq!(
            stored.len(),
            self.numel(),
            "{}: wrong value count",
            self.weight_name
        );
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
        assert_eq!(
            canonical.len(),
            self.numel(),
            "{}: wrong value count",
            self.weight_name
        );
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

    /// `(n_out, n_in)` when the weight is stored as the plain transpose of its
    /// canonical matrix (`MatMul(X, W)`, Gemm `transB=0`): a writer can then
    /// emit it from the canonical matrix in bands, without a transposed copy.
    pub fn stored_as_transpose(&self) -> Option<(usize, usize)> {
        let plain = self.layout.steps.is_empty() && self.groups == 1 && self.kernel.is_empty();
        (plain && self.layout.operand == OperandLayout::InOut).then_some((self.n_out, self.n_in))
    }

    /// Whether the weight is stored in its canonical layout (Gemm `transB=1`,
    /// `MatMul(W, X)`, Conv).
    pub fn stored_is_canonical(&self) -> bool {
        matches!(
            self.layout.operand,
            OperandLayout::OutIn | OperandLayout::Conv
        ) && self.layout.steps.is_empty()
    }

    /// [`Layer::canonical_to_stored`] taking the values, without a second copy
    /// where possible: a move when the two layouts coincide, an in-place
    /// transpose for a square plain transpose.
    pub fn canonical_into_stored(&self, mut canonical: Vec<f64>) -> Vec<f64> {
        if self.stored_is_canonical() {
            return canonical;
        }
        match self.stored_as_transpose() {
            Some((n_out, n_in)) if n_out == n_in => {
                transpose_square_in_place(&mut canonical, n_out);
                canonical
            }
            _ => self.canonical_to_stored(&canonical),
        }
    }

    /// A canonical mask in the stored layout: moved when the layouts
    /// coincide, transposed as booleans for a plain transpose, else through
    /// [`Layer::canonical_to_stored`] (as 0/1 values).
    pub fn mask_to_stored(&self, mask: Vec<bool>) -> Vec<bool> {
        if self.stored_is_canonical() {
            return mask;
        }
        if let Some((n_out, n_in)) = self.stored_as_transpose() {
            let mut stored = vec![false; mask.len()];
            for o in 0..n_out {
                for i in 0..n_in {
                    stored[i * n_out + o] = mask[o * n_in + i];
                }
            }
            return stored;
        }
        let as_f64: Vec<f64> = mask.iter().map(|&m| if m { 1.0 } else { 0.0 }).collect();
        drop(mask);
        self.canonical_into_stored(as_f64)
            .iter()
            .map(|&v| v != 0.0)
            .collect()
    }

    fn operand_to_canonical(&self, data: &[f64], dims: &[usize]) -> Vec<f64> {
        match self.layout.operand {
            OperandLayout::OutIn | OperandLayout::Conv => data.to_vec(),
            OperandLayout::InOut => permute(data, dims, &[1, 0]),
            OperandLayout::ConvTranspose => {
                let (g, cin_g, cout_g, taps) = self.ct_dims();
                transpose_tap_blocks(data, g, cin_g, cout_g, taps)
            }
        }
    }

    fn canonical_to_operand(&self, data: &[f64], operand_dims: &[usize]) -> Vec<f64> {
        match self.layout.operand {
            OperandLayout::OutIn | OperandLayout::Conv => data.to_vec(),
            OperandLayout::InOut => permute(data, &[operand_dims[1], operand_dims[0]], &[1, 0]),
            OperandLayout::ConvTranspose => {
                let (g, cin_g, cout_g, taps) = self.ct_dims();
                transpose_tap_blocks(data, g, cout_g, cin_g, taps)
            }
        }
    }

    /// (groups, C_in/g, C_out/g, Πk) of a ConvTranspose.
    fn ct_dims(&self) -> (usize, usize, usize, usize) {
        (
            self.groups,
            self.n_in,
            self.n_out,
            self.kernel.iter().product(),
        )
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
    if let ([rows, cols], [1, 0]) = (dims, perm) {
        return transpose_2d(data, *rows, *cols);
    }
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

/// Per group, the `rows × cols` grid of `taps`-long kernel blocks transposed:
/// a ConvTranspose weight `(C_in, C_out/g, k…)` ↔ canonical `(C_out/g, C_in/g, k…)`
/// (each direction is the other with rows and cols swapped).
fn transpose_tap_blocks(
    data: &[f64],
    groups: usize,
    rows: usize,
    cols: usize,
    taps: usize,
) -> Vec<f64> {
    let mut out = vec![0.0; data.len()];
    for gi in 0..groups {
        for r in 0..rows {
            for c in 0..cols {
                let src = ((gi * rows + r) * cols + c) * taps;
                let dst = ((gi * cols + c) * rows + r) * taps;
                out[dst..dst + taps].copy_from_slice(&data[src..src + taps]);
            }
        }
    }
    out
}

/// A `rows × cols` matrix transposed in cache-sized tiles: the common case
/// (every `MatMul(X, W)` and Gemm `transB=0` weight) of [`permute`], which is
/// an order of magnitude faster this way than per-element index arithmetic.
fn transpose_2d(data: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    const TILE: usize = 32;
    let mut out = vec![0.0; data.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = data[r * cols + c];
                }
            }
        }
    }
    out
}

/// Transposes an `n × n` row-major matrix in place, tile by tile.
fn transpose_square_in_place(a: &mut [f64], n: usize) {
    const TILE: usize = 32;
    for i0 in (0..n).step_by(TILE) {
        for j0 in (i0..n).step_by(TILE) {
            for i in i0..(i0 + TILE).min(n) {
                for j in j0.max(i + 1)..(j0 + TILE).min(n) {
                    a.swap(i * n + j, j * n + i);
                }
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_transpose_in_place_matches_the_definition() {
        for n in [1, 5, 32, 33, 70] {
            let a: Vec<f64> = (0..n * n).map(|v| v as f64).collect();
            let mut t = a.clone();
            transpose_square_in_place(&mut t, n);
            assert!(
                (0..n).all(|i| (0..n).all(|j| t[i * n + j] == a[j * n + i])),
                "n = {n}"
            );
        }
    }
    use crate::types::{Activation, AutoPad, LayerKind, WeightLayout};
    use reinit_onnx::TensorId;

    #[allow(clippy::too_many_arguments)]
    fn layer(
        kind: LayerKind,
        operand: OperandLayout,
        stored: &[usize],
        steps: Vec<Transform>,
        groups: usize,
        n_out: usize,
        n_in: usize,
        kernel: &[usize],
    ) -> Layer {
        let mut operand_shape = stored.to_vec();
        for step in &steps {
            operand_shape = match step {
                Transform::Transpose(p) => p.iter().map(|&i| operand_shape[i]).collect(),
                Transform::Reshape(to) => to.clone(),
            };
        }
        Layer {
            node: "n".into(),
            op: crate::Op::MatMul,
            output: "y".into(),
            kind,
            weight: TensorId(0),
            weight_name: "w".into(),
            bias: None,
            bias_name: None,
            stored_shape: stored.to_vec(),
            layout: WeightLayout {
                operand,
                steps,
                operand_shape,
            },
            via: Vec::new(),
            groups,
            n_out,
            n_in,
            kernel: kernel.to_vec(),
            strides: vec![1; kernel.len()],
            dilations: vec![1; kernel.len()],
            pads: vec![(0, 0); kernel.len()],
            auto_pad: AutoPad::NotSet,
            delta_tap: None,
            fan_in: 0,
            fan_out: 0,
            alpha: 1.0,
            activation: Activation::None,
            stops_at: None,
            between: Vec::new(),
            bn_folded: false,
            residual: None,
            topo_index: 0,
        }
    }

    fn values(n: usize) -> Vec<f64> {
        (0..n).map(|i| (i as f64) * 0.5 - 3.0).collect()
    }

    /// y = M x with M canonical `(n_out, n_in)` row-major.
    fn apply(m: &[f64], n_out: usize, n_in: usize, x: &[f64]) -> Vec<f64> {
        (0..n_out)
            .map(|o| (0..n_in).map(|i| m[o * n_in + i] * x[i]).sum())
            .collect()
    }

    fn all_layouts() -> Vec<Layer> {
        use LayerKind::*;
        use OperandLayout as L;
        vec![
            layer(Linear, L::OutIn, &[4, 3], vec![], 1, 4, 3, &[]),
            layer(Linear, L::InOut, &[3, 4], vec![], 1, 4, 3, &[]),
            // W stored (out, in) reaching MatMul(X, ·) through Transpose.
            layer(
                Linear,
                L::InOut,
                &[4, 3],
                vec![Transform::Transpose(vec![1, 0])],
                1,
                4,
                3,
                &[],
            ),
            // Flat storage reshaped to (in, out).
            layer(
                Linear,
                L::InOut,
                &[12],
                vec![Transform::Reshape(vec![3, 4])],
                1,
                4,
                3,
                &[],
            ),
            layer(Conv, L::Conv, &[6, 2, 3, 3], vec![], 3, 2, 2, &[3, 3]),
            layer(Conv, L::Conv, &[4, 3, 5], vec![], 1, 4, 3, &[5]),
            // ConvTranspose (C_in=6, C_out/g=2, k) with 3 groups: per group 2 in → 2 out.
            layer(
                ConvTranspose,
                L::ConvTranspose,
                &[6, 2, 2, 2],
                vec![],
                3,
                2,
                2,
                &[2, 2],
            ),
            layer(
                ConvTranspose,
                L::ConvTranspose,
                &[4, 3, 3],
                vec![],
                1,
                3,
                4,
                &[3],
            ),
        ]
    }

    #[test]
    fn owned_conversions_agree_with_the_general_one() {
        let mut square = all_layouts();
        square.push(layer(
            LayerKind::Linear,
            OperandLayout::InOut,
            &[40, 40],
            vec![],
            1,
            40,
            40,
            &[],
        ));
        for l in square {
            let canonical = values(l.numel());
            let stored = l.canonical_to_stored(&canonical);
            assert_eq!(
                l.canonical_into_stored(canonical.clone()),
                stored,
                "{:?}",
                l.layout
            );
            // Values are distinct, so a predicate on them marks positions.
            let marked = |v: &f64| (((v + 3.0) * 2.0) as usize).is_multiple_of(3);
            let mask: Vec<bool> = canonical.iter().map(marked).collect();
            let expected: Vec<bool> = stored.iter().map(marked).collect();
            assert_eq!(l.mask_to_stored(mask), expected, "{:?}", l.layout);
        }
    }

    #[test]
    fn round_trip_is_identity_for_every_layout() {
        for l in all_layouts() {
            let stored = values(l.numel());
            let canonical = l.stored_to_canonical(&stored);
            assert_eq!(canonical.len(), stored.len());
            assert_eq!(l.canonical_to_stored(&canonical), stored, "{:?}", l.layout);
            let canonical = values(l.numel());
            assert_eq!(
                l.stored_to_canonical(&l.canonical_to_stored(&canonical)),
                canonical,
                "{:?}",
                l.layout
            );
            let shape = l.canonical_shape();
            assert_eq!(shape.iter().product::<usize>(), l.numel());
        }
    }

    #[test]
    fn gemm_transb0_forward_equals_canonical_product() {
        // Gemm(X, B) with transB=0: y = x · B, B stored (K=3, N=4).
        let l = &all_layouts()[1];
        let stored = values(12);
        let x = [1.0, -2.0, 0.25];
        let onnx: Vec<f64> = (0..4)
            .map(|n| (0..3).map(|k| x[k] * stored[k * 4 + n]).sum())
            .collect();
        let m = l.stored_to_canonical(&stored);
        assert_eq!(apply(&m, 4, 3, &x), onnx);
    }

    #[test]
    fn transpose_fed_matmul_forward_equals_canonical_product() {
        // W (4, 3) → Transpose → MatMul(X, Wᵀ): y = x · Wᵀ = W x.
        let l = &all_layouts()[2];
        let stored = values(12);
        let x = [0.5, 1.5, -1.0];
        let onnx: Vec<f64> = (0..4)
            .map(|o| (0..3).map(|i| stored[o * 3 + i] * x[i]).sum())
            .collect();
        let m = l.stored_to_canonical(&stored);
        assert_eq!(m, stored, "already (out, in)");
        assert_eq!(apply(&m, 4, 3, &x), onnx);
    }

    #[test]
    fn conv_transpose_canonical_is_per_group_transpose_at_each_tap() {
        let l = &all_layouts()[6]; // stored (6, 2, 2, 2), g=3, cin_g=2, cout_g=2
        let stored = values(l.numel());
        let m = l.stored_to_canonical(&stored);
        let taps = 4;
        for g in 0..3 {
            for o in 0..2 {
                for i in 0..2 {
                    for t in 0..taps {
                        let canon = m[((g * 2 + o) * 2 + i) * taps + t];
                        let store = stored[((g * 2 + i) * 2 + o) * taps + t];
                        assert_eq!(canon, store);
                    }
                }
            }
        }
    }

    #[test]
    fn delta_tap_rules() {
        // Odd kernel, symmetric padding: the centre.
        assert_eq!(
            delta_tap(&[3, 3], &[1, 1], &[1, 1], &[(1, 1), (1, 1)]),
            Some(vec![1, 1])
        );
        assert_eq!(delta_tap(&[5], &[1], &[1], &[(2, 2)]), Some(vec![2]));
        // 1×1: tap 0.
        assert_eq!(
            delta_tap(&[1, 1], &[1, 1], &[1, 1], &[(0, 0), (0, 0)]),
            Some(vec![0, 0])
        );
        // Dilation 2, pads 2: tap 2 / 2 = 1.
        assert_eq!(delta_tap(&[3], &[1], &[2], &[(2, 2)]), Some(vec![1]));
        // Even kernel: the padding decides (SAME_UPPER → (k−1)//2, SAME_LOWER → k//2).
        let upper = same_pads(4, 1, 1, true);
        let lower = same_pads(4, 1, 1, false);
        assert_eq!(upper, (1, 2));
        assert_eq!(lower, (2, 1));
        assert_eq!(delta_tap(&[4], &[1], &[1], &[upper]), Some(vec![1]));
        assert_eq!(delta_tap(&[4], &[1], &[1], &[lower]), Some(vec![2]));
        // Stride 2 never gives the identity; neither does VALID padding for k > 1.
        assert_eq!(
            delta_tap(&[3, 3], &[2, 2], &[1, 1], &[(1, 1), (1, 1)]),
            None
        );
        assert_eq!(delta_tap(&[3], &[1], &[1], &[(0, 0)]), None);
        // Dilation 2 with pads 1: not integral.
        assert_eq!(delta_tap(&[3], &[1], &[2], &[(1, 3)]), None);
    }

    #[test]
    fn permute_matches_a_hand_transpose() {
        let data: Vec<f64> = (0..6).map(f64::from).collect(); // [[0,1,2],[3,4,5]]
        assert_eq!(
            permute(&data, &[2, 3], &[1, 0]),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        let cube: Vec<f64> = (0..24).map(f64::from).collect();
        let p = permute(&cube, &[2, 3, 4], &[2, 0, 1]);
        // out[k][i][j] = in[i][j][k]
        assert_eq!(p[(3 * 2 + 1) * 3 + 2], cube[(3 + 2) * 4 + 3]);
        assert_eq!(permute(&p, &[4, 2, 3], &inverse(&[2, 0, 1])), cube);
        // The tiled 2-D path agrees with the general one across tile edges.
        let m: Vec<f64> = (0..70 * 45).map(f64::from).collect();
        let t = permute(&m, &[70, 45], &[1, 0]);
        assert!((0..70).all(|r| (0..45).all(|c| t[c * 70 + r] == m[r * 45 + c])));
        assert_eq!(permute(&t, &[45, 70], &[1, 0]), m);
    }
}
