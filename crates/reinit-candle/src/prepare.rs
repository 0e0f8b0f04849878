//! What the executor reads from the graph before it runs it: node names and
//! ops, graph-input specs, every op used (to refuse unsupported ones at
//! once), QuantizeLinear's integer targets, the last reader of every value
//! (to free it early) and the analysis' weight layers it probes.

use std::collections::{BTreeMap, HashMap, HashSet};

use reinit_onnx::Model;
use reinit_onnx::proto::{GraphProto, NodeProto, ValueInfoProto};

use crate::executor::{InputSpec, Layer, Param};
use crate::ops::Op;

pub(crate) fn node_name(node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => node.output.first().cloned().unwrap_or_default(),
    }
}

pub(crate) fn op_type(node: &NodeProto) -> &str {
    node.op_type.as_deref().unwrap_or("")
}

fn is_default_domain(node: &NodeProto) -> bool {
    matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

/// The node's op in the shared table, `None` outside it.
pub(crate) fn op_of(node: &NodeProto) -> Option<Op> {
    Op::parse(node.domain.as_deref().unwrap_or(""), op_type(node))
}

pub(crate) fn input_spec(v: &ValueInfoProto) -> InputSpec {
    use reinit_onnx::proto::tensor_shape_proto::dimension::Value as Dim;
    use reinit_onnx::proto::type_proto::Value as Ty;
    let mut dims = Vec::new();
    let mut dtype = reinit_onnx::DType::F32;
    if let Some(Ty::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        dtype = reinit_onnx::DType::from_onnx(t.elem_type.unwrap_or(1));
        if let Some(shape) = &t.shape {
            dims = shape
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                })
                .collect();
        }
    }
    InputSpec {
        name: v.name.clone().unwrap_or_default(),
        dims,
        dtype,
    }
}

/// Every op type used by `graph` and its subgraphs, with the nodes using it.
pub(crate) fn collect_ops(graph: &GraphProto, out: &mut BTreeMap<(String, String), Vec<String>>) {
    for node in &graph.node {
        let domain = if is_default_domain(node) {
            String::new()
        } else {
            node.domain.clone().unwrap_or_default()
        };
        out.entry((domain, op_type(node).to_string()))
            .or_default()
            .push(node_name(node));
        for attr in &node.attribute {
            if let Some(g) = &attr.g {
                collect_ops(g, out);
            }
            for g in &attr.graphs {
                collect_ops(g, out);
            }
        }
    }
}

/// QuantizeLinear's integer range comes from its zero point's type, which the
/// executor's i64 integers no longer carry: it is written into the node as
/// the opset-21 `output_dtype` attribute (which means the same) beforehand.
pub(crate) fn annotate_quantize_targets(graph: &mut GraphProto) {
    let mut types: HashMap<String, i32> = graph
        .initializer
        .iter()
        .filter_map(|t| Some((t.name.clone()?, t.data_type?)))
        .collect();
    for node in &graph.node {
        if op_type(node) == "Constant" {
            let value = node.attribute.iter().find_map(|a| a.t.as_ref());
            if let (Some(out), Some(t)) = (node.output.first(), value) {
                types.insert(out.clone(), t.data_type.unwrap_or(1));
            }
        }
    }
    for node in &mut graph.node {
        let has_target = node
            .attribute
            .iter()
            .any(|a| a.name.as_deref() == Some("output_dtype"));
        if op_type(node) != "QuantizeLinear" || has_target {
            continue;
        }
        if let Some(&t) = node.input.get(2).and_then(|zp| types.get(zp)) {
            node.attribute.push(reinit_onnx::proto::AttributeProto {
                name: Some("output_dtype".into()),
                r#type: Some(2),
                i: Some(t as i64),
                ..Default::default()
            });
        }
    }
}

/// For each top-level node, the values it is the last to read (subgraph
/// reads count as reads by the `If`/`Loop` node); graph outputs are kept.
pub(crate) fn last_readers(graph: &GraphProto) -> Vec<Vec<String>> {
    let mut last: HashMap<String, usize> = HashMap::new();
    for (i, node) in graph.node.iter().enumerate() {
        let mut reads = node.input.clone();
        for attr in &node.attribute {
            for g in attr.g.iter().chain(&attr.graphs) {
                collect_reads(g, &mut reads);
            }
        }
        for r in reads.into_iter().filter(|r| !r.is_empty()) {
            last.insert(r, i);
        }
    }
    let outputs: HashSet<&str> = graph
        .output
        .iter()
        .filter_map(|v| v.name.as_deref())
        .collect();
    let mut plan = vec![Vec::new(); graph.node.len()];
    for (name, i) in last {
        if !outputs.contains(name.as_str()) {
            plan[i].push(name);
        }
    }
    plan
}

fn collect_reads(graph: &GraphProto, out: &mut Vec<String>) {
    visit_nodes(graph, &mut |n| out.extend(n.input.iter().cloned()));
}

pub(crate) fn visit_nodes(graph: &GraphProto, f: &mut dyn FnMut(&NodeProto)) {
    for node in &graph.node {
        f(node);
        for attr in &node.attribute {
            if let Some(g) = &attr.g {
                visit_nodes(g, f);
            }
            for g in &attr.graphs {
                visit_nodes(g, f);
            }
        }
    }
}

/// The analysis' weight layers of the main graph whose weight is a trainable
/// parameter, in graph order (see [`Layer`]). Layers inside subgraphs are left
/// out: their values live only while the subgraph runs, so they cannot be probed.
pub(crate) fn main_graph_layers(
    model: &Model,
    graph: &GraphProto,
    index: &HashMap<String, usize>,
    params: &[Param],
) -> Vec<Layer> {
    let main_values: HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.output.iter().map(String::as_str))
        .collect();
    let trainable = |name: &str| index.get(name).is_some_and(|&i| params[i].trainable);
    reinit_graph::analyze(model)
        .layers
        .into_iter()
        .filter(|l| main_values.contains(l.output.as_str()) && trainable(&l.weight_name))
        .map(|l| Layer {
            name: if l.node.is_empty() {
                l.output.clone()
            } else {
                l.node
            },
            op: l.op.name().to_string(),
            weight: l.weight_name,
            output: l.output,
        })
        .collect()
}
