//! Hand-built graphs for the patterns the fixtures do not cover: exporter
//! decompositions, Clip bounds by opset, quantised and batched weights,
//! concatenation (not residual), nesting, unknown ops.

use prost::Message;
use reinit_graph::{Activation, Analysis, Role, Skip, Transform, analyze};
use reinit_onnx::Model;
use reinit_onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    ValueInfoProto,
};

fn tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(1),
        float_data: values.to_vec(),
        ..Default::default()
    }
}

fn weights(name: &str, dims: &[i64]) -> TensorProto {
    let n: i64 = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    tensor(name, dims, &values)
}

fn scalar(name: &str, v: f32) -> TensorProto {
    tensor(name, &[], &[v])
}

fn int_tensor(name: &str, values: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![values.len() as i64],
        data_type: Some(7),
        int64_data: values.to_vec(),
        ..Default::default()
    }
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with_float(mut n: NodeProto, attr: &str, v: f32) -> NodeProto {
    n.attribute.push(AttributeProto {
        name: Some(attr.into()),
        f: Some(v),
        r#type: Some(1),
        ..Default::default()
    });
    n
}

fn with_ints(mut n: NodeProto, attr: &str, v: &[i64]) -> NodeProto {
    n.attribute.push(AttributeProto {
        name: Some(attr.into()),
        ints: v.to_vec(),
        r#type: Some(7),
        ..Default::default()
    });
    n
}

fn build(opset: i64, nodes: Vec<NodeProto>, inits: Vec<TensorProto>, outputs: &[&str]) -> Analysis {
    let value = |n: &str| ValueInfoProto {
        name: Some(n.into()),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(opset),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            initializer: inits,
            input: vec![value("X")],
            output: outputs.iter().map(|o| value(o)).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = Model::from_bytes(model.encode_to_vec(), None).expect("model decodes");
    analyze(&model)
}

/// `MatMul(X, W1) → (activation nodes) → MatMul(·, W2)`; returns W1's activation.
fn activation_of(
    opset: i64,
    mut middle: Vec<NodeProto>,
    mut inits: Vec<TensorProto>,
    last: &str,
) -> Activation {
    let mut nodes = vec![node("MatMul", "mm1", &["X", "W1"], &["h"])];
    nodes.append(&mut middle);
    nodes.push(node("MatMul", "mm2", &[last, "W2"], &["Y"]));
    inits.push(weights("W1", &[4, 4]));
    inits.push(weights("W2", &[4, 4]));
    let a = build(opset, nodes, inits, &["Y"]);
    assert_eq!(a.layers.len(), 2, "{:?}", a.warnings);
    a.layers[0].activation.clone()
}

#[test]
fn silu_as_x_times_sigmoid() {
    let act = activation_of(
        17,
        vec![
            node("Sigmoid", "sig", &["h"], &["s"]),
            node("Mul", "mul", &["h", "s"], &["a"]),
        ],
        vec![],
        "a",
    );
    assert_eq!(act, Activation::Silu);
}

#[test]
fn hardswish_as_x_times_hardsigmoid() {
    let act = activation_of(
        17,
        vec![
            node("HardSigmoid", "hs", &["h"], &["s"]),
            node("Mul", "mul", &["s", "h"], &["a"]),
        ],
        vec![],
        "a",
    );
    assert_eq!(act, Activation::HardSwish);
}

#[test]
fn gelu_tanh_form() {
    let act = activation_of(
        17,
        vec![
            node("Pow", "pow", &["h", "three"], &["p"]),
            node("Mul", "m1", &["p", "c1"], &["m1"]),
            node("Add", "a1", &["h", "m1"], &["a1"]),
            node("Mul", "m2", &["a1", "c2"], &["m2"]),
            node("Tanh", "t", &["m2"], &["t"]),
            node("Add", "a2", &["t", "one"], &["a2"]),
            node("Mul", "m3", &["h", "a2"], &["m3"]),
            node("Mul", "m4", &["m3", "half"], &["a"]),
        ],
        vec![
            scalar("three", 3.0),
            scalar("c1", 0.044715),
            scalar("c2", 0.797_884_6),
            scalar("one", 1.0),
            scalar("half", 0.5),
        ],
        "a",
    );
    assert_eq!(act, Activation::Gelu);
}

#[test]
fn gelu_erf_form() {
    let act = activation_of(
        17,
        vec![
            node("Div", "div", &["h", "sqrt2"], &["d"]),
            node("Erf", "erf", &["d"], &["e"]),
            node("Add", "add", &["e", "one"], &["p"]),
            node("Mul", "mul", &["h", "p"], &["m"]),
            node("Mul", "half", &["m", "c"], &["a"]),
        ],
        vec![
            scalar("sqrt2", std::f32::consts::SQRT_2),
            scalar("one", 1.0),
            scalar("c", 0.5),
        ],
        "a",
    );
    assert_eq!(act, Activation::Gelu);
}

#[test]
fn clip_bounds_from_inputs_and_attributes() {
    // Opset 11+: bounds are inputs (initializers or Constant nodes).
    let act = activation_of(
        13,
        vec![node("Clip", "clip", &["h", "lo", "hi"], &["a"])],
        vec![scalar("lo", 0.0), scalar("hi", 6.0)],
        "a",
    );
    assert_eq!(act, Activation::Relu6);
    let mut lo = node("Constant", "c_lo", &[], &["lo"]);
    lo.attribute.push(AttributeProto {
        name: Some("value".into()),
        t: Some(scalar("", -1.0)),
        r#type: Some(4),
        ..Default::default()
    });
    let hi = with_float(node("Constant", "c_hi", &[], &["hi"]), "value_float", 1.0);
    let act = activation_of(
        13,
        vec![lo, hi, node("Clip", "clip", &["h", "lo", "hi"], &["a"])],
        vec![],
        "a",
    );
    assert_eq!(act, Activation::HardTanh);
    // Opset 9: attributes.
    let clip = with_float(
        with_float(node("Clip", "clip", &["h"], &["a"]), "min", 0.0),
        "max",
        6.0,
    );
    assert_eq!(activation_of(9, vec![clip], vec![], "a"), Activation::Relu6);
    let clip = with_float(
        with_float(node("Clip", "clip", &["h"], &["a"]), "min", -2.0),
        "max",
        2.0,
    );
    assert_eq!(
        activation_of(9, vec![clip], vec![], "a"),
        Activation::Other("clip".into())
    );
}

#[test]
fn leaky_relu_alpha_and_pooling_between() {
    let act = activation_of(
        17,
        vec![
            node(
                "BatchNormalization",
                "bn",
                &["h", "g", "b", "m", "v"],
                &["n"],
            ),
            node("Reshape", "r", &["n", "shape"], &["r"]),
            with_float(node("LeakyRelu", "lr", &["r"], &["a"]), "alpha", 0.2),
        ],
        vec![
            weights("g", &[4]),
            weights("b", &[4]),
            weights("m", &[4]),
            weights("v", &[4]),
            int_tensor("shape", &[-1, 4]),
        ],
        "a",
    );
    assert!(matches!(act, Activation::LeakyRelu { alpha } if (alpha - 0.2).abs() < 1e-6));
}

#[test]
fn dequantized_and_batched_weights_are_skipped() {
    let q = TensorProto {
        name: Some("Wq".into()),
        dims: vec![4, 4],
        data_type: Some(3),
        int32_data: vec![1; 16],
        ..Default::default()
    };
    let a = build(
        17,
        vec![
            node("DequantizeLinear", "dq", &["Wq", "scale"], &["Wd"]),
            node("MatMul", "mm", &["X", "Wd"], &["h"]),
            node("MatMul", "bmm", &["h", "W3"], &["Y"]),
        ],
        vec![q, scalar("scale", 0.1), weights("W3", &[2, 4, 4])],
        &["Y"],
    );
    assert!(a.layers.is_empty(), "{:?}", a.layers);
    let reasons: Vec<(&str, &str)> = a
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.as_str()))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(n, r)| *n == "W3" && r.contains("batched")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(n, r)| *n == "Wq" && r.contains("DequantizeLinear")),
        "{reasons:?}"
    );
}

#[test]
fn float_weight_behind_dequantize_is_skipped_with_reason() {
    let a = build(
        17,
        vec![
            node("DequantizeLinear", "dq", &["Wf", "scale"], &["Wd"]),
            node("Gemm", "g", &["X", "Wd"], &["Y"]),
        ],
        vec![weights("Wf", &[4, 4]), scalar("scale", 0.1)],
        &["Y"],
    );
    assert!(a.layers.is_empty());
    assert!(
        a.skipped
            .iter()
            .any(|s| s.name == "Wf" && s.reason.contains("DequantizeLinear"))
    );
}

#[test]
fn concat_is_not_residual_and_nested_blocks_are_found() {
    // DenseNet-style: Y = conv2(concat(X, conv1(X))).
    let conv = |name: &str, x: &str, w: &str, y: &str| {
        with_ints(node("Conv", name, &[x, w], &[y]), "pads", &[1, 1, 1, 1])
    };
    let mut cat = node("Concat", "cat", &["X", "c1"], &["cat"]);
    cat.attribute.push(AttributeProto {
        name: Some("axis".into()),
        i: Some(1),
        r#type: Some(2),
        ..Default::default()
    });
    let a = build(
        17,
        vec![
            conv("conv1", "X", "W1", "c1"),
            cat,
            conv("conv2", "cat", "W2", "Y"),
        ],
        vec![weights("W1", &[4, 4, 3, 3]), weights("W2", &[4, 8, 3, 3])],
        &["Y"],
    );
    assert!(a.residual_blocks.is_empty());
    assert_eq!(a.layers[0].delta_tap, Some(vec![1, 1]));

    // Outer: X + conv3(inner), inner: r + conv2(r) with r = relu(conv1(X)).
    let a = build(
        17,
        vec![
            conv("conv1", "X", "W1", "c1"),
            node("Relu", "relu", &["c1"], &["r"]),
            conv("conv2", "r", "W2", "c2"),
            node("Add", "inner", &["r", "c2"], &["i"]),
            conv("conv3", "i", "W3", "c3"),
            node("Add", "outer", &["X", "c3"], &["Y"]),
        ],
        vec![
            weights("W1", &[4, 4, 3, 3]),
            weights("W2", &[4, 4, 3, 3]),
            weights("W3", &[4, 4, 3, 3]),
        ],
        &["Y"],
    );
    assert_eq!(a.residual_blocks.len(), 2);
    let inner = &a.residual_blocks[0];
    let outer = &a.residual_blocks[1];
    assert_eq!(
        (inner.add_node.as_str(), outer.add_node.as_str()),
        ("inner", "outer")
    );
    assert_eq!(inner.nested_in, Some(1));
    assert_eq!(outer.nested_in, None);
    assert_eq!(inner.branch, vec![1]);
    assert_eq!(outer.branch, vec![0, 1, 2]);
    assert_eq!(outer.depth, 3);
    assert_eq!(inner.skip, Skip::Identity);
    // Layers take the innermost block's role.
    assert_eq!(
        a.layers[1].residual.map(|r| (r.block, r.role)),
        Some((0, Role::Only))
    );
    assert_eq!(
        a.layers[0].residual.map(|r| (r.block, r.role)),
        Some((1, Role::First))
    );
    assert_eq!(
        a.layers[2].residual.map(|r| (r.block, r.role)),
        Some((1, Role::Last))
    );
    assert_eq!(a.layers[1].activation, Activation::ResidualAdd);
}

#[test]
fn unknown_ops_are_listed_not_fatal() {
    let mut weird = node("Weird", "w", &["h"], &["a"]);
    weird.domain = Some("com.example".into());
    let a = build(
        17,
        vec![node("MatMul", "mm", &["X", "W"], &["h"]), weird],
        vec![weights("W", &[4, 4])],
        &["a"],
    );
    assert_eq!(a.unknown_ops, vec!["com.example::Weird".to_string()]);
    assert_eq!(a.layers.len(), 1);
    assert_eq!(a.layers[0].activation, Activation::None);
    assert_eq!(
        a.layers[0].stops_at,
        Some(reinit_graph::StopReason::Unknown("weird".into()))
    );
}

#[test]
fn constant_reshape_weight() {
    let a = build(
        17,
        vec![
            node("Reshape", "r", &["Wflat", "shape"], &["W"]),
            node("MatMul", "mm", &["X", "W"], &["Y"]),
        ],
        vec![weights("Wflat", &[12]), int_tensor("shape", &[3, -1])],
        &["Y"],
    );
    let l = &a.layers[0];
    assert_eq!((l.n_out, l.n_in, l.fan_in, l.fan_out), (4, 3, 3, 4));
    assert_eq!(l.layout.steps, vec![Transform::Reshape(vec![3, 4])]);
    assert_eq!(l.via, vec!["Reshape"]);
    let stored: Vec<f64> = (0..12).map(f64::from).collect();
    assert_eq!(
        l.canonical_to_stored(&l.stored_to_canonical(&stored)),
        stored
    );
}

#[test]
fn cycles_in_a_malformed_graph_are_cut_not_followed_forever() {
    // Found by the fuzzer: a branch whose nodes feed each other (r = Relu(c2),
    // c2 = conv2(r)) sent the layer-role walk into unbounded recursion.
    let conv = |name: &str, x: &str, w: &str, y: &str| {
        with_ints(node("Conv", name, &[x, w], &[y]), "pads", &[1, 1, 1, 1])
    };
    let a = build(
        17,
        vec![
            conv("conv1", "X", "W1", "c1"),
            node("Add", "mix", &["c1", "c2"], &["m"]),
            node("Relu", "relu", &["m"], &["r"]),
            conv("conv2", "r", "W2", "c2"),
            node("Add", "res", &["X", "c2"], &["Y"]),
        ],
        vec![weights("W1", &[4, 4, 3, 3]), weights("W2", &[4, 4, 3, 3])],
        &["Y"],
    );
    assert_eq!(a.layers.len(), 2);
}

/// onnxruntime's contrib layers (`com.microsoft` FusedConv / FusedGemm) are
/// layers of the op table, with the activation they apply themselves.
#[test]
fn fused_contrib_layers_carry_their_activation() {
    let fused = |op: &str, name: &str, inputs: &[&str], out: &str, act: &str, params: &[f32]| {
        let mut n = node(op, name, inputs, &[out]);
        n.domain = Some("com.microsoft".into());
        n.attribute.push(AttributeProto {
            name: Some("activation".into()),
            s: Some(act.as_bytes().to_vec().into()),
            r#type: Some(3),
            ..Default::default()
        });
        if !params.is_empty() {
            n.attribute.push(AttributeProto {
                name: Some("activation_params".into()),
                floats: params.to_vec(),
                r#type: Some(6),
                ..Default::default()
            });
        }
        n
    };
    let a = build(
        13,
        vec![
            fused(
                "FusedConv",
                "conv",
                &["X", "Wc", "Bc"],
                "c",
                "LeakyRelu",
                &[0.25],
            ),
            node("Flatten", "flat", &["c"], &["f"]),
            fused("FusedGemm", "gemm", &["f", "Wg"], "g", "Clip", &[0.0, 6.0]),
            node("MatMul", "head", &["g", "Wh"], &["Y"]),
        ],
        vec![
            weights("Wc", &[4, 3, 3, 3]),
            weights("Bc", &[4]),
            weights("Wg", &[8, 16]),
            weights("Wh", &[8, 2]),
        ],
        &["Y"],
    );
    assert!(a.unknown_ops.is_empty(), "{:?}", a.unknown_ops);
    let got: Vec<(&str, Activation)> = a
        .layers
        .iter()
        .map(|l| (l.op.name(), l.activation.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("FusedConv", Activation::LeakyRelu { alpha: 0.25 }),
            ("FusedGemm", Activation::Relu6),
            ("MatMul", Activation::None),
        ]
    );
    assert_eq!((a.layers[0].fan_in, a.layers[0].groups), (27, 1));
    // Gemm without transB: Y = X·W, W stored (in × out).
    assert_eq!((a.layers[1].n_out, a.layers[1].n_in), (16, 8));
}
