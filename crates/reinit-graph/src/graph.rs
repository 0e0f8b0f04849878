//! A flattened, indexed view of the model's graphs (main graph and subgraphs
//! of `If`/`Loop`/`Scan`), parsed once: producers, consumers, constant values
//! and which values are "meta" (constants or shape computations, never data).

use std::collections::{HashMap, HashSet};

use reinit_onnx::proto::{AttributeProto, GraphProto, NodeProto};
use reinit_onnx::{Model, TensorId, TensorOrigin};

use crate::ops::{Op, OpClass};
use crate::types::Transform;

pub(crate) struct Node<'m> {
    pub proto: &'m NodeProto,
    pub name: &'m str,
    /// The op type as written.
    pub op: &'m str,
    pub domain: &'m str,
    /// The op, read once from the table; `None` for an op outside it.
    pub kind: Option<Op>,
    /// Inputs; `""` for an omitted optional input.
    pub inputs: Vec<&'m str>,
    pub outputs: Vec<&'m str>,
    /// Outputs of this node's subgraphs: they feed its outputs, so ancestry
    /// walks treat them as extra inputs.
    pub sub_outputs: Vec<&'m str>,
}

impl<'m> Node<'m> {
    pub fn class(&self) -> Option<OpClass> {
        self.kind.map(Op::class)
    }

    /// The op type for messages, `domain::` prefixed outside the default domain.
    pub fn qualified_op(&self) -> String {
        match self.kind {
            Some(op) => op.qualified_name(),
            None if matches!(self.domain, "" | "ai.onnx") => self.op.to_string(),
            None => format!("{}::{}", self.domain, self.op),
        }
    }

    pub fn input(&self, i: usize) -> Option<&'m str> {
        self.inputs.get(i).copied().filter(|s| !s.is_empty())
    }

    pub fn output(&self) -> &'m str {
        self.outputs.first().copied().unwrap_or("")
    }

    pub fn attr(&self, name: &str) -> Option<&'m AttributeProto> {
        self.proto
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(name))
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.attr(name).and_then(|a| a.i)
    }

    pub fn float(&self, name: &str) -> Option<f64> {
        self.attr(name).and_then(|a| a.f).map(f64::from)
    }

    pub fn ints(&self, name: &str) -> Option<&'m [i64]> {
        self.attr(name).map(|a| a.ints.as_slice())
    }

    pub fn floats(&self, name: &str) -> Option<&'m [f32]> {
        self.attr(name).map(|a| a.floats.as_slice())
    }

    pub fn string(&self, name: &str) -> Option<String> {
        self.attr(name)
            .and_then(|a| a.s.as_ref())
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }
}

/// A constant weight found behind a chain of value-preserving ops.
pub(crate) struct ConstSource {
    pub tensor: TensorId,
    /// Ops between the tensor and the consumer, in graph order.
    pub via: Vec<String>,
    pub steps: Vec<Transform>,
    /// Dims seen by the consumer.
    pub operand_shape: Vec<usize>,
    pub dequantized: bool,
}

pub(crate) struct Graph<'m> {
    pub model: &'m Model,
    pub nodes: Vec<Node<'m>>,
    pub producer: HashMap<&'m str, usize>,
    pub consumers: HashMap<&'m str, Vec<usize>>,
    pub outputs: HashSet<&'m str>,
    /// Subgraph output → (parent node, output position).
    pub sub_outputs: HashMap<&'m str, (usize, usize)>,
    /// Initializers and `Constant` values by name.
    pub tensors: HashMap<&'m str, TensorId>,
    /// Constants and values computed only from constants and shapes.
    pub meta: HashSet<&'m str>,
    pub opset: i64,
}

impl<'m> Graph<'m> {
    pub fn new(model: &'m Model) -> Graph<'m> {
        let proto = model.proto();
        let opset = proto
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .and_then(|o| o.version)
            .unwrap_or(1);
        let mut graph = Graph {
            model,
            nodes: Vec::new(),
            producer: HashMap::new(),
            consumers: HashMap::new(),
            outputs: HashSet::new(),
            sub_outputs: HashMap::new(),
            tensors: HashMap::new(),
            meta: HashSet::new(),
            opset,
        };
        for id in model.ids() {
            let entry = model.tensor(id);
            let usable = match &entry.origin {
                TensorOrigin::Initializer { .. } => true,
                TensorOrigin::NodeAttribute { op_type, attr, .. } => {
                    op_type == "Constant" && attr == "value"
                }
            };
            if !usable {
                continue;
            }
            let name = entry.name.as_str();
            let replace = match graph.tensors.get(name) {
                None => true,
                Some(&old) => {
                    !model.tensor(old).origin.is_main_initializer()
                        && entry.origin.is_main_initializer()
                }
            };
            if replace {
                graph.tensors.insert(name, id);
            }
        }
        if let Some(main) = &proto.graph {
            graph.add_graph(main);
            graph.outputs = main
                .output
                .iter()
                .filter_map(|o| o.name.as_deref())
                .collect();
        }
        graph.meta = graph.tensors.keys().copied().collect();
        for node in &graph.nodes {
            let constant = match node.kind {
                Some(Op::Constant | Op::Shape | Op::Size) => true,
                _ => {
                    node.sub_outputs.is_empty()
                        && node.inputs.iter().any(|i| !i.is_empty())
                        && node
                            .inputs
                            .iter()
                            .all(|i| i.is_empty() || graph.meta.contains(i))
                }
            };
            if constant {
                graph.meta.extend(node.outputs.iter().copied());
            }
        }
        graph
    }

    fn add_graph(&mut self, g: &'m GraphProto) {
        for proto in &g.node {
            let op = proto.op_type.as_deref().unwrap_or("");
            let mut subgraphs: Vec<(&str, &'m GraphProto)> = proto
                .attribute
                .iter()
                .filter_map(|a| Some((a.name.as_deref().unwrap_or(""), a.g.as_ref()?)))
                .collect();
            // `If` runs then/else; list then first whatever the attribute order.
            subgraphs.sort_by_key(|(name, _)| *name != "then_branch");
            let mut sub_outputs = Vec::new();
            for (_, sub) in &subgraphs {
                self.add_graph(sub);
            }
            let index = self.nodes.len();
            for (_, sub) in &subgraphs {
                for (pos, out) in sub.output.iter().enumerate() {
                    if let Some(name) = out.name.as_deref() {
                        sub_outputs.push(name);
                        self.sub_outputs.insert(name, (index, pos));
                    }
                }
            }
            let domain = proto.domain.as_deref().unwrap_or("");
            let node = Node {
                proto,
                name: proto.name.as_deref().unwrap_or(""),
                op,
                domain,
                kind: Op::parse(domain, op),
                inputs: proto.input.iter().map(String::as_str).collect(),
                outputs: proto.output.iter().map(String::as_str).collect(),
                sub_outputs,
            };
            for &input in node.inputs.iter().filter(|i| !i.is_empty()) {
                let list = self.consumers.entry(input).or_default();
                if list.last() != Some(&index) {
                    list.push(index);
                }
            }
            for &output in node.outputs.iter().filter(|o| !o.is_empty()) {
                self.producer.insert(output, index);
            }
            self.nodes.push(node);
        }
    }

    pub fn producer_of(&self, value: &str) -> Option<&Node<'m>> {
        self.producer.get(value).map(|&i| &self.nodes[i])
    }

    pub fn consumers_of(&self, value: &str) -> &[usize] {
        self.consumers.get(value).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn is_meta(&self, value: &str) -> bool {
        value.is_empty() || self.meta.contains(value)
    }

    /// Data (non-meta) inputs of a node, subgraph outputs included.
    pub fn data_inputs(&self, node: &Node<'m>) -> Vec<&'m str> {
        node.inputs
            .iter()
            .chain(&node.sub_outputs)
            .copied()
            .filter(|i| !self.is_meta(i))
            .collect()
    }

    /// The constant weight behind `value`, through Identity/Cast/Transpose/
    /// constant Reshape/DequantizeLinear.
    pub fn resolve_const(&self, value: &str) -> Option<ConstSource> {
        let mut via = Vec::new();
        let mut raw_steps = Vec::new();
        let mut dequantized = false;
        let mut current = value;
        let tensor = loop {
            if let Some(&id) = self.tensors.get(current) {
                break id;
            }
            let node = self.producer_of(current)?;
            match node.kind? {
                Op::Identity | Op::Cast => {}
                Op::Transpose => {
                    raw_steps.push(RawStep::Transpose(node.ints("perm").map(|p| p.to_vec())))
                }
                Op::Reshape => {
                    let shape = self.const_ints(node.input(1)?)?;
                    raw_steps.push(RawStep::Reshape(shape));
                }
                Op::DequantizeLinear => dequantized = true,
                _ => return None,
            }
            via.push(node.op.to_string());
            current = node.input(0)?;
        };
        via.reverse();
        raw_steps.reverse();
        let mut dims = self.model.tensor(tensor).dims.clone();
        let mut steps = Vec::new();
        for step in raw_steps {
            match step {
                RawStep::Transpose(perm) => {
                    let perm = perm.unwrap_or_else(|| (0..dims.len() as i64).rev().collect());
                    let mut seen = vec![false; dims.len()];
                    if perm.len() != dims.len()
                        || perm.iter().any(|&p| {
                            let bad = p < 0 || p as usize >= dims.len() || seen[p as usize];
                            if !bad {
                                seen[p as usize] = true;
                            }
                            bad
                        })
                    {
                        return None;
                    }
                    let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
                    dims = perm.iter().map(|&p| dims[p]).collect();
                    steps.push(Transform::Transpose(perm));
                }
                RawStep::Reshape(shape) => {
                    dims = reshape_dims(&dims, &shape)?;
                    steps.push(Transform::Reshape(dims.clone()));
                }
            }
        }
        Some(ConstSource {
            tensor,
            via,
            steps,
            operand_shape: dims,
            dequantized,
        })
    }

    /// Integer values of a constant (shape tensors, axes).
    pub fn const_ints(&self, value: &str) -> Option<Vec<i64>> {
        let mut current = value;
        loop {
            if let Some(&id) = self.tensors.get(current) {
                return self.model.read_i64(id).ok();
            }
            let node = self.producer_of(current)?;
            match node.kind? {
                Op::Identity | Op::Cast => current = node.input(0)?,
                Op::Constant => {
                    let a = node.attr("value_ints").or_else(|| node.attr("value_int"))?;
                    return Some(if a.ints.is_empty() {
                        vec![a.i?]
                    } else {
                        a.ints.clone()
                    });
                }
                _ => return None,
            }
        }
    }

    /// A constant scalar (Clip bounds, LeakyRelu slopes fed as inputs …).
    pub fn const_scalar(&self, value: &str) -> Option<f64> {
        let mut current = value;
        loop {
            if let Some(&id) = self.tensors.get(current) {
                let values = self.model.read_f64(id).ok()?;
                return (values.len() == 1).then(|| values[0]);
            }
            let node = self.producer_of(current)?;
            match node.kind? {
                Op::Identity | Op::Cast => current = node.input(0)?,
                Op::Constant => {
                    return node
                        .float("value_float")
                        .or_else(|| node.int("value_int").map(|i| i as f64));
                }
                _ => return None,
            }
        }
    }
}

enum RawStep {
    Transpose(Option<Vec<i64>>),
    Reshape(Vec<i64>),
}

/// ONNX Reshape semantics (0 copies, −1 infers; `allowzero` ignored).
fn reshape_dims(input: &[usize], shape: &[i64]) -> Option<Vec<usize>> {
    let total: usize = input.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            0 => out.push(*input.get(i)?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            s if s > 0 => out.push(s as usize),
            _ => return None,
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer {
        if known == 0 || (total / known) * known != total {
            return None;
        }
        out[i] = total / known;
    }
    (out.iter().product::<usize>() == total).then_some(out)
}
