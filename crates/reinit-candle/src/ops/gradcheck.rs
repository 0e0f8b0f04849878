//! Finite-difference gradient check, in f64, of every registered
//! differentiable op. Loss = Σ_k Σ out_k ⊙ R_k with fixed random R_k; the
//! autograd gradient of each float input is compared with central differences.

use std::cell::RefCell;

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use reinit_onnx::proto::{AttributeProto, NodeProto};

use super::{OpArgs, registry};
use crate::executor::Mode;

/// Ops without a gradient to check: shape computations, comparisons, logic,
/// piecewise-constant functions and integer results.
const NON_DIFFERENTIABLE: &[&str] = &[
    "Shape",
    "Size",
    "Range",
    "ConstantOfShape",
    "Constant",
    "CastLike",
    "Equal",
    "IsNaN",
    "IsInf",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "ArgMax",
    "ArgMin",
];

/// Ops whose gradient is straight-through by design (checked on their own in
/// `quantize_passes_the_gradient_straight_through`).
const STRAIGHT_THROUGH: &[&str] = &["QuantizeLinear"];

#[derive(Clone)]
enum In {
    /// differentiable float, standard normal × scale
    F(Vec<usize>, f64),
    /// differentiable float in [0.5, 2)
    Pos(Vec<usize>),
    /// constant float values
    Val(Vec<f64>, Vec<usize>),
    /// constant float in [0.5, 2) (variances)
    PosConst(Vec<usize>),
    /// integer input
    Ints(Vec<i64>, Vec<usize>),
    /// boolean input
    Bool(Vec<u8>, Vec<usize>),
    None,
}

/// Values, shape, differentiable.
type Values = (Vec<f64>, Vec<usize>, bool);

struct Case {
    op: &'static str,
    attrs: Vec<AttributeProto>,
    inputs: Vec<In>,
    outputs: usize,
    opset: i64,
    mode: Mode,
}

fn case(op: &'static str, inputs: Vec<In>) -> Case {
    Case {
        op,
        attrs: vec![],
        inputs,
        outputs: 1,
        opset: 17,
        mode: Mode::Eval,
    }
}

impl Case {
    fn attr(mut self, a: AttributeProto) -> Case {
        self.attrs.push(a);
        self
    }
    fn opset(mut self, v: i64) -> Case {
        self.opset = v;
        self
    }
    fn mode(mut self, m: Mode) -> Case {
        self.mode = m;
        self
    }
    fn outputs(mut self, n: usize) -> Case {
        self.outputs = n;
        self
    }
}

fn ai(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(2),
        i: Some(v),
        ..Default::default()
    }
}
fn af(name: &str, v: f32) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(1),
        f: Some(v),
        ..Default::default()
    }
}
fn aints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(7),
        ints: v.to_vec(),
        ..Default::default()
    }
}
fn astr(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(3),
        s: Some(v.as_bytes().to_vec().into()),
        ..Default::default()
    }
}

fn afloats(name: &str, v: &[f32]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(6),
        floats: v.to_vec(),
        ..Default::default()
    }
}

fn f(shape: &[usize]) -> In {
    In::F(shape.to_vec(), 1.0)
}
fn pos(shape: &[usize]) -> In {
    In::Pos(shape.to_vec())
}
fn ints(v: &[i64]) -> In {
    In::Ints(v.to_vec(), vec![v.len()])
}
fn scalar(v: f64) -> In {
    In::Val(vec![v], vec![])
}

fn cases() -> Vec<Case> {
    use Mode::*;
    vec![
        // activations
        case("Relu", vec![f(&[3, 4])]),
        case("LeakyRelu", vec![f(&[3, 4])]).attr(af("alpha", 0.1)),
        case("PRelu", vec![f(&[2, 3, 4, 4]), f(&[3, 1, 1])]),
        case("Elu", vec![f(&[3, 4])]).attr(af("alpha", 0.7)),
        case("Selu", vec![f(&[3, 4])]),
        case("Celu", vec![f(&[3, 4])]).attr(af("alpha", 1.3)),
        case("Sigmoid", vec![f(&[3, 4])]),
        case("HardSigmoid", vec![In::F(vec![3, 4], 3.0)]),
        case("HardSwish", vec![In::F(vec![3, 4], 3.0)]),
        case("Tanh", vec![f(&[3, 4])]),
        case("Gelu", vec![f(&[3, 4])]).opset(20),
        case("Gelu", vec![f(&[3, 4])])
            .opset(20)
            .attr(astr("approximate", "tanh")),
        case("Erf", vec![f(&[3, 4])]),
        case("Softplus", vec![In::F(vec![3, 4], 3.0)]),
        case("Softsign", vec![f(&[3, 4])]),
        case("Mish", vec![f(&[3, 4])]),
        case("Clip", vec![f(&[3, 4]), scalar(-0.5), scalar(0.5)]),
        case("Clip", vec![f(&[3, 4]), In::None, scalar(0.3)]),
        case("Softmax", vec![f(&[2, 3, 4])]).attr(ai("axis", 1)),
        case("Softmax", vec![f(&[2, 3, 4])])
            .opset(11)
            .attr(ai("axis", 1)),
        case("LogSoftmax", vec![f(&[2, 3, 4])]),
        // convolutions
        case("Conv", vec![f(&[2, 4, 7, 7]), f(&[6, 2, 3, 3]), f(&[6])])
            .attr(ai("group", 2))
            .attr(aints("strides", &[2, 2]))
            .attr(aints("pads", &[1, 0, 2, 1])),
        case("Conv", vec![f(&[1, 3, 6, 6]), f(&[3, 1, 3, 3])])
            .attr(ai("group", 3))
            .attr(aints("dilations", &[2, 2]))
            .attr(aints("pads", &[2, 2, 2, 2])),
        case("Conv", vec![f(&[1, 2, 7, 8]), f(&[2, 2, 3, 3])]).attr(aints("strides", &[1, 2])),
        // im2col path: per-axis dilation, asymmetric pads, strides that leave rows over
        case("Conv", vec![f(&[2, 3, 9, 8]), f(&[4, 3, 3, 2]), f(&[4])])
            .attr(aints("strides", &[2, 3]))
            .attr(aints("dilations", &[2, 1]))
            .attr(aints("pads", &[0, 1, 2, 0])),
        case("Conv", vec![f(&[2, 4, 5, 5]), f(&[3, 4, 1, 1])]).attr(aints("strides", &[2, 2])),
        case("Conv", vec![f(&[1, 4, 6, 6]), f(&[4, 1, 5, 5])])
            .attr(ai("group", 4))
            .attr(aints("pads", &[2, 2, 2, 2])),
        case("Conv", vec![f(&[2, 3, 11]), f(&[4, 3, 3]), f(&[4])])
            .attr(aints("strides", &[2]))
            .attr(aints("dilations", &[2]))
            .attr(aints("pads", &[1, 2])),
        case(
            "Conv",
            vec![f(&[1, 2, 5, 6, 6]), f(&[4, 1, 3, 2, 3]), f(&[4])],
        )
        .attr(ai("group", 2))
        .attr(aints("strides", &[2, 1, 2]))
        .attr(aints("pads", &[1, 0, 1, 1, 1, 0])),
        case(
            "ConvTranspose",
            vec![f(&[1, 4, 4, 5]), f(&[4, 3, 4, 3]), f(&[6])],
        )
        .attr(ai("group", 2))
        .attr(aints("strides", &[2, 2]))
        .attr(aints("pads", &[1, 0, 1, 1]))
        .attr(aints("output_padding", &[1, 0])),
        case("ConvTranspose", vec![f(&[2, 3, 5]), f(&[3, 2, 3])]).attr(aints("strides", &[2])),
        // linear
        case("Gemm", vec![f(&[3, 4]), f(&[5, 4]), f(&[5])])
            .attr(ai("transB", 1))
            .attr(af("alpha", 0.7))
            .attr(af("beta", 1.3)),
        case("Gemm", vec![f(&[4, 3]), f(&[4, 5])]).attr(ai("transA", 1)),
        case("MatMul", vec![f(&[2, 3, 4]), f(&[4, 5])]),
        case("MatMul", vec![f(&[2, 1, 3, 4]), f(&[3, 4, 2])]),
        case("MatMul", vec![f(&[4]), f(&[2, 4, 3])]),
        // normalisation
        case(
            "BatchNormalization",
            vec![
                f(&[4, 3, 5, 5]),
                f(&[3]),
                f(&[3]),
                f(&[3]).constant(),
                In::PosConst(vec![3]),
            ],
        )
        .mode(Train),
        case(
            "BatchNormalization",
            vec![
                f(&[4, 3, 5, 5]),
                f(&[3]),
                f(&[3]),
                f(&[3]).constant(),
                In::PosConst(vec![3]),
            ],
        )
        .mode(Eval),
        case(
            "BatchNormalization",
            vec![
                f(&[6, 3]),
                f(&[3]),
                f(&[3]),
                f(&[3]).constant(),
                In::PosConst(vec![3]),
            ],
        )
        .mode(Probe)
        .attr(ai("training_mode", 1)),
        case("LayerNormalization", vec![f(&[2, 3, 8]), f(&[8]), f(&[8])]),
        case(
            "LayerNormalization",
            vec![f(&[2, 3, 8]), f(&[3, 8]), f(&[3, 8])],
        )
        .attr(ai("axis", 1)),
        case(
            "GroupNormalization",
            vec![f(&[2, 4, 3, 3]), f(&[4]), f(&[4])],
        )
        .opset(21)
        .attr(ai("num_groups", 2)),
        case(
            "GroupNormalization",
            vec![f(&[2, 4, 3, 3]), f(&[2]), f(&[2])],
        )
        .opset(18)
        .attr(ai("num_groups", 2)),
        case(
            "InstanceNormalization",
            vec![f(&[2, 3, 4, 4]), f(&[3]), f(&[3])],
        ),
        // pooling
        case("MaxPool", vec![f(&[2, 3, 7, 7])])
            .attr(aints("kernel_shape", &[3, 3]))
            .attr(aints("strides", &[2, 2]))
            .attr(aints("pads", &[1, 1, 1, 1])),
        case("MaxPool", vec![f(&[1, 2, 5, 5])])
            .attr(aints("kernel_shape", &[2, 2]))
            .attr(aints("strides", &[2, 2]))
            .attr(ai("ceil_mode", 1)),
        case("MaxPool", vec![f(&[2, 2, 9])])
            .attr(aints("kernel_shape", &[2]))
            .attr(aints("dilations", &[2])),
        case("MaxPool", vec![f(&[1, 2, 6, 7])])
            .attr(aints("kernel_shape", &[3, 2]))
            .attr(aints("strides", &[1, 2]))
            .attr(aints("dilations", &[2, 1]))
            .attr(aints("pads", &[2, 0, 1, 1])),
        case("MaxPool", vec![f(&[1, 2, 4, 5, 5])])
            .attr(aints("kernel_shape", &[2, 3, 3]))
            .attr(aints("pads", &[0, 1, 1, 1, 1, 1])),
        case("AveragePool", vec![f(&[2, 3, 7, 7])])
            .attr(aints("kernel_shape", &[3, 3]))
            .attr(aints("strides", &[2, 2]))
            .attr(aints("pads", &[1, 1, 1, 1])),
        case("AveragePool", vec![f(&[2, 3, 6, 6])])
            .attr(aints("kernel_shape", &[3, 3]))
            .attr(aints("pads", &[1, 1, 1, 1]))
            .attr(ai("count_include_pad", 1)),
        case("LpPool", vec![f(&[1, 2, 6, 6])]).attr(aints("kernel_shape", &[2, 2])),
        case("GlobalAveragePool", vec![f(&[2, 3, 4, 5])]),
        case("GlobalMaxPool", vec![f(&[2, 3, 4, 5])]),
        // elementwise
        case("Add", vec![f(&[3, 4]), f(&[4])]),
        case("Sub", vec![f(&[3, 1]), f(&[3, 4])]),
        case("Mul", vec![f(&[2, 3, 4]), f(&[3, 1])]),
        case("Div", vec![f(&[3, 4]), pos(&[4])]),
        case("Pow", vec![f(&[3, 4]), scalar(2.0)]),
        case("Pow", vec![f(&[3, 4]), scalar(3.0)]),
        case("Pow", vec![pos(&[3, 4]), scalar(1.7)]),
        case("Pow", vec![pos(&[3, 4]), f(&[4])]),
        case("Mod", vec![pos(&[3, 4]), In::Val(vec![0.3], vec![])]).attr(ai("fmod", 1)),
        case("Neg", vec![f(&[3, 4])]),
        case("Abs", vec![f(&[3, 4])]),
        case("Sqrt", vec![pos(&[3, 4])]),
        case("Exp", vec![f(&[3, 4])]),
        case("Log", vec![pos(&[3, 4])]),
        case("Reciprocal", vec![pos(&[3, 4])]),
        case("Sin", vec![f(&[3, 4])]),
        case("Cos", vec![f(&[3, 4])]),
        case("Min", vec![f(&[3, 4]), f(&[4]), f(&[3, 1])]),
        case("Max", vec![f(&[3, 4]), f(&[4]), f(&[3, 1])]),
        case("Sum", vec![f(&[3, 4]), f(&[4]), f(&[3, 1])]),
        case("Mean", vec![f(&[3, 4]), f(&[4])]),
        case(
            "Where",
            vec![In::Bool(vec![1, 0, 0, 1], vec![4]), f(&[3, 4]), f(&[3, 1])],
        ),
        // reductions
        case("ReduceMean", vec![f(&[2, 3, 4]), ints(&[1])]).opset(18),
        case("ReduceMean", vec![f(&[2, 3, 4])])
            .attr(aints("axes", &[0, 2]))
            .attr(ai("keepdims", 0)),
        case("ReduceSum", vec![f(&[2, 3, 4]), ints(&[-1])]).attr(ai("keepdims", 0)),
        case("ReduceMax", vec![f(&[2, 3, 4])]).attr(aints("axes", &[1])),
        case("ReduceMin", vec![f(&[2, 3, 4])]).attr(aints("axes", &[2])),
        case("ReduceSumSquare", vec![f(&[2, 3, 4])]).attr(aints("axes", &[1])),
        case("ReduceL2", vec![f(&[2, 3, 4])]).attr(aints("axes", &[2])),
        // data movement
        case("Reshape", vec![f(&[2, 3, 4]), ints(&[0, -1])]),
        case("Flatten", vec![f(&[2, 3, 4])]).attr(ai("axis", 2)),
        case("Transpose", vec![f(&[2, 3, 4])]).attr(aints("perm", &[2, 0, 1])),
        case("Concat", vec![f(&[2, 3]), f(&[2, 2])]).attr(ai("axis", 1)),
        case("Split", vec![f(&[2, 3, 4]), ints(&[2, 1])])
            .attr(ai("axis", 1))
            .outputs(2),
        case(
            "Slice",
            vec![
                f(&[5, 6]),
                ints(&[1, -1]),
                ints(&[5, 0]),
                ints(&[0, 1]),
                ints(&[2, -2]),
            ],
        ),
        case(
            "Gather",
            vec![f(&[3, 4]), In::Ints(vec![0, 2, 1, 1], vec![2, 2])],
        )
        .attr(ai("axis", 1)),
        case("Unsqueeze", vec![f(&[3, 4]), ints(&[0, 3])]),
        case("Squeeze", vec![f(&[3, 1, 4]), ints(&[1])]),
        case("Expand", vec![f(&[3, 1]), ints(&[2, 3, 4])]),
        case("Tile", vec![f(&[2, 3]), ints(&[2, 2])]),
        case("Cast", vec![f(&[2, 3])]).attr(ai("to", 1)),
        case("Identity", vec![f(&[2, 3])]),
        case("Dropout", vec![f(&[2, 3])]).mode(Probe),
        case("Pad", vec![f(&[2, 3]), ints(&[1, 0, 0, 2]), scalar(0.5)]),
    ]
    .into_iter()
    .chain(export_cases())
    .collect()
}

/// Ops real exports use (issue 14): indexing, Einsum, LRN, QDQ, general
/// ConvTranspose and onnxruntime's contrib ops.
fn export_cases() -> Vec<Case> {
    let ms =
        |op: &str| -> &'static str { Box::leak(format!("com.microsoft::{op}").into_boxed_str()) };
    vec![
        case("LRN", vec![f(&[2, 5, 3, 3])])
            .attr(ai("size", 3))
            .attr(af("alpha", 0.5))
            .attr(af("beta", 0.75))
            .attr(af("bias", 1.0)),
        case("LRN", vec![f(&[1, 4, 2, 2])])
            .attr(ai("size", 2))
            .attr(af("alpha", 0.3)),
        case(
            "GatherND",
            vec![f(&[3, 4, 2]), In::Ints(vec![0, 1, 2, 3, 1, 0], vec![3, 2])],
        ),
        case(
            "GatherND",
            vec![f(&[2, 3, 4]), In::Ints(vec![0, 2, 1, -1], vec![2, 2, 1])],
        )
        .attr(ai("batch_dims", 1)),
        case(
            "ScatterND",
            vec![f(&[4, 3]), In::Ints(vec![1, 3], vec![2, 1]), f(&[2, 3])],
        ),
        case(
            "ScatterND",
            vec![
                f(&[2, 3, 2]),
                In::Ints(vec![0, 1, 0, 1], vec![2, 2]),
                f(&[2, 2]),
            ],
        )
        .attr(astr("reduction", "add")),
        case("CumSum", vec![f(&[3, 4]), ints(&[1])]),
        case("CumSum", vec![f(&[3, 4]), ints(&[0])])
            .attr(ai("exclusive", 1))
            .attr(ai("reverse", 1)),
        case("CumSum", vec![f(&[2, 3, 4]), ints(&[-1])]).attr(ai("reverse", 1)),
        case("Trilu", vec![f(&[2, 3, 4]), ints(&[1])]),
        case("Trilu", vec![f(&[3, 4])]).attr(ai("upper", 0)),
        case("Mod", vec![pos(&[3, 4]), In::Val(vec![0.3], vec![])]).attr(ai("fmod", 0)),
        case("Einsum", vec![f(&[2, 3, 4]), f(&[2, 4, 5])]).attr(astr("equation", "bij,bjk->bik")),
        case("Einsum", vec![f(&[1, 2, 3, 4]), f(&[1, 2, 5, 4])])
            .attr(astr("equation", "bhid,bhjd->bhij")),
        case("Einsum", vec![f(&[3, 4]), f(&[4, 2])]).attr(astr("equation", "ij,jk")),
        case("Einsum", vec![f(&[2, 1, 3, 4]), f(&[3, 4, 2])])
            .attr(astr("equation", "...ij,...jk->...ik")),
        case("Einsum", vec![f(&[2, 3, 4]), f(&[4, 5])]).attr(astr("equation", "bij,jk->bk")),
        case("Einsum", vec![f(&[2, 3, 4])]).attr(astr("equation", "bij->jb")),
        case(
            "DequantizeLinear",
            vec![
                f(&[2, 3, 4]),
                pos(&[3]),
                In::Val(vec![1.0, 0.0, -2.0], vec![3]),
            ],
        ),
        case("DequantizeLinear", vec![f(&[2, 3]), pos(&[])]),
        case(
            "ConvTranspose",
            vec![f(&[1, 2, 3, 2, 3]), f(&[2, 2, 2, 3, 2]), f(&[2])],
        )
        .attr(aints("strides", &[2, 1, 2]))
        .attr(aints("pads", &[1, 0, 0, 0, 1, 1]))
        .attr(aints("output_padding", &[1, 0, 0])),
        case("ConvTranspose", vec![f(&[2, 4, 3, 4]), f(&[4, 1, 3, 2])])
            .attr(ai("group", 2))
            .attr(aints("strides", &[3, 2]))
            .attr(aints("dilations", &[1, 2]))
            .attr(aints("output_padding", &[2, 1])),
        // onnxruntime contrib ops
        case(
            ms("FusedConv"),
            vec![f(&[2, 3, 5, 5]), f(&[4, 3, 3, 3]), f(&[4])],
        )
        .attr(astr("activation", "LeakyRelu"))
        .attr(afloats("activation_params", &[0.2]))
        .attr(aints("pads", &[1, 1, 1, 1])),
        case(
            ms("FusedConv"),
            vec![
                f(&[1, 2, 4, 4]),
                f(&[2, 2, 1, 1]),
                f(&[2]),
                f(&[1, 2, 4, 4]),
            ],
        )
        .attr(astr("activation", "Sigmoid")),
        case(ms("FusedGemm"), vec![f(&[3, 4]), f(&[5, 4]), f(&[5])])
            .attr(ai("transB", 1))
            .attr(astr("activation", "Tanh")),
        case(ms("FusedGemm"), vec![f(&[3, 4]), f(&[4, 5])])
            .attr(astr("activation", "HardSigmoid"))
            .attr(af("activation_alpha", 0.3))
            .attr(af("activation_beta", 0.4)),
        case(ms("Gelu"), vec![f(&[3, 4])]),
        case(ms("BiasGelu"), vec![f(&[3, 4]), f(&[4])]),
        case(ms("FastGelu"), vec![f(&[3, 4]), f(&[4])]),
        case(ms("QuickGelu"), vec![f(&[3, 4])]).attr(af("alpha", 1.5)),
        case(ms("BiasAdd"), vec![f(&[2, 3, 4]), f(&[4]), f(&[2, 3, 4])]),
        case(
            ms("SkipLayerNormalization"),
            vec![f(&[2, 3, 8]), f(&[2, 3, 8]), f(&[8]), f(&[8]), f(&[8])],
        )
        .attr(af("epsilon", 1e-5))
        .outputs(4),
        case(
            ms("SkipSimplifiedLayerNormalization"),
            vec![f(&[2, 3, 8]), f(&[2, 3, 8]), f(&[8])],
        )
        .attr(af("epsilon", 1e-5)),
        case(
            ms("EmbedLayerNormalization"),
            vec![
                In::Ints(vec![1, 4, 0, 2, 2, 3], vec![2, 3]),
                In::Ints(vec![0, 1, 1, 0, 0, 1], vec![2, 3]),
                f(&[5, 8]),
                f(&[4, 8]),
                f(&[2, 8]),
                f(&[8]),
                f(&[8]),
                In::Ints(vec![1, 1, 0, 1, 1, 1], vec![2, 3]),
            ],
        )
        .attr(af("epsilon", 1e-5))
        .outputs(3),
        case(
            ms("Attention"),
            vec![
                f(&[2, 3, 8]),
                In::F(vec![8, 24], 0.5),
                f(&[24]),
                In::Ints(vec![1, 1, 0, 1, 1, 1], vec![2, 3]),
            ],
        )
        .attr(ai("num_heads", 2))
        .outputs(2),
        case(
            ms("Attention"),
            vec![f(&[1, 4, 6]), In::F(vec![6, 18], 0.5), f(&[18])],
        )
        .attr(ai("num_heads", 3))
        .attr(ai("unidirectional", 1)),
        case(
            ms("MultiHeadAttention"),
            vec![
                f(&[2, 3, 8]),
                f(&[2, 5, 8]),
                f(&[2, 5, 4]),
                f(&[20]),
                In::Ints(vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1], vec![2, 5]),
            ],
        )
        .attr(ai("num_heads", 2)),
    ]
}

impl In {
    fn constant(self) -> In {
        match self {
            In::F(shape, _) => In::Val(vec![0.1; shape.iter().product()], shape),
            other => other,
        }
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let v = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn node(c: &Case) -> NodeProto {
    NodeProto {
        op_type: Some(c.op.into()),
        name: Some(format!("{}_test", c.op)),
        input: (0..c.inputs.len())
            .map(|i| {
                if matches!(c.inputs[i], In::None) {
                    String::new()
                } else {
                    format!("in{i}")
                }
            })
            .collect(),
        output: (0..c.outputs).map(|i| format!("out{i}")).collect(),
        attribute: c.attrs.clone(),
        ..Default::default()
    }
}

fn run(c: &Case, node: &NodeProto, inputs: &[Option<Tensor>]) -> Vec<Tensor> {
    let rng = RefCell::new(ChaCha8Rng::seed_from_u64(0));
    let args = OpArgs {
        node,
        inputs: inputs.to_vec(),
        mode: c.mode,
        opset: c.opset,
        dtype: DType::F64,
        device: &Device::Cpu,
        rng: &rng,
        state: RefCell::new(Vec::new()),
    };
    let (domain, name) = c.op.split_once("::").unwrap_or(("", c.op));
    let op =
        super::Op::parse(domain, name).unwrap_or_else(|| panic!("{} is not in the op table", c.op));
    let f = registry()[&op];
    f(&args).unwrap_or_else(|e| panic!("{}: {}", c.op, e.0))
}

fn loss(outs: &[Tensor], weights: &[Tensor]) -> Tensor {
    let mut total = Tensor::zeros((), DType::F64, &Device::Cpu).unwrap();
    for (o, w) in outs.iter().zip(weights) {
        if o.dtype() == DType::F64 {
            total = (total + (o * w).unwrap().sum_all().unwrap()).unwrap();
        }
    }
    total
}

/// Largest gradient error of one case, relative to max(1, |gradient|∞).
fn check(c: &Case, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dev = Device::Cpu;
    let mut values: Vec<Option<Values>> = Vec::new();
    let mut fixed: Vec<Option<Tensor>> = Vec::new();
    for i in &c.inputs {
        let (v, shape, diff) = match i {
            In::F(shape, s) => {
                let n: usize = shape.iter().product();
                (
                    (0..n).map(|_| s * normal(&mut rng)).collect(),
                    shape.clone(),
                    true,
                )
            }
            In::Pos(shape) => {
                let n: usize = shape.iter().product();
                (
                    (0..n).map(|_| 0.5 + 1.5 * uniform(&mut rng)).collect(),
                    shape.clone(),
                    true,
                )
            }
            In::PosConst(shape) => {
                let n: usize = shape.iter().product();
                (
                    (0..n).map(|_| 0.5 + 1.5 * uniform(&mut rng)).collect(),
                    shape.clone(),
                    false,
                )
            }
            In::Val(v, shape) => (v.clone(), shape.clone(), false),
            In::Ints(v, shape) => {
                values.push(None);
                fixed.push(Some(
                    Tensor::from_vec(v.clone(), shape.as_slice(), &dev).unwrap(),
                ));
                continue;
            }
            In::Bool(v, shape) => {
                values.push(None);
                fixed.push(Some(
                    Tensor::from_vec(v.clone(), shape.as_slice(), &dev).unwrap(),
                ));
                continue;
            }
            In::None => {
                values.push(None);
                fixed.push(None);
                continue;
            }
        };
        values.push(Some((v, shape, diff)));
        fixed.push(None);
    }
    let node = node(c);
    let build = |values: &[Option<Values>]| -> Vec<Option<Tensor>> {
        values
            .iter()
            .zip(&fixed)
            .map(|(v, f)| match v {
                Some((v, s, _)) => Some(Tensor::from_vec(v.clone(), s.as_slice(), &dev).unwrap()),
                None => f.clone(),
            })
            .collect()
    };
    // autograd
    let vars: Vec<Option<Var>> = build(&values)
        .into_iter()
        .zip(&values)
        .map(|(t, v)| match (t, v) {
            (Some(t), Some((_, _, true))) => Some(Var::from_tensor(&t).unwrap()),
            _ => None,
        })
        .collect();
    let inputs: Vec<Option<Tensor>> = build(&values)
        .into_iter()
        .zip(&vars)
        .map(|(t, v)| v.as_ref().map(|v| v.as_tensor().clone()).or(t))
        .collect();
    let outs = run(c, &node, &inputs);
    let weights: Vec<Tensor> = outs
        .iter()
        .map(|o| {
            let n = o.elem_count();
            let w: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
            Tensor::from_vec(w, o.dims(), &dev).unwrap()
        })
        .collect();
    let l = loss(&outs, &weights);
    let grads = l.backward().unwrap();
    let h = 1e-6;
    let mut worst = 0.0f64;
    for (i, v) in values.iter().enumerate() {
        let Some((vals, _, true)) = v else { continue };
        let var = vars[i].as_ref().unwrap();
        let g: Vec<f64> = match grads.get(var.as_tensor()) {
            Some(g) => g.flatten_all().unwrap().to_vec1().unwrap(),
            None => vec![0.0; vals.len()],
        };
        let scale = g.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        // at most 48 coordinates per input, spread over the tensor
        let stride = vals.len().div_ceil(48).max(1);
        for j in (0..vals.len()).step_by(stride) {
            let mut plus = values.clone();
            let mut minus = values.clone();
            if let Some((p, _, _)) = plus[i].as_mut() {
                p[j] += h;
            }
            if let Some((m, _, _)) = minus[i].as_mut() {
                m[j] -= h;
            }
            let lp: f64 = loss(&run(c, &node, &build(&plus)), &weights)
                .to_scalar()
                .unwrap();
            let lm: f64 = loss(&run(c, &node, &build(&minus)), &weights)
                .to_scalar()
                .unwrap();
            let fd = (lp - lm) / (2.0 * h);
            let err = (fd - g[j]).abs() / scale;
            if err > worst {
                worst = err;
            }
        }
    }
    worst
}

#[test]
fn every_differentiable_op_has_a_gradient_case() {
    let covered: std::collections::HashSet<&str> = cases().iter().map(|c| c.op).collect();
    let mut missing: Vec<String> = registry()
        .keys()
        .map(|op| op.qualified_name())
        .filter(|op| {
            !NON_DIFFERENTIABLE.contains(&op.as_str())
                && !STRAIGHT_THROUGH.contains(&op.as_str())
                && !covered.contains(op.as_str())
        })
        .collect();
    missing.sort_unstable();
    assert!(missing.is_empty(), "no gradient case for {missing:?}");
}

#[test]
fn gradients_match_finite_differences_in_f64() {
    let mut failures = Vec::new();
    for (k, c) in cases().iter().enumerate() {
        let err = check(c, 1000 + k as u64);
        if err.is_nan() || err >= 1e-6 {
            failures.push(format!(
                "{} (case {k}, {:?}): relative error {err:.2e}",
                c.op, c.mode
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn quantize_passes_the_gradient_straight_through() {
    // forward: clamp(round(x / s) + zp); backward: d/dx (x / s + zp) = 1 / s
    let x = Var::from_tensor(
        &Tensor::new(&[-3.2f64, -0.6, 0.49, 1.5, 2.5, 700.0], &Device::Cpu).unwrap(),
    )
    .unwrap();
    let c = case(
        "QuantizeLinear",
        vec![In::None, scalar(0.5), In::Val(vec![-1.0], vec![])],
    )
    .attr(ai("output_dtype", 3));
    let node = node(&c);
    let inputs = vec![
        Some(x.as_tensor().clone()),
        Some(Tensor::new(0.5f64, &Device::Cpu).unwrap()),
        Some(Tensor::new(-1.0f64, &Device::Cpu).unwrap()),
    ];
    let y = run(&c, &node, &inputs).remove(0);
    let values: Vec<f64> = y.to_vec1().unwrap();
    // round half to even of -6.4, -1.2, 0.98, 3, 5, 1400; -1; int8 clamp
    assert_eq!(values, vec![-7.0, -2.0, 0.0, 2.0, 4.0, 127.0]);
    let grad = y.sum_all().unwrap().backward().unwrap();
    let g: Vec<f64> = grad.get(x.as_tensor()).unwrap().to_vec1().unwrap();
    assert_eq!(g, vec![2.0; 6]);
}
