//! The canonical description of one weight tensor (schemes.md §0.1, §0.2, §0.4, §0.5).

use crate::activation::Activation;
use crate::error::SchemeError;

/// What kind of layer owns the weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    /// Gemm / MatMul: a plain matrix, `kernel` is empty.
    Linear,
    Conv,
    /// Filled in the same canonical forward layout as [`LayerKind::Conv`]; the caller converts
    /// to ONNX's `(C_in, C_out/g, k…)` storage.
    ConvTranspose,
}

/// Where a layer sits in a residual branch (a path from one input of an `Add` to the other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BranchPosition {
    /// First weight layer of a branch with at least two.
    First,
    /// Neither first nor last.
    Inner,
    /// Last weight layer of a branch with at least two.
    Last,
    /// The only weight layer of its branch (it is also the last).
    Only,
}

impl BranchPosition {
    /// The last weight layer of its branch (zeroed by Fixup, `IDIZ_ε` in IDInit).
    pub fn is_last(self) -> bool {
        matches!(self, BranchPosition::Last | BranchPosition::Only)
    }
}

/// A layer's residual role and the network-wide counts Fixup needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResidualRole {
    pub position: BranchPosition,
    /// `m`: weight layers in this branch.
    pub branch_layers: usize,
    /// `L`: residual branches in the whole network.
    pub num_branches: usize,
}

/// Position in a plain chain of layers separated by ReLUs (relu-share, §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainPosition {
    /// First layer: its input is not mirrored.
    Input,
    /// Input and output mirrored.
    Hidden,
    /// Linear head: mirrored input, plain output.
    Output,
}

/// One weight tensor in canonical forward-matrix form (schemes.md §0.1).
///
/// The weight a scheme returns has the layout `[groups·n_out][n_in][k1]…[kd]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    pub kind: LayerKind,
    /// Convolution groups (1 for linear layers).
    pub groups: usize,
    /// Output units per group (rows of the forward matrix).
    pub n_out: usize,
    /// Input units per group (columns of the forward matrix at one tap).
    pub n_in: usize,
    /// Spatial kernel size per axis; empty for linear layers.
    pub kernel: Vec<usize>,
    /// The tap mapping output pixel p to input pixel p, per spatial axis (§0.4);
    /// `None` when no tap gives the identity (strided, VALID with even k, …).
    pub delta_tap: Option<Vec<usize>>,
    /// Fan-in in PyTorch's convention (see [`torch_fans_linear`] and friends).
    pub fan_in: usize,
    /// Fan-out in PyTorch's convention.
    pub fan_out: usize,
    /// The activation that consumes the output.
    pub activation: Activation,
    /// Residual-branch role, when the layer is inside a residual branch.
    pub residual: Option<ResidualRole>,
    /// Position in a plain ReLU chain, when the network is one.
    pub chain: Option<ChainPosition>,
    /// The network's final weight layer (classifier / head): Fixup zeroes it.
    pub network_output: bool,
    pub has_bias: bool,
}

/// PyTorch fans of a 2-D weight stored `(out, in)`: `(fan_in, fan_out) = (in, out)`.
pub fn torch_fans_linear(n_out: usize, n_in: usize) -> (usize, usize) {
    (n_in, n_out)
}

/// PyTorch fans of a `Conv` weight `(C_out, C_in/g, k…)`: `fan_in = (C_in/g)·Πk`,
/// `fan_out = C_out·Πk` (PyTorch does not divide by the groups).
pub fn torch_fans_conv(c_out: usize, c_in_per_group: usize, kernel: &[usize]) -> (usize, usize) {
    let r: usize = kernel.iter().product();
    (c_in_per_group * r, c_out * r)
}

/// PyTorch fans of a `ConvTranspose` weight stored `(C_in, C_out/g, k…)`: the tensor axes,
/// not the data flow: `fan_in = (C_out/g)·Πk`, `fan_out = C_in·Πk`.
pub fn torch_fans_conv_transpose(
    c_in: usize,
    c_out_per_group: usize,
    kernel: &[usize],
) -> (usize, usize) {
    let r: usize = kernel.iter().product();
    (c_out_per_group * r, c_in * r)
}

impl LayerSpec {
    /// A dense linear layer `y = W x` with `W` of shape `(n_out, n_in)`; no activation,
    /// no residual role, with bias.
    pub fn linear(n_out: usize, n_in: usize) -> Self {
        let (fan_in, fan_out) = torch_fans_linear(n_out, n_in);
        LayerSpec {
            kind: LayerKind::Linear,
            groups: 1,
            n_out,
            n_in,
            kernel: Vec::new(),
            delta_tap: None,
            fan_in,
            fan_out,
            activation: Activation::Linear,
            residual: None,
            chain: None,
            network_output: false,
            has_bias: true,
        }
    }

    /// A stride-1 convolution with `c_out`/`c_in` **total** channels, "same" padding: the
    /// delta tap is `(k−1)//2` per axis (§0.4).
    pub fn conv(c_out: usize, c_in: usize, kernel: &[usize], groups: usize) -> Self {
        let g = groups.max(1);
        let (fan_in, fan_out) = torch_fans_conv(c_out, c_in / g, kernel);
        LayerSpec {
            kind: LayerKind::Conv,
            groups: g,
            kernel: kernel.to_vec(),
            delta_tap: Some(kernel.iter().map(|&k| k.saturating_sub(1) / 2).collect()),
            fan_in,
            fan_out,
            ..LayerSpec::linear(c_out / g, c_in / g)
        }
    }

    /// A stride-1 transposed convolution with `c_in`/`c_out` total channels (data flow),
    /// PyTorch fans of its `(C_in, C_out/g, k…)` storage.
    pub fn conv_transpose(c_in: usize, c_out: usize, kernel: &[usize], groups: usize) -> Self {
        let g = groups.max(1);
        let (fan_in, fan_out) = torch_fans_conv_transpose(c_in, c_out / g, kernel);
        LayerSpec {
            kind: LayerKind::ConvTranspose,
            fan_in,
            fan_out,
            ..LayerSpec::conv(c_out, c_in, kernel, groups)
        }
    }

    /// Sets the activation that follows the layer.
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Sets the residual role.
    pub fn with_residual(mut self, role: ResidualRole) -> Self {
        self.residual = Some(role);
        self
    }

    /// Sets the chain position.
    pub fn with_chain(mut self, position: ChainPosition) -> Self {
        self.chain = Some(position);
        self
    }

    /// Marks the layer as the network's final weight layer.
    pub fn as_network_output(mut self) -> Self {
        self.network_output = true;
        self
    }

    /// Sets whether the layer has a bias.
    pub fn with_bias(mut self, has_bias: bool) -> Self {
        self.has_bias = has_bias;
        self
    }

    /// Number of kernel taps `Πk` (1 for linear layers).
    pub fn taps(&self) -> usize {
        self.kernel.iter().product()
    }

    /// Number of weight elements `groups·n_out·n_in·Πk`.
    pub fn numel(&self) -> usize {
        self.groups * self.n_out * self.n_in * self.taps()
    }

    /// Number of bias elements `groups·n_out`.
    pub fn bias_len(&self) -> usize {
        self.groups * self.n_out
    }

    /// Canonical shape `[groups·n_out, n_in, k…]` for messages and tests.
    pub fn shape(&self) -> Vec<usize> {
        let mut s = vec![self.groups * self.n_out, self.n_in];
        s.extend_from_slice(&self.kernel);
        s
    }

    /// Flat index of weight element (group, out, in, tap) in the canonical layout.
    pub fn index(&self, group: usize, out: usize, inp: usize, tap: usize) -> usize {
        ((group * self.n_out + out) * self.n_in + inp) * self.taps() + tap
    }

    /// Flat index of the delta tap within one kernel, or `None` when no tap gives the
    /// identity. Linear layers have the single tap 0.
    pub fn delta_tap_index(&self) -> Option<usize> {
        if self.kernel.is_empty() {
            return Some(0);
        }
        let tap = self.delta_tap.as_ref()?;
        let mut idx = 0;
        for (&t, &k) in tap.iter().zip(&self.kernel) {
            idx = idx * k + t;
        }
        Some(idx)
    }

    /// The delta tap, falling back to `(k−1)//2` per axis with a note when none is known.
    pub fn delta_tap_or_centre(&self, notes: &mut Vec<String>) -> usize {
        match self.delta_tap_index() {
            Some(t) => t,
            None => {
                notes.push(
                    "delta tap: no tap gives the identity for this conv (strided or unpadded); \
                     using the centre tap (k-1)//2"
                        .to_string(),
                );
                let mut idx = 0;
                for &k in &self.kernel {
                    idx = idx * k + k.saturating_sub(1) / 2;
                }
                idx
            }
        }
    }

    /// Checks the description for consistency; `scheme` names the caller in the error.
    pub fn validate(&self, scheme: &'static str) -> Result<(), SchemeError> {
        let err = |reason: String| SchemeError::Shape {
            scheme,
            shape: format!("{:?} (groups {})", self.shape(), self.groups),
            reason,
        };
        if self.groups == 0 {
            return Err(err("groups must be at least 1".into()));
        }
        match self.kind {
            LayerKind::Linear if !self.kernel.is_empty() => {
                return Err(err("a linear layer has no kernel dims".into()));
            }
            LayerKind::Conv | LayerKind::ConvTranspose if self.kernel.is_empty() => {
                return Err(err("a convolution needs kernel dims".into()));
            }
            _ => {}
        }
        if let Some(tap) = &self.delta_tap {
            if tap.len() != self.kernel.len() && !self.kernel.is_empty() {
                return Err(err(format!(
                    "delta tap {:?} has {} axes, the kernel {}",
                    tap,
                    tap.len(),
                    self.kernel.len()
                )));
            }
            if tap.iter().zip(&self.kernel).any(|(&t, &k)| t >= k) {
                return Err(err(format!("delta tap {tap:?} outside the kernel")));
            }
        }
        if self
            .groups
            .checked_mul(self.n_out)
            .and_then(|x| x.checked_mul(self.n_in))
            .and_then(|x| x.checked_mul(self.kernel.iter().product()))
            .is_none()
        {
            return Err(err("element count overflows usize".into()));
        }
        Ok(())
    }
}

/// A normalization layer's affine parameters (BatchNorm / LayerNorm γ, β).
#[derive(Debug, Clone, PartialEq)]
pub struct NormSpec {
    /// Number of γ (and β) entries.
    pub channels: usize,
    /// The norm directly follows the last weight layer of a residual branch.
    pub after_branch_last: bool,
}

/// What to do with norm layers; independent of the weight scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NormOptions {
    /// γ = 0 (and β = 0) for norms that end a residual branch (Goyal et al.'s
    /// "zero-init last γ"); off by default.
    pub zero_init_last_gamma: bool,
    /// Reset every other norm to γ = 1, β = 0; off by default (norms are left as they are).
    pub reset: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_fans_follow_pytorch() {
        assert_eq!(torch_fans_linear(10, 20), (20, 10));
        // Conv2d(8, 16, 3, groups=2): weight (16, 4, 3, 3)
        assert_eq!(torch_fans_conv(16, 4, &[3, 3]), (36, 144));
        // ConvTranspose2d(8, 16, 3, groups=2): weight (8, 8, 3, 3)
        assert_eq!(torch_fans_conv_transpose(8, 8, &[3, 3]), (72, 72));
        let s = LayerSpec::conv(16, 8, &[3, 3], 2);
        assert_eq!((s.n_out, s.n_in, s.fan_in, s.fan_out), (8, 4, 36, 144));
        assert_eq!(s.delta_tap_index(), Some(4));
        assert_eq!(s.numel(), 16 * 4 * 9);
    }

    #[test]
    fn validate_rejects_bad_specs() {
        let mut s = LayerSpec::conv(4, 4, &[3, 3], 1);
        s.delta_tap = Some(vec![3, 0]);
        assert!(s.validate("he").is_err());
        let mut s = LayerSpec::linear(3, 3);
        s.groups = 0;
        assert!(s.validate("he").unwrap_err().to_string().contains("groups"));
        assert!(LayerSpec::linear(0, 5).validate("he").is_ok());
    }
}
