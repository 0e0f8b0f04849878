//! The gradient-check cases: one or more per differentiable op of the
//! registry, with the ops of real exports (`export_cases`) chained in. A new
//! op's case goes here.

use reinit_onnx::proto::AttributeProto;

use super::{Case, In, case};
use crate::executor::Mode;

pub(super) fn ai(name: &str, v: i64) -> AttributeProto {
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
pub(super) fn scalar(v: f64) -> In {
    In::Val(vec![v], vec![])
}

pub(super) fn cases() -> Vec<Case> {
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
        // depthwise kernel: MobileNet's stride-2 block, and a depth multiplier
        // of 2 with asymmetric pads and unequal strides
        case("Conv", vec![f(&[2, 4, 7, 7]), f(&[4, 1, 3, 3]), f(&[4])])
            .attr(ai("group", 4))
            .attr(aints("strides", &[2, 2]))
            .attr(aints("pads", &[1, 1, 1, 1])),
        case("Conv", vec![f(&[1, 3, 8, 7]), f(&[6, 1, 3, 3])])
            .attr(ai("group", 3))
            .attr(aints("strides", &[2, 3]))
            .attr(aints("pads", &[1, 0, 0, 2])),
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
        // repeated and negative indices; indices smaller than the data off-axis
        case(
            "GatherElements",
            vec![f(&[3, 4]), In::Ints(vec![0, 2, -1, 1, 1, 0], vec![2, 3])],
        ),
        case(
            "GatherElements",
            vec![f(&[3, 4]), In::Ints(vec![3, -4, 0, 1, 1, 2], vec![3, 2])],
        )
        .attr(ai("axis", 1)),
        case(
            "GatherElements",
            vec![
                f(&[2, 3, 4]),
                In::Ints(vec![0, 3, -1, 2, 2, 2, 1, -3, 0, 3, 3, 1], vec![2, 2, 3]),
            ],
        )
        .attr(ai("axis", -1)),
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
