//! The op table: what each ONNX op means, in one place.
//!
//! Every op reinit knows is one line of [`op_table!`] below: its domain, its
//! name (the enum variant) and its [`OpClass`]. The analysis reads a node's op
//! once ([`Op::parse`]) and decides everything from the class — which nodes are
//! layers, norms or activations, what the activation search looks through,
//! what keeps relu-share's mirrored pairing — and the candle executor keys its
//! kernel registry by the same [`Op`] (`reinit-candle/src/ops/`), so an op
//! without a line here can neither be analysed nor run.
//!
//! Adding an op: a line here; its kernel in the executor's family file
//! (`reinit-candle/src/ops/<family>.rs`, registered by its `register`
//! function); a gradient case in `reinit-candle/src/ops/gradcheck.rs`.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::types::NormKind;

/// The ONNX domain an op belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// The default domain (`""` or `ai.onnx`).
    Onnx,
    /// onnxruntime's contrib ops (`com.microsoft`).
    Microsoft,
}

impl Domain {
    /// The domain as a node spells it (`""` for the default domain).
    pub fn name(self) -> &'static str {
        match self {
            Domain::Onnx => "",
            Domain::Microsoft => "com.microsoft",
        }
    }

    /// `""` and `ai.onnx` are the default domain.
    pub fn parse(domain: &str) -> Option<Domain> {
        match domain {
            "" | "ai.onnx" => Some(Domain::Onnx),
            "com.microsoft" => Some(Domain::Microsoft),
            _ => None,
        }
    }
}

/// Which weighted computation a layer op performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerOp {
    /// `Conv`: weight `(C_out, C_in/g, k…)` at input 1, bias at input 2.
    Conv,
    /// `ConvTranspose`: weight `(C_in, C_out/g, k…)` at input 1, bias at input 2.
    ConvTranspose,
    /// `Gemm`: either operand may be the weight (`transA`/`transB`, `alpha`), bias at input 2.
    Gemm,
    /// `MatMul`: either operand may be the weight; a bias is a following `Add`.
    MatMul,
}

/// Elementwise binary (or n-ary) arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    /// n-ary `Sum`: always a join, never a bias.
    Sum,
}

/// What an op means to the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpClass {
    /// A weight layer when its weight operand is a constant.
    Layer(LayerOp),
    /// `Gather`: an embedding when the table is a constant and the indices data.
    Lookup,
    Norm(NormKind),
    /// A nonlinearity with a gain of its own (ReLU, tanh, GELU …): ends the
    /// activation search with a named [`crate::Activation`].
    Activation,
    /// Any other elementwise nonlinearity: [`crate::Activation::Other`].
    Nonlinear,
    /// Add/Sub/Mul/Div: a bias or scale when the other operand is constant,
    /// a join of two data paths otherwise.
    Arithmetic(Arith),
    /// Combines several data paths (`Concat`, `Max`, `Mean` …).
    Join,
    /// The value passes unchanged (`Identity`, `Dropout` off, `Cast`).
    PassThrough,
    /// Moves values without changing them (`Reshape`, `Transpose`, `Flatten` …).
    Layout,
    /// Spatial resampling: pooling, padding, resizing.
    Resample,
    /// A reduction the activation search looks through (mean, sum, max, min).
    Reduce,
    /// A product of two activations (`Einsum`): no weight, stops the search.
    Contraction,
    /// Reads only its input's shape (`Shape`, `Size`): never a data consumer.
    Shape,
    /// Produces a constant (`Constant`, `ConstantOfShape`, `Range`).
    Constant,
    /// Indexing and data selection (`Slice`, `Where`, `TopK`, scatters …).
    Index,
    /// Comparisons, logic and integer arithmetic (masks, shape maths).
    Logic,
    /// Runs subgraphs (`If`, `Loop`, `Scan`).
    Control,
    /// Quantization (`QuantizeLinear`, `DequantizeLinear`).
    Quantize,
}

/// One line of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpDef {
    pub op: Op,
    pub domain: Domain,
    /// The ONNX op type.
    pub name: &'static str,
    pub class: OpClass,
    /// Between two chain layers, this op keeps relu-share's mirrored pairing
    /// (Burkholz & Dubatovka): the mirrored units stay paired through it.
    pub keeps_pairing: bool,
}

macro_rules! op_table {
    ($($domain:ident $variant:ident $(= $name:literal)? => $class:expr $(, $flag:ident)?;)*) => {
        /// Every op reinit knows (see the module docs).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Op {
            $($variant,)*
        }

        /// The table, in [`Op`] order.
        pub static OPS: &[OpDef] = &[
            $(OpDef {
                op: Op::$variant,
                domain: Domain::$domain,
                name: op_table!(@name $variant $($name)?),
                class: $class,
                keeps_pairing: op_table!(@flag $($flag)?),
            },)*
        ];
    };
    (@name $variant:ident) => { stringify!($variant) };
    (@name $variant:ident $name:literal) => { $name };
    (@flag) => { false };
    (@flag pairing) => { true };
}

use Arith::*;
use OpClass::*;

op_table! {
    Onnx Conv => Layer(LayerOp::Conv);
    Onnx ConvTranspose => Layer(LayerOp::ConvTranspose);
    Onnx Gemm => Layer(LayerOp::Gemm);
    Onnx MatMul => Layer(LayerOp::MatMul);
    Onnx Gather => Lookup;

    Onnx BatchNormalization => Norm(NormKind::BatchNormalization);
    Onnx LayerNormalization => Norm(NormKind::LayerNormalization);
    Onnx GroupNormalization => Norm(NormKind::GroupNormalization);
    Onnx InstanceNormalization => Norm(NormKind::InstanceNormalization);

    Onnx Relu => Activation, pairing;
    Onnx LeakyRelu => Activation;
    Onnx PRelu => Activation;
    Onnx Elu => Activation;
    Onnx Selu => Activation;
    Onnx Sigmoid => Activation;
    Onnx HardSigmoid => Activation;
    Onnx Tanh => Activation;
    Onnx Softplus => Activation;
    Onnx Gelu => Activation;
    Onnx HardSwish => Activation;
    Onnx Softmax => Activation;
    Onnx Clip => Activation;

    Onnx Mish => Nonlinear;
    Onnx Celu => Nonlinear;
    Onnx ThresholdedRelu => Nonlinear;
    Onnx LogSoftmax => Nonlinear;
    Onnx Softsign => Nonlinear;
    Onnx Erf => Nonlinear;
    Onnx Exp => Nonlinear;
    Onnx Log => Nonlinear;
    Onnx Sin => Nonlinear;
    Onnx Cos => Nonlinear;
    Onnx Abs => Nonlinear;
    Onnx Sqrt => Nonlinear;
    Onnx Pow => Nonlinear;
    Onnx Sign => Nonlinear;
    Onnx Shrink => Nonlinear;
    Onnx Hardmax => Nonlinear;
    Onnx Reciprocal => Nonlinear;
    Onnx Neg => Nonlinear;
    Onnx Floor => Nonlinear;
    Onnx Ceil => Nonlinear;
    Onnx Round => Nonlinear;
    Onnx ReduceProd => Nonlinear;
    Onnx ReduceL2 => Nonlinear;
    Onnx ReduceSumSquare => Nonlinear;
    Onnx LRN => Nonlinear;

    Onnx Add => Arithmetic(Add);
    Onnx Sub => Arithmetic(Sub);
    Onnx Mul => Arithmetic(Mul);
    Onnx Div => Arithmetic(Div);
    Onnx Sum => Arithmetic(Sum);

    Onnx Mean => Join;
    Onnx Max => Join;
    Onnx Min => Join;
    Onnx Concat => Join;

    Onnx Identity => PassThrough, pairing;
    Onnx Dropout => PassThrough, pairing;
    Onnx Cast => PassThrough, pairing;
    Onnx CastLike => PassThrough, pairing;

    Onnx Reshape => Layout, pairing;
    Onnx Flatten => Layout, pairing;
    Onnx Squeeze => Layout, pairing;
    Onnx Unsqueeze => Layout, pairing;
    Onnx Transpose => Layout;
    Onnx DepthToSpace => Layout;
    Onnx SpaceToDepth => Layout;

    Onnx AveragePool => Resample, pairing;
    Onnx GlobalAveragePool => Resample, pairing;
    Onnx MaxPool => Resample;
    Onnx GlobalMaxPool => Resample;
    Onnx LpPool => Resample;
    Onnx GlobalLpPool => Resample;
    Onnx Pad => Resample;
    Onnx Resize => Resample;
    Onnx Upsample => Resample;

    Onnx ReduceMean => Reduce;
    Onnx ReduceSum => Reduce;
    Onnx ReduceMax => Reduce;
    Onnx ReduceMin => Reduce;

    Onnx Einsum => Contraction;

    Onnx Shape => Shape;
    Onnx Size => Shape;
    Onnx Constant => Constant;
    Onnx ConstantOfShape => Constant;
    Onnx Range => Constant;

    Onnx GatherElements => Index;
    Onnx GatherND => Index;
    Onnx Split => Index;
    Onnx Slice => Index;
    Onnx Expand => Index;
    Onnx Tile => Index;
    Onnx Where => Index;
    Onnx ArgMax => Index;
    Onnx ArgMin => Index;
    Onnx TopK => Index;
    Onnx NonZero => Index;
    Onnx ScatterND => Index;
    Onnx ScatterElements => Index;
    Onnx Trilu => Index;
    Onnx CumSum => Index;
    Onnx OneHot => Index;

    Onnx Equal => Logic;
    Onnx Less => Logic;
    Onnx Greater => Logic;
    Onnx LessOrEqual => Logic;
    Onnx GreaterOrEqual => Logic;
    Onnx Not => Logic;
    Onnx And => Logic;
    Onnx Or => Logic;
    Onnx Xor => Logic;
    Onnx IsNaN => Logic;
    Onnx IsInf => Logic;
    Onnx Mod => Logic;

    Onnx If => Control;
    Onnx Loop => Control;
    Onnx Scan => Control;

    Onnx QuantizeLinear => Quantize;
    Onnx DequantizeLinear => Quantize;

    // onnxruntime contrib ops: a layer with its activation fused in
    // (`activation`, `activation_params` attributes).
    Microsoft FusedConv => Layer(LayerOp::Conv);
    Microsoft FusedGemm => Layer(LayerOp::Gemm);
    // onnxruntime's transformer fusions: opaque to the analysis (no layer is
    // read out of them), run by the executor
    Microsoft MsGelu = "Gelu" => Nonlinear;
    Microsoft BiasGelu => Nonlinear;
    Microsoft FastGelu => Nonlinear;
    Microsoft QuickGelu => Nonlinear;
    Microsoft BiasAdd => Join;
    Microsoft SkipLayerNormalization => Join;
    Microsoft SkipSimplifiedLayerNormalization => Join;
    Microsoft EmbedLayerNormalization => Index;
    Microsoft Attention => Contraction;
    Microsoft MultiHeadAttention => Contraction;
}

impl Op {
    /// The op a node of `domain` and `op_type` runs; `None` outside the table.
    pub fn parse(domain: &str, op_type: &str) -> Option<Op> {
        static INDEX: OnceLock<HashMap<(Domain, &'static str), Op>> = OnceLock::new();
        let index = INDEX.get_or_init(|| OPS.iter().map(|d| ((d.domain, d.name), d.op)).collect());
        index.get(&(Domain::parse(domain)?, op_type)).copied()
    }

    pub fn def(self) -> &'static OpDef {
        &OPS[self as usize]
    }

    /// The ONNX op type (`Conv`, `BatchNormalization` …).
    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn domain(self) -> Domain {
        self.def().domain
    }

    pub fn class(self) -> OpClass {
        self.def().class
    }

    /// `domain::Name` outside the default domain, `Name` in it.
    pub fn qualified_name(self) -> String {
        match self.domain() {
            Domain::Onnx => self.name().to_string(),
            d => format!("{}::{}", d.name(), self.name()),
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the activation search after a layer ended without a nonlinearity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// A residual join: the layer ends a branch or a projection shortcut.
    ResidualAdd,
    /// A graph output.
    Output,
    /// Nothing reads the value.
    Unused,
    /// The value feeds several nodes (and is not a known decomposition).
    Fanout,
    /// The next weight layer.
    Layer,
    /// An Add/Sub/Sum of two data paths.
    Add,
    /// A Mul/Div of two data paths.
    Mul,
    /// A product of two activations (MatMul/Gemm without a constant weight, Einsum).
    MatMul,
    /// An op the search does not look through.
    Op(Op),
    /// An op outside the table (lower-case op type, `domain::` prefixed outside
    /// the default domain).
    Unknown(String),
    /// More than 64 ops without an answer.
    TooDeep,
}

impl StopReason {
    /// `residual_add`, `output`, `unused`, `fanout`, `layer`, `add`, `mul`,
    /// `matmul`, `too_deep`, or the lower-case op type.
    pub fn name(&self) -> String {
        match self {
            StopReason::ResidualAdd => "residual_add".into(),
            StopReason::Output => "output".into(),
            StopReason::Unused => "unused".into(),
            StopReason::Fanout => "fanout".into(),
            StopReason::Layer => "layer".into(),
            StopReason::Add => "add".into(),
            StopReason::Mul => "mul".into(),
            StopReason::MatMul => "matmul".into(),
            StopReason::TooDeep => "too_deep".into(),
            StopReason::Op(op) => op.name().to_lowercase(),
            StopReason::Unknown(op) => op.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_parses_back_to_itself() {
        for (i, def) in OPS.iter().enumerate() {
            assert_eq!(def.op as usize, i, "{}", def.name);
            assert_eq!(Op::parse(def.domain.name(), def.name), Some(def.op));
        }
        assert_eq!(Op::parse("ai.onnx", "Conv"), Some(Op::Conv));
        assert_eq!(Op::parse("", "conv"), None);
        assert_eq!(Op::parse("custom.domain", "Conv"), None);
    }

    #[test]
    fn names_are_unique_per_domain() {
        let mut seen = std::collections::HashSet::new();
        for def in OPS {
            assert!(seen.insert((def.domain, def.name)), "{} twice", def.name);
        }
    }

    #[test]
    fn stop_reasons_keep_their_json_names() {
        assert_eq!(StopReason::Op(Op::Concat).name(), "concat");
        assert_eq!(StopReason::ResidualAdd.name(), "residual_add");
        assert_eq!(StopReason::Unknown("weird".into()).name(), "weird");
    }
}
