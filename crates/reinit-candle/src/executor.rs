//! The executor: an ONNX graph over candle tensors, weights as trainable
//! [`Var`]s.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::{DType, Device, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use reinit_onnx::proto::{GraphProto, NodeProto};
use reinit_onnx::{Model, TensorOrigin};

mod activations;

pub use activations::ActivationProfile;
use activations::{ActivationCount, is_spatial, is_view};

use crate::error::{ExecError, UnsupportedOp};
use crate::ops::{self, CONTROL_FLOW, Op, OpArgs, Registry};
use crate::prepare::{
    annotate_quantize_targets, collect_ops, input_spec, last_readers, main_graph_layers, node_name,
    op_of, op_type, visit_nodes,
};

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

/// How one graph run treats its environment.
#[derive(Clone, Copy)]
struct RunPlan<'a> {
    /// See `Executor::last_readers`; empty inside subgraphs.
    release: &'a [Vec<String>],
    /// Adds the bytes of every float node output computed.
    count: Option<&'a ActivationCount>,
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

    /// Whether the graph has a Dropout node (its training pass then differs
    /// from a [`Mode::Probe`] pass of the same weights).
    pub fn has_dropout(&self) -> bool {
        let mut found = false;
        visit_nodes(&self.graph, &mut |node| {
            found |= op_of(node) == Some(Op::Dropout);
        });
        found
    }

    /// Whether one sample's output depends on the other samples of its batch
    /// (a BatchNormalization node, which normalizes with batch statistics in
    /// training and probing). Without one, a probe of one sample can run at
    /// batch 1 and get exactly what it would read off a larger batch.
    pub fn couples_samples(&self) -> bool {
        let mut found = false;
        visit_nodes(&self.graph, &mut |node| {
            found |= op_of(node) == Some(Op::BatchNormalization);
        });
        found
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
        Ok(self.activation_profile(inputs)?.bytes)
    }

    /// [`Executor::activation_bytes`], and how much of it the spatial ops
    /// (convolutions, pooling, BatchNormalization, LRN) produce.
    pub fn activation_profile(
        &self,
        inputs: &HashMap<String, Tensor>,
    ) -> Result<ActivationProfile, ExecError> {
        let count = ActivationCount::default();
        self.forward_planned(inputs, Mode::Eval, &[], Some(&count), true)?;
        Ok(count.profile())
    }

    fn forward_planned(
        &self,
        inputs: &HashMap<String, Tensor>,
        mode: Mode,
        probes: &[String],
        count: Option<&ActivationCount>,
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
            // A transposed weight is a view of the weight (ViT's and BERT's
            // exporters transpose every projection matrix before its MatMul);
            // a transposed activation is counted, as its reader copies it.
            let weight_view = kind == Some(Op::Transpose)
                && node
                    .input
                    .first()
                    .is_some_and(|n| self.param_index.contains_key(n));
            let counted = plan
                .count
                .filter(|_| !kind.is_some_and(is_view) && !weight_view);
            for (name, t) in node.output.iter().zip(outs) {
                if let Some(c) = counted.filter(|_| t.dtype().is_float()) {
                    c.add(
                        (t.elem_count() * t.dtype().size_in_bytes()) as u64,
                        kind.is_some_and(is_spatial),
                    );
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
        count: Option<&ActivationCount>,
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

impl RunPlan<'_> {
    fn release_after(&self, index: usize, env: &mut HashMap<String, Tensor>) {
        for name in self.release.get(index).into_iter().flatten() {
            env.remove(name);
        }
    }
}
