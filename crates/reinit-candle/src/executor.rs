//! The executor: an ONNX graph over candle tensors, weights as trainable
//! [`Var`]s.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use reinit_onnx::proto::{GraphProto, NodeProto, ValueInfoProto};
use reinit_onnx::{Model, TensorOrigin};

use crate::error::{ExecError, UnsupportedOp};
use crate::ops::{self, CONTROL_FLOW, Op, OpArgs, Registry};

/// How stateful and stochastic ops behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// BatchNormalization uses batch statistics and updates its running
    /// statistics; Dropout is active.
    Train,
    /// BatchNormalization uses its running statistics; Dropout is off.
    Eval,
    /// As the network is seen during training, without side effects:
    /// BatchNormalization uses batch statistics but updates nothing; Dropout is
    /// off. Used by the probes, and for graphs exported with
    /// `training_mode=1` (which onnxruntime runs with batch statistics).
    Probe,
}

/// One graph input as the model declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    /// `None` for a symbolic or unknown dimension.
    pub dims: Vec<Option<usize>>,
    pub dtype: reinit_onnx::DType,
}

/// A float tensor of the model held as a candle [`Var`].
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    /// False for buffers (BatchNormalization running mean/variance), which only
    /// change through the running-statistics update in [`Mode::Train`].
    pub trainable: bool,
}

/// A weighted layer of the main graph as the graph analysis
/// (`reinit_graph::analyze`) finds it, whose weight is a trainable parameter.
/// Its output is the probe point for signal propagation and LSUV.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Layer {
    /// The node name (or its first output when the node is unnamed).
    pub name: String,
    pub op: String,
    pub weight: String,
    pub output: String,
}

/// Values of one forward pass: the graph outputs, in graph order, and the
/// intermediate values asked for.
#[derive(Debug, Clone)]
pub struct Outputs {
    pub outputs: Vec<(String, Tensor)>,
    pub probes: HashMap<String, Tensor>,
}

impl Outputs {
    /// The first graph output.
    pub fn first(&self) -> &Tensor {
        &self.outputs[0].1
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.outputs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .or_else(|| self.probes.get(name))
    }
}

pub struct Executor {
    device: Device,
    dtype: DType,
    opset: i64,
    graph: GraphProto,
    registry: Registry,
    params: Vec<Param>,
    param_index: HashMap<String, usize>,
    constants: HashMap<String, Tensor>,
    inputs: Vec<InputSpec>,
    outputs: Vec<String>,
    layers: Vec<Layer>,
    rng: RefCell<ChaCha8Rng>,
    /// Per top-level node: the values whose last reader it is (graph outputs
    /// excluded), dropped from the environment once it has run so that an
    /// untracked forward holds only the live activations.
    last_readers: Vec<Vec<String>>,
}

/// Ops whose output shares its input's storage (or is a shape): not counted
/// by [`Executor::activation_bytes`].
const VIEW_OPS: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Identity",
    "Shape",
    "Constant",
    "Size",
];

/// How one graph run treats its environment.
#[derive(Clone, Copy)]
struct RunPlan<'a> {
    /// See `Executor::last_readers`; empty inside subgraphs.
    release: &'a [Vec<String>],
    /// Adds the bytes of every float node output computed.
    count: Option<&'a std::cell::Cell<u64>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .field("params", &self.params.len())
            .field("nodes", &self.graph.node.len())
            .finish()
    }
}

fn node_name(node: &NodeProto) -> String {
    match node.name.as_deref() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => node.output.first().cloned().unwrap_or_default(),
    }
}

fn op_type(node: &NodeProto) -> &str {
    node.op_type.as_deref().unwrap_or("")
}

fn is_default_domain(node: &NodeProto) -> bool {
    matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx"))
}

/// The node's op in the shared table, `None` outside it.
fn op_of(node: &NodeProto) -> Option<Op> {
    Op::parse(node.domain.as_deref().unwrap_or(""), op_type(node))
}

fn input_spec(v: &ValueInfoProto) -> InputSpec {
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
fn collect_ops(graph: &GraphProto, out: &mut BTreeMap<(String, String), Vec<String>>) {
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

impl Executor {
    /// Prepares `model` for execution in f32 on `device`.
    pub fn new(model: &Model, device: &Device) -> Result<Executor, ExecError> {
        Executor::with_dtype(model, device, DType::F32)
    }

    /// Prepares `model` with floating values in `dtype` (f32, or f64 for
    /// gradient checks). Fails with [`ExecError::Unsupported`] listing every
    /// unsupported op at once.
    pub fn with_dtype(model: &Model, device: &Device, dtype: DType) -> Result<Executor, ExecError> {
        let proto = model.proto();
        let graph = proto
            .graph
            .clone()
            .ok_or_else(|| ExecError::Invalid("the model has no graph".into()))?;
        let opset = proto
            .opset_import
            .iter()
            .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
            .and_then(|o| o.version)
            .unwrap_or(1);
        let registry = ops::registry();

        let mut used = BTreeMap::new();
        collect_ops(&graph, &mut used);
        let unsupported: Vec<UnsupportedOp> = used
            .into_iter()
            .filter(|((domain, op), _)| {
                !Op::parse(domain, op)
                    .is_some_and(|op| registry.contains_key(&op) || CONTROL_FLOW.contains(&op))
            })
            .map(|((domain, op_type), nodes)| {
                let key = if domain.is_empty() {
                    op_type.clone()
                } else {
                    format!("{domain}::{op_type}")
                };
                let reason = ops::quant::INTEGER_ONLY
                    .contains(&key.as_str())
                    .then(|| ops::quant::INTEGER_ONLY_REASON.to_string());
                UnsupportedOp {
                    op_type,
                    domain,
                    nodes,
                    reason,
                }
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(ExecError::Unsupported(unsupported));
        }
        let mut graph = graph;
        annotate_quantize_targets(&mut graph);

        // BatchNormalization running statistics are buffers, not weights.
        let mut buffers = HashSet::new();
        visit_nodes(&graph, &mut |node| {
            if op_of(node) == Some(Op::BatchNormalization) {
                for i in [3, 4] {
                    if let Some(n) = node.input.get(i) {
                        buffers.insert(n.clone());
                    }
                }
            }
        });

        let mut params = Vec::new();
        let mut param_index = HashMap::new();
        let mut constants = HashMap::new();
        for id in model.ids() {
            let entry = model.tensor(id);
            let from_constant_node = matches!(
                &entry.origin,
                TensorOrigin::NodeAttribute { op_type, attr, .. } if op_type == "Constant" && attr == "value"
            );
            let is_init = matches!(entry.origin, TensorOrigin::Initializer { .. });
            if !is_init && !from_constant_node {
                continue;
            }
            let dims = entry.dims.clone();
            if entry.dtype.is_float() {
                let values = model.read_f64(id)?;
                let t = Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?
                    .to_dtype(dtype)?
                    .to_device(device)?;
                // A Constant node's float tensor is a weight when it is a
                // matrix or larger (the hand-built models keep weights there);
                // scalars and vectors stay constants (scales, epsilons).
                if is_init || dims.len() >= 2 {
                    let trainable = !buffers.contains(&entry.name);
                    param_index.insert(entry.name.clone(), params.len());
                    params.push(Param {
                        name: entry.name.clone(),
                        var: Var::from_tensor(&t)?,
                        trainable,
                    });
                } else {
                    constants.insert(entry.name.clone(), t);
                }
            } else {
                let values = model.read_i64(id)?;
                let t = Tensor::from_vec(values, dims.as_slice(), &Device::Cpu)?;
                let t = if entry.dtype == reinit_onnx::DType::Bool {
                    t.ne(0i64)?
                } else {
                    t
                };
                constants.insert(entry.name.clone(), t);
            }
        }

        let init_names: HashSet<&str> = graph
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .collect();
        let inputs: Vec<InputSpec> = graph
            .input
            .iter()
            .filter(|v| !init_names.contains(v.name.as_deref().unwrap_or("")))
            .map(input_spec)
            .collect();
        let outputs = graph
            .output
            .iter()
            .map(|v| v.name.clone().unwrap_or_default())
            .collect();
        let layers = main_graph_layers(model, &graph, &param_index, &params);
        let last_readers = last_readers(&graph);
        Ok(Executor {
            device: device.clone(),
            dtype,
            opset,
            graph,
            registry,
            params,
            param_index,
            constants,
            inputs,
            outputs,
            layers,
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(0)),
            last_readers,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Graph inputs that are not initializers.
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// All float tensors held as variables, weights and buffers.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        self.param_index.get(name).map(|&i| &self.params[i])
    }

    /// The variables an optimizer updates.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.var.clone())
            .collect()
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Reseeds the RNG used by Dropout.
    pub fn seed(&self, seed: u64) {
        *self.rng.borrow_mut() = ChaCha8Rng::seed_from_u64(seed);
    }

    /// Runs the graph; see [`Executor::forward_probed`].
    pub fn forward(
        &self,
        inputs: &HashMap<String, Tensor>,
        mode: Mode,
    ) -> Result<Outputs, ExecError> {
        self.forward_probed(inputs, mode, &[])
    }

    /// Runs the graph on `inputs` (by graph input name) and returns the graph
    /// outputs plus the values named in `probes` (any node output).
    ///
    /// In [`Mode::Eval`] the weights enter detached: nothing is recorded for
    /// backpropagation, so each intermediate value is freed after its last
    /// reader and the pass holds only the live activations (no gradient can
    /// be taken of an Eval output).
    pub fn forward_probed(
        &self,
        inputs: &HashMap<String, Tensor>,
        mode: Mode,
        probes: &[String],
    ) -> Result<Outputs, ExecError> {
        self.forward_planned(inputs, mode, probes, None, mode == Mode::Eval)
    }

    /// [`Executor::forward`] with the weights detached in any mode: a
    /// backward from its outputs reaches the inputs only (the Jacobian probe
    /// makes its input a `Var`).
    pub fn forward_frozen(
        &self,
        inputs: &HashMap<String, Tensor>,
        mode: Mode,
    ) -> Result<Outputs, ExecError> {
        self.forward_planned(inputs, mode, &[], None, true)
    }

    /// Bytes of the float values one [`Mode::Eval`] pass on `inputs` computes
    /// (views and shapes not counted): what a training pass keeps alive for
    /// the backward, the basis of the memory estimate (`crate::memory`).
    pub fn activation_bytes(&self, inputs: &HashMap<String, Tensor>) -> Result<u64, ExecError> {
        let count = std::cell::Cell::new(0);
        self.forward_planned(inputs, Mode::Eval, &[], Some(&count), true)?;
        Ok(count.get())
    }

    fn forward_planned(
        &self,
        inputs: &HashMap<String, Tensor>,
        mode: Mode,
        probes: &[String],
        count: Option<&std::cell::Cell<u64>>,
        frozen: bool,
    ) -> Result<Outputs, ExecError> {
        let mut env: HashMap<String, Tensor> = self.constants.clone();
        for p in &self.params {
            let t = p.var.as_tensor();
            let t = if frozen { t.detach() } else { t.clone() };
            env.insert(p.name.clone(), t);
        }
        for spec in &self.inputs {
            let t = inputs
                .get(&spec.name)
                .ok_or_else(|| ExecError::MissingInput(spec.name.clone()))?;
            env.insert(spec.name.clone(), self.normalize_input(t)?);
        }
        let mut probed = HashMap::new();
        let keep: HashSet<&str> = probes.iter().map(String::as_str).collect();
        let plan = RunPlan {
            release: if keep.is_empty() {
                &self.last_readers
            } else {
                &[]
            },
            count,
        };
        self.run_graph(&self.graph.node, &mut env, mode, plan)?;
        let take = |name: &String| {
            env.get(name)
                .cloned()
                .ok_or_else(|| ExecError::MissingValue(name.clone()))
        };
        let outputs = self
            .outputs
            .iter()
            .map(|n| Ok((n.clone(), take(n)?)))
            .collect::<Result<Vec<_>, ExecError>>()?;
        for n in probes {
            probed.insert(n.clone(), take(n)?);
        }
        Ok(Outputs {
            outputs,
            probes: probed,
        })
    }

    /// Floats to the compute dtype on the device; integers to i64 on the CPU;
    /// booleans (u8) stay u8 on the CPU.
    fn normalize_input(&self, t: &Tensor) -> Result<Tensor, ExecError> {
        Ok(if t.dtype().is_float() {
            t.to_dtype(self.dtype)?.to_device(&self.device)?
        } else if t.dtype() == DType::U8 {
            t.to_device(&Device::Cpu)?
        } else {
            t.to_device(&Device::Cpu)?.to_dtype(DType::I64)?
        })
    }

    fn run_graph(
        &self,
        nodes: &[NodeProto],
        env: &mut HashMap<String, Tensor>,
        mode: Mode,
        plan: RunPlan,
    ) -> Result<(), ExecError> {
        for (index, node) in nodes.iter().enumerate() {
            let op = op_type(node);
            if op == "Constant" && node.output.iter().all(|o| env.contains_key(o)) {
                continue;
            }
            let node_err = |message: String| ExecError::Node {
                node: node_name(node),
                op: op.to_string(),
                message,
            };
            let kind = op_of(node);
            if kind == Some(Op::If) {
                self.run_if(node, env, mode, plan.count)
                    .map_err(|e| match e {
                        e @ ExecError::Node { .. } => e,
                        other => node_err(other.to_string()),
                    })?;
                plan.release_after(index, env);
                continue;
            }
            let f = kind
                .and_then(|op| self.registry.get(&op))
                .ok_or_else(|| node_err("unsupported op".into()))?;
            let inputs = node
                .input
                .iter()
                .map(|n| {
                    if n.is_empty() {
                        Ok(None)
                    } else {
                        env.get(n)
                            .cloned()
                            .map(Some)
                            .ok_or_else(|| node_err(format!("input `{n}` is not computed")))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let args = OpArgs {
                node,
                inputs,
                mode,
                opset: self.opset,
                dtype: self.dtype,
                device: &self.device,
                rng: &self.rng,
                state: RefCell::new(Vec::new()),
            };
            let outs = f(&args).map_err(|e| node_err(e.0))?;
            if mode == Mode::Train {
                for (i, value) in args.state.take() {
                    let Some(name) = node.input.get(i) else {
                        continue;
                    };
                    if let Some(p) = self.param(name).filter(|p| !p.trainable) {
                        p.var.set(&value.detach())?;
                    }
                }
            }
            let counted = plan.count.filter(|_| !VIEW_OPS.contains(&op));
            for (name, t) in node.output.iter().zip(outs) {
                if let Some(c) = counted.filter(|_| t.dtype().is_float()) {
                    c.set(c.get() + (t.elem_count() * t.dtype().size_in_bytes()) as u64);
                }
                if !name.is_empty() {
                    env.insert(name.clone(), t);
                }
            }
            plan.release_after(index, env);
        }
        Ok(())
    }

    fn run_if(
        &self,
        node: &NodeProto,
        env: &mut HashMap<String, Tensor>,
        mode: Mode,
        count: Option<&std::cell::Cell<u64>>,
    ) -> Result<(), ExecError> {
        let cond_name = node.input.first().cloned().unwrap_or_default();
        let cond = env
            .get(&cond_name)
            .ok_or_else(|| ExecError::MissingValue(cond_name.clone()))?;
        let cond = ops::scalar_f64(cond).map_err(|e| ExecError::Invalid(e.0))? != 0.0;
        let branch = if cond { "then_branch" } else { "else_branch" };
        let graph = node
            .attribute
            .iter()
            .find(|a| a.name.as_deref() == Some(branch))
            .and_then(|a| a.g.as_ref())
            .ok_or_else(|| ExecError::Invalid(format!("If without {branch}")))?;
        let mut inner = env.clone();
        let plan = RunPlan {
            release: &[],
            count,
        };
        self.run_graph(&graph.node, &mut inner, mode, plan)?;
        for (out, sub) in node.output.iter().zip(&graph.output) {
            let sub = sub.name.clone().unwrap_or_default();
            let t = inner
                .get(&sub)
                .cloned()
                .ok_or_else(|| ExecError::MissingValue(sub.clone()))?;
            env.insert(out.clone(), t);
        }
        Ok(())
    }
}

/// QuantizeLinear's integer range comes from its zero point's type, which the
/// executor's i64 integers no longer carry: it is written into the node as
/// the opset-21 `output_dtype` attribute (which means the same) beforehand.
fn annotate_quantize_targets(graph: &mut GraphProto) {
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

impl RunPlan<'_> {
    fn release_after(&self, index: usize, env: &mut HashMap<String, Tensor>) {
        for name in self.release.get(index).into_iter().flatten() {
            env.remove(name);
        }
    }
}

/// For each top-level node, the values it is the last to read (subgraph
/// reads count as reads by the `If`/`Loop` node); graph outputs are kept.
fn last_readers(graph: &GraphProto) -> Vec<Vec<String>> {
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

fn visit_nodes(graph: &GraphProto, f: &mut dyn FnMut(&NodeProto)) {
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
fn main_graph_layers(
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
