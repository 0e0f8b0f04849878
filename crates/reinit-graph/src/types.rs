//! The typed result of [`crate::analyze`]: layers, residual blocks, norms,
//! embeddings and what was skipped. Everything downstream (schemes facade,
//! candle trainer, `reinit inspect`) works on these types, never on protobuf.

use reinit_onnx::TensorId;

use crate::ops::{Op, StopReason};

/// Everything the analysis found in one model.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// Weight layers in graph (topological) order; one entry per weight *use*,
    /// so a shared weight appears once per consuming node.
    pub layers: Vec<Layer>,
    pub residual_blocks: Vec<ResidualBlock>,
    pub embeddings: Vec<Embedding>,
    pub norms: Vec<Norm>,
    /// Floating-point tensors that look like parameters but that no scheme may
    /// touch as a layer weight (quantised, batched, unknown role), with the reason.
    pub skipped: Vec<Skipped>,
    pub warnings: Vec<String>,
    /// Op types the analysis does not understand (sorted, once each). They never
    /// make the analysis fail; activation search stops at them.
    pub unknown_ops: Vec<String>,
    /// A Conv+BatchNormalization fused export was detected (BN folded into the
    /// conv weight and bias; see [`Layer::bn_folded`]).
    pub bn_fused: bool,
    /// Tensors used by more than one layer or embedding: a scheme must give
    /// them one value.
    pub shared_weights: Vec<SharedWeight>,
    /// Feed-forward chain view for schemes that pair consecutive layers
    /// (Burkholz & Dubatovka mirrored init). `Err` says why the model is not one.
    pub chain: Result<Chain, String>,
}

/// What kind of weight layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerKind {
    Linear,
    Conv,
    ConvTranspose,
}

impl LayerKind {
    /// `linear` | `conv` | `conv_transpose`.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Linear => "linear",
            LayerKind::Conv => "conv",
            LayerKind::ConvTranspose => "conv_transpose",
        }
    }
}

/// How the op reads the (possibly transposed/reshaped) tensor it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperandLayout {
    /// `(n_out, n_in)`: Gemm `transB=1`, `MatMul(W, X)`.
    OutIn,
    /// `(n_in, n_out)`: Gemm `transB=0`, `MatMul(X, W)` — the operand is `Mᵀ`.
    InOut,
    /// `(C_out, C_in/g, k…)`.
    Conv,
    /// `(C_in, C_out/g, k…)`.
    ConvTranspose,
}

/// One step between the stored initializer and the operand the op sees.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Transform {
    /// `Transpose(perm)`: `out.dims[i] = in.dims[perm[i]]`.
    Transpose(Vec<usize>),
    /// A `Reshape` to constant dims (data order unchanged).
    Reshape(Vec<usize>),
}

/// Where the weight's values sit in storage relative to the canonical
/// forward-matrix layout (schemes.md §0.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WeightLayout {
    pub operand: OperandLayout,
    /// Steps from the stored tensor to the operand, in graph order
    /// (`Cast`/`Identity` are value-preserving and not listed).
    pub steps: Vec<Transform>,
    /// Shape of the operand the op sees (after `steps`).
    pub operand_shape: Vec<usize>,
}

/// Explicit or automatic padding of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AutoPad {
    #[default]
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// The first nonlinearity after a layer (through bias, BN, reshapes, pooling).
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu {
        alpha: f64,
    },
    PRelu,
    Elu {
        alpha: f64,
    },
    Selu,
    Sigmoid,
    HardSigmoid,
    Tanh,
    Softplus,
    Gelu,
    Silu,
    HardSwish,
    /// `Clip(0, 6)`.
    Relu6,
    /// `Clip(-1, 1)`.
    HardTanh,
    Softmax,
    /// Linear: nothing nonlinear before the next layer, the output, a fan-out,
    /// a MatMul between activations … ([`Layer::stops_at`] says which).
    None,
    /// A residual `Add` is reached before any nonlinearity (the layer ends a
    /// branch or a projection shortcut). Linear for gain purposes.
    ResidualAdd,
    /// Some other op that is not linear (`Clip` with other bounds, `Sin` …),
    /// lower-case op name.
    Other(String),
}

impl Activation {
    /// Lower-case name: `relu`, `leakyrelu`, `gelu`, `relu6`, `none`,
    /// `residual_add`, or the lower-case op name for [`Activation::Other`].
    pub fn name(&self) -> &str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leakyrelu",
            Activation::PRelu => "prelu",
            Activation::Elu { .. } => "elu",
            Activation::Selu => "selu",
            Activation::Sigmoid => "sigmoid",
            Activation::HardSigmoid => "hardsigmoid",
            Activation::Tanh => "tanh",
            Activation::Softplus => "softplus",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::HardSwish => "hardswish",
            Activation::Relu6 => "relu6",
            Activation::HardTanh => "hardtanh",
            Activation::Softmax => "softmax",
            Activation::None => "none",
            Activation::ResidualAdd => "residual_add",
            Activation::Other(op) => op,
        }
    }

    /// True for [`Activation::None`] and [`Activation::ResidualAdd`].
    pub fn is_linear(&self) -> bool {
        matches!(self, Activation::None | Activation::ResidualAdd)
    }
}

/// Role of a layer in a residual block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads the block input (no branch layer before it).
    First,
    Inner,
    /// Its output reaches the `Add` without another branch layer.
    Last,
    /// First and last at once (one-layer branch).
    Only,
    /// A layer of a projection shortcut.
    Shortcut,
}

impl Role {
    /// `first` | `inner` | `last` | `only` | `shortcut`.
    pub fn name(self) -> &'static str {
        match self {
            Role::First => "first",
            Role::Inner => "inner",
            Role::Last => "last",
            Role::Only => "only",
            Role::Shortcut => "shortcut",
        }
    }
}

/// A layer's place in the innermost residual block that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResidualRef {
    /// Index into [`Analysis::residual_blocks`].
    pub block: usize,
    pub role: Role,
}

/// One weight layer (one use of a weight tensor by Gemm/MatMul/Conv/ConvTranspose).
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Name of the consuming node (may be empty in old exports).
    pub node: String,
    /// The consuming op (`Gemm`, `MatMul`, `Conv`, `ConvTranspose`, or another
    /// op of class [`crate::OpClass::Layer`]).
    pub op: Op,
    /// The node's output value (the layer's pre-activation; the probe point of
    /// the executor's signal-propagation measurements).
    pub output: String,
    pub kind: LayerKind,
    pub weight: TensorId,
    pub weight_name: String,
    pub bias: Option<TensorId>,
    pub bias_name: Option<String>,
    /// Dims of the stored initializer.
    pub stored_shape: Vec<usize>,
    pub layout: WeightLayout,
    /// Ops between the initializer and the consumer (`Transpose`, `Cast`, …).
    pub via: Vec<String>,
    pub groups: usize,
    /// Canonical forward matrix **per group**: `n_out × n_in` (× kernel taps).
    pub n_out: usize,
    pub n_in: usize,
    /// Spatial kernel dims (empty for linear layers).
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// `(begin, end)` padding per spatial axis (resolved from `auto_pad` for stride 1).
    pub pads: Vec<(usize, usize)>,
    pub auto_pad: AutoPad,
    /// The kernel tap that maps output pixel p to input pixel p (schemes.md §0.4);
    /// `None` when a stride is not 1 or no tap gives the identity.
    pub delta_tap: Option<Vec<usize>>,
    /// PyTorch `_calculate_fan_in_and_fan_out` of the equivalent parameter (§0.2).
    pub fan_in: usize,
    pub fan_out: usize,
    /// Gemm `alpha` (1 otherwise).
    pub alpha: f64,
    pub activation: Activation,
    /// Why the search ended without a nonlinearity (`None` when one was found).
    pub stops_at: Option<StopReason>,
    /// Ops between the layer and its activation (`BatchNormalization`, `MaxPool`,
    /// `Reshape`, a scale `Mul` …), bias adds excluded.
    pub between: Vec<Op>,
    /// The conv weight/bias hold a folded BatchNormalization (fused export).
    pub bn_folded: bool,
    pub residual: Option<ResidualRef>,
    /// Position of the consuming node in the flattened graph order.
    pub topo_index: usize,
}

/// How a residual block's skip path is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    Identity,
    /// Layer indices of the projection shortcut, in order.
    Projection(Vec<usize>),
}

/// An `Add`/`Sum` whose two inputs reconverge from a common source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidualBlock {
    pub add_node: String,
    /// The value both paths start from.
    pub source: String,
    pub skip: Skip,
    /// Branch layer indices in graph order.
    pub branch: Vec<usize>,
    /// Longest chain of weight layers through the branch (Fixup's m for this block).
    pub depth: usize,
    /// Innermost block whose branch contains this block's `Add`.
    pub nested_in: Option<usize>,
}

/// Which normalization op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NormKind {
    BatchNormalization,
    LayerNormalization,
    GroupNormalization,
    InstanceNormalization,
}

impl NormKind {
    pub fn name(self) -> &'static str {
        match self {
            NormKind::BatchNormalization => "BatchNormalization",
            NormKind::LayerNormalization => "LayerNormalization",
            NormKind::GroupNormalization => "GroupNormalization",
            NormKind::InstanceNormalization => "InstanceNormalization",
        }
    }
}

/// A normalization node and its affine parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Norm {
    pub node: String,
    pub op: NormKind,
    pub scale: Option<TensorId>,
    pub scale_name: Option<String>,
    pub bias: Option<TensorId>,
    pub bias_name: Option<String>,
    /// BatchNormalization's running mean and variance (inputs 3 and 4).
    pub running_mean: Option<TensorId>,
    pub running_var: Option<TensorId>,
    /// Block whose residual branch this norm ends (nothing weighted after it
    /// before the `Add`): the γ that `zero_init_last` zeroes.
    pub ends_residual_branch: Option<usize>,
}

/// A `Gather` on an initializer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedding {
    pub node: String,
    pub weight: TensorId,
    pub weight_name: String,
    pub shape: Vec<usize>,
}

/// A float tensor left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub tensor: TensorId,
    pub name: String,
    pub reason: String,
}

/// A tensor used by several layers/embeddings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedWeight {
    pub weight: TensorId,
    pub name: String,
    /// Consuming node names in graph order.
    pub uses: Vec<String>,
}

/// Position of a layer in a feed-forward chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainPosition {
    Input,
    Hidden,
    Output,
}

/// What lies between one chain layer and the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Only bias adds, ReLU, reshapes/flatten, average pooling, identity/dropout:
    /// mirrored pairing is preserved.
    Elementwise,
    /// Something that breaks mirrored pairing, and why.
    Blocked(String),
}

/// One layer of a feed-forward chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainStep {
    /// Index into [`Analysis::layers`].
    pub layer: usize,
    pub position: ChainPosition,
    /// Link to the next step (`None` for the last one).
    pub next: Option<Link>,
}

/// A plain feed-forward chain of weight layers (no residuals, no branching).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub steps: Vec<ChainStep>,
}

impl Chain {
    /// True when every link is [`Link::Elementwise`].
    pub fn mirrorable(&self) -> bool {
        self.steps
            .iter()
            .all(|s| !matches!(s.next, Some(Link::Blocked(_))))
    }
}

impl ResidualBlock {
    pub fn shortcut(&self) -> &[usize] {
        match &self.skip {
            Skip::Identity => &[],
            Skip::Projection(layers) => layers,
        }
    }
}

impl Analysis {
    /// Fixup's L: the number of residual branches.
    pub fn num_branches(&self) -> usize {
        self.residual_blocks.len()
    }

    /// Fixup's m: the largest branch depth (0 without residual blocks).
    pub fn layers_per_branch(&self) -> usize {
        self.residual_blocks
            .iter()
            .map(|b| b.depth)
            .max()
            .unwrap_or(0)
    }

    /// Layers that use `tensor` (more than one for shared weights).
    pub fn layers_of(&self, tensor: TensorId) -> impl Iterator<Item = (usize, &Layer)> {
        self.layers
            .iter()
            .enumerate()
            .filter(move |(_, l)| l.weight == tensor)
    }
}
