//! The analysis passes, in order: weight layers / embeddings / norms, residual
//! blocks, activation after each layer, then the derived facts (roles, shared
//! weights, fused BN, chain, skipped tensors).

use std::collections::{HashMap, HashSet};

use reinit_onnx::{Model, TensorId};

use crate::graph::{ConstSource, Graph, Node};
use crate::layout::{delta_tap, same_pads};
use crate::types::*;

/// Analyzes `model`. Never fails: what is not understood is reported in
/// `warnings`, `skipped` and `unknown_ops`.
pub fn analyze(model: &Model) -> Analysis {
    let graph = Graph::new(model);
    let mut cx = Context {
        g: &graph,
        analysis: Analysis {
            layers: Vec::new(),
            residual_blocks: Vec::new(),
            embeddings: Vec::new(),
            norms: Vec::new(),
            skipped: Vec::new(),
            warnings: Vec::new(),
            unknown_ops: Vec::new(),
            bn_fused: false,
            shared_weights: Vec::new(),
            chain: Err(String::new()),
        },
        claimed: HashSet::new(),
        layer_at: HashMap::new(),
        norm_at: HashMap::new(),
        regions: Vec::new(),
        block_adds: Vec::new(),
    };
    cx.find_layers();
    cx.find_residual_blocks();
    cx.find_activations();
    cx.mark_norms_ending_branches();
    cx.find_shared();
    cx.detect_fused_bn();
    cx.find_chain();
    cx.find_skipped();
    cx.find_unknown_ops();
    cx.analysis
}

struct Context<'g, 'm> {
    g: &'g Graph<'m>,
    analysis: Analysis,
    /// Tensors with a known role (weights, biases, norm parameters and stats).
    claimed: HashSet<TensorId>,
    /// Node index → layer index.
    layer_at: HashMap<usize, usize>,
    /// Node index → norm index.
    norm_at: HashMap<usize, usize>,
    /// Per residual block: the branch's node region and, per node, the most
    /// weight layers on a path from it (inclusive) to the `Add`.
    regions: Vec<BlockRegion>,
    /// Node index of each residual block's `Add`.
    block_adds: Vec<usize>,
}

struct BlockRegion {
    branch: HashSet<usize>,
    after: HashMap<usize, usize>,
}

const NORM_OPS: [(&str, NormKind); 4] = [
    ("BatchNormalization", NormKind::BatchNormalization),
    ("LayerNormalization", NormKind::LayerNormalization),
    ("GroupNormalization", NormKind::GroupNormalization),
    ("InstanceNormalization", NormKind::InstanceNormalization),
];

impl<'g, 'm> Context<'g, 'm> {
    fn name(&self, id: TensorId) -> String {
        self.g.model.tensor(id).name.clone()
    }

    fn skip(&mut self, id: TensorId, reason: String) {
        if self.claimed.insert(id) {
            let name = self.name(id);
            self.analysis.skipped.push(Skipped {
                tensor: id,
                name,
                reason,
            });
        }
    }

    // ---------------------------------------------------------------- layers

    fn find_layers(&mut self) {
        let g = self.g;
        for (index, node) in g.nodes.iter().enumerate() {
            match node.op {
                "Conv" | "ConvTranspose" => self.conv_layer(index, node),
                "Gemm" | "MatMul" => self.linear_layer(index, node),
                "Gather" => self.embedding(node),
                op => {
                    if let Some((_, kind)) = NORM_OPS.iter().find(|(n, _)| *n == op) {
                        self.norm(index, node, *kind);
                    }
                }
            }
        }
    }

    fn weight_source(&mut self, node: &Node<'_>, input: usize) -> Option<ConstSource> {
        let source = self.g.resolve_const(node.input(input)?)?;
        let entry = self.g.model.tensor(source.tensor);
        if source.dequantized {
            let reason = format!(
                "quantised weight: reaches {} '{}' through DequantizeLinear (re-quantisation not supported)",
                node.op, node.name
            );
            self.skip(source.tensor, reason);
            return None;
        }
        if !entry.dtype.is_float() {
            return None;
        }
        Some(source)
    }

    fn bias_of(&mut self, node: &Node<'_>, input: usize) -> Option<TensorId> {
        let source = self.g.resolve_const(node.input(input)?)?;
        self.claimed.insert(source.tensor);
        Some(source.tensor)
    }

    fn conv_layer(&mut self, index: usize, node: &Node<'_>) {
        let Some(w) = self.weight_source(node, 1) else {
            if node.input(1).is_some_and(|i| !self.g.is_meta(i)) {
                self.analysis.warnings.push(format!(
                    "{} '{}': the weight is computed at run time, not a layer",
                    node.op, node.name
                ));
            }
            return;
        };
        let dims = w.operand_shape.clone();
        if dims.len() < 3 {
            let reason = format!(
                "{} '{}' weight has rank {} (< 3)",
                node.op,
                node.name,
                dims.len()
            );
            self.skip(w.tensor, reason);
            return;
        }
        let transpose = node.op == "ConvTranspose";
        let spatial = dims.len() - 2;
        let kernel = dims[2..].to_vec();
        let taps: usize = kernel.iter().product();
        let mut groups = node.int("group").unwrap_or(1).max(1) as usize;
        let (a0, a1) = (dims[0], dims[1]);
        if a0 % groups != 0 {
            self.analysis.warnings.push(format!(
                "{} '{}': {} channels do not split into {groups} groups; treated as 1 group",
                node.op, node.name, a0
            ));
            groups = 1;
        }
        let (n_out, n_in) = if transpose {
            (a1, a0 / groups)
        } else {
            (a0 / groups, a1)
        };
        let per_axis = |name: &str, default: usize| -> Vec<usize> {
            match node.ints(name) {
                Some(v) if v.len() == spatial => v.iter().map(|&x| x.max(0) as usize).collect(),
                _ => vec![default; spatial],
            }
        };
        let strides = per_axis("strides", 1);
        let dilations = per_axis("dilations", 1);
        let auto_pad = match node.string("auto_pad").as_deref() {
            Some("SAME_UPPER") => AutoPad::SameUpper,
            Some("SAME_LOWER") => AutoPad::SameLower,
            Some("VALID") => AutoPad::Valid,
            _ => AutoPad::NotSet,
        };
        let pads: Vec<(usize, usize)> = match auto_pad {
            AutoPad::NotSet => match node.ints("pads") {
                Some(p) if p.len() == 2 * spatial => (0..spatial)
                    .map(|i| (p[i].max(0) as usize, p[i + spatial].max(0) as usize))
                    .collect(),
                _ => vec![(0, 0); spatial],
            },
            AutoPad::Valid => vec![(0, 0); spatial],
            AutoPad::SameUpper | AutoPad::SameLower => (0..spatial)
                .map(|i| {
                    same_pads(
                        kernel[i],
                        strides[i],
                        dilations[i],
                        auto_pad == AutoPad::SameUpper,
                    )
                })
                .collect(),
        };
        let delta = delta_tap(&kernel, &strides, &dilations, &pads);
        let bias = self.bias_of(node, 2);
        self.push_layer(
            index,
            node,
            w,
            LayerShape {
                kind: if transpose {
                    LayerKind::ConvTranspose
                } else {
                    LayerKind::Conv
                },
                operand: if transpose {
                    OperandLayout::ConvTranspose
                } else {
                    OperandLayout::Conv
                },
                groups,
                n_out,
                n_in,
                fan_in: a1 * taps,
                fan_out: a0 * taps,
                kernel,
                strides,
                dilations,
                pads,
                auto_pad,
                delta_tap: delta,
                alpha: 1.0,
            },
            bias,
        );
    }

    fn linear_layer(&mut self, index: usize, node: &Node<'_>) {
        let g = self.g;
        let gemm = node.op == "Gemm";
        // Which operand is the weight: B (right) first, then A (left).
        let right = node.input(1).and_then(|v| g.resolve_const(v)).is_some();
        let left = node.input(0).and_then(|v| g.resolve_const(v)).is_some();
        let (input, weight_left) = match (left, right) {
            (true, true) => {
                self.analysis.warnings.push(format!(
                    "{} '{}' multiplies two constants (left from constant folding?); not a layer",
                    node.op, node.name
                ));
                return;
            }
            (_, true) => (1, false),
            (true, false) => (0, true),
            (false, false) => return,
        };
        let Some(w) = self.weight_source(node, input) else {
            return;
        };
        let dims = w.operand_shape.clone();
        if dims.len() != 2 {
            let reason = if dims.len() > 2 {
                format!(
                    "batched {} weight {:?} in '{}': no single canonical matrix",
                    node.op, dims, node.name
                )
            } else {
                format!("{} '{}' weight has rank {}", node.op, node.name, dims.len())
            };
            self.skip(w.tensor, reason);
            return;
        }
        // Y = X·W (InOut) or W·X (OutIn), flipped by Gemm's transA/transB.
        let trans = gemm
            && node
                .int(if weight_left { "transA" } else { "transB" })
                .unwrap_or(0)
                != 0;
        let out_in = weight_left != trans;
        let (operand, n_out, n_in) = if out_in {
            (OperandLayout::OutIn, dims[0], dims[1])
        } else {
            (OperandLayout::InOut, dims[1], dims[0])
        };
        let bias = if gemm && node.input(2).is_some() {
            self.bias_of(node, 2)
        } else {
            self.following_bias(node, n_out)
        };
        self.push_layer(
            index,
            node,
            w,
            LayerShape {
                kind: LayerKind::Linear,
                operand,
                groups: 1,
                n_out,
                n_in,
                fan_in: n_in,
                fan_out: n_out,
                kernel: Vec::new(),
                strides: Vec::new(),
                dilations: Vec::new(),
                pads: Vec::new(),
                auto_pad: AutoPad::NotSet,
                delta_tap: None,
                alpha: if gemm {
                    node.float("alpha").unwrap_or(1.0)
                } else {
                    1.0
                },
            },
            bias,
        );
    }

    /// A 1-D constant of `n_out` values added right after the node.
    fn following_bias(&mut self, node: &Node<'_>, n_out: usize) -> Option<TensorId> {
        let g = self.g;
        let out = node.output();
        let consumers = self.data_consumers(out);
        let &[c] = consumers.as_slice() else {
            return None;
        };
        let add = &g.nodes[c];
        if add.op != "Add" {
            return None;
        }
        let other = add.inputs.iter().find(|&&i| i != out && !i.is_empty())?;
        let source = g.resolve_const(other)?;
        let entry = g.model.tensor(source.tensor);
        (source.operand_shape.len() == 1 && entry.numel() == n_out).then(|| {
            self.claimed.insert(source.tensor);
            source.tensor
        })
    }

    fn push_layer(
        &mut self,
        index: usize,
        node: &Node<'_>,
        w: ConstSource,
        shape: LayerShape,
        bias: Option<TensorId>,
    ) {
        self.claimed.insert(w.tensor);
        let entry = self.g.model.tensor(w.tensor);
        self.layer_at.insert(index, self.analysis.layers.len());
        self.analysis.layers.push(Layer {
            node: node.name.to_string(),
            op: node.op.to_string(),
            kind: shape.kind,
            weight: w.tensor,
            weight_name: entry.name.clone(),
            bias,
            bias_name: bias.map(|b| self.name(b)),
            stored_shape: entry.dims.clone(),
            layout: WeightLayout {
                operand: shape.operand,
                steps: w.steps,
                operand_shape: w.operand_shape,
            },
            via: w.via,
            groups: shape.groups,
            n_out: shape.n_out,
            n_in: shape.n_in,
            kernel: shape.kernel,
            strides: shape.strides,
            dilations: shape.dilations,
            pads: shape.pads,
            auto_pad: shape.auto_pad,
            delta_tap: shape.delta_tap,
            fan_in: shape.fan_in,
            fan_out: shape.fan_out,
            alpha: shape.alpha,
            activation: Activation::None,
            stops_at: None,
            between: Vec::new(),
            bn_folded: false,
            residual: None,
            topo_index: index,
        });
    }

    fn embedding(&mut self, node: &Node<'_>) {
        let g = self.g;
        let (Some(data), Some(indices)) = (node.input(0), node.input(1)) else {
            return;
        };
        if g.is_meta(indices) {
            return;
        }
        let Some(source) = g.resolve_const(data) else {
            return;
        };
        let entry = g.model.tensor(source.tensor);
        if !entry.dtype.is_float() || entry.dims.len() != 2 || source.dequantized {
            return;
        }
        self.claimed.insert(source.tensor);
        self.analysis.embeddings.push(Embedding {
            node: node.name.to_string(),
            weight: source.tensor,
            weight_name: entry.name.clone(),
            shape: entry.dims.clone(),
        });
    }

    fn norm(&mut self, index: usize, node: &Node<'_>, op: NormKind) {
        let g = self.g;
        let mut param = |i: usize| -> Option<TensorId> {
            let id = g.resolve_const(node.input(i)?)?.tensor;
            self.claimed.insert(id);
            Some(id)
        };
        let scale = param(1);
        let bias = param(2);
        // Running mean/var: known role, never weights.
        param(3);
        param(4);
        self.norm_at.insert(index, self.analysis.norms.len());
        self.analysis.norms.push(Norm {
            node: node.name.to_string(),
            op,
            scale,
            scale_name: scale.map(|s| self.name(s)),
            bias,
            bias_name: bias.map(|b| self.name(b)),
            ends_residual_branch: None,
        });
    }

    /// Consumers that read the value's data (`Shape`/`Size` only read its dims).
    fn data_consumers(&self, value: &str) -> Vec<usize> {
        self.g
            .consumers_of(value)
            .iter()
            .copied()
            .filter(|&c| !matches!(self.g.nodes[c].op, "Shape" | "Size"))
            .collect()
    }

    // ------------------------------------------------------- residual blocks

    /// Values `value` depends on through data edges (itself included).
    fn ancestors(&self, value: &'m str) -> HashSet<&'m str> {
        let g = self.g;
        let mut seen: HashSet<&'m str> = HashSet::new();
        let mut stack = vec![value];
        while let Some(v) = stack.pop() {
            if g.is_meta(v) || !seen.insert(v) {
                continue;
            }
            if let Some(node) = g.producer_of(v) {
                stack.extend(g.data_inputs(node));
            }
        }
        seen
    }

    /// Node indices on data paths from `source` to `target` (source's producer excluded).
    fn region(&self, source: &'m str, target: &'m str) -> HashSet<usize> {
        let g = self.g;
        let upstream: HashSet<usize> = self
            .ancestors(target)
            .into_iter()
            .filter(|&v| v != source)
            .filter_map(|v| g.producer.get(v).copied())
            .collect();
        let mut region = HashSet::new();
        let mut stack = vec![source];
        let mut seen = HashSet::new();
        while let Some(v) = stack.pop() {
            if !seen.insert(v) {
                continue;
            }
            let mut next: Vec<usize> = g.consumers_of(v).to_vec();
            if let Some(&(parent, _)) = g.sub_outputs.get(v) {
                next.push(parent);
            }
            for c in next {
                if upstream.contains(&c) && region.insert(c) {
                    stack.extend(g.nodes[c].outputs.iter().copied());
                }
            }
        }
        region
    }

    fn position(&self, value: &str) -> i64 {
        self.g.producer.get(value).map_or(-1, |&i| i as i64)
    }

    fn find_residual_blocks(&mut self) {
        let g = self.g;
        let mut blocks: Vec<(ResidualBlock, HashSet<usize>, HashSet<usize>)> = Vec::new();
        let mut add_index: Vec<usize> = Vec::new();
        for (index, node) in g.nodes.iter().enumerate() {
            if !matches!(node.op, "Add" | "Sum") {
                continue;
            }
            let mut inputs: Vec<&str> = node
                .inputs
                .iter()
                .copied()
                .filter(|i| !g.is_meta(i))
                .collect();
            inputs.dedup();
            let [a, b] = inputs[..] else { continue };
            let (anc_a, anc_b) = (self.ancestors(a), self.ancestors(b));
            let Some(source) = anc_a
                .intersection(&anc_b)
                .copied()
                .max_by_key(|v| (self.position(v), *v))
            else {
                continue;
            };
            let (region_a, region_b) = (self.region(source, a), self.region(source, b));
            let layers_in = |region: &HashSet<usize>| -> Vec<usize> {
                let mut l: Vec<usize> = region
                    .iter()
                    .filter_map(|n| self.layer_at.get(n).copied())
                    .collect();
                l.sort_unstable();
                l
            };
            let (layers_a, layers_b) = (layers_in(&region_a), layers_in(&region_b));
            if layers_a.is_empty() && layers_b.is_empty() {
                continue;
            }
            let depth_a = self.depth(&region_a);
            let depth_b = self.depth(&region_b);
            // The branch is the side with weight layers; with layers on both
            // sides, the deeper one (the other is a projection shortcut).
            let a_is_branch = if layers_b.is_empty() {
                true
            } else if layers_a.is_empty() {
                false
            } else {
                (depth_a, layers_a.len()) > (depth_b, layers_b.len())
            };
            let (branch, shortcut, region, other, depth) = if a_is_branch {
                (layers_a, layers_b, region_a, region_b, depth_a)
            } else {
                (layers_b, layers_a, region_b, region_a, depth_b)
            };
            blocks.push((
                ResidualBlock {
                    add_node: node.name.to_string(),
                    source: source.to_string(),
                    skip: if shortcut.is_empty() {
                        Skip::Identity
                    } else {
                        Skip::Projection(shortcut)
                    },
                    branch,
                    depth,
                    nested_in: None,
                },
                region,
                other,
            ));
            add_index.push(index);
        }
        let sizes: Vec<usize> = blocks.iter().map(|(_, r, o)| r.len() + o.len()).collect();
        for i in 0..blocks.len() {
            blocks[i].0.nested_in = (0..blocks.len())
                .filter(|&j| j != i && blocks[j].1.contains(&add_index[i]))
                .min_by_key(|&j| sizes[j]);
        }
        // Roles: outer blocks first so inner ones overwrite.
        let mut order: Vec<usize> = (0..blocks.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(sizes[i]));
        for &i in &order {
            let (block, region, _) = &blocks[i];
            let after = self.after_counts(region);
            for &l in &block.branch {
                let n = self.analysis.layers[l].topo_index;
                let before = self.before_count(region, n);
                let later = after[&n] > 1;
                let role = match (before == 0, !later) {
                    (true, true) => Role::Only,
                    (true, false) => Role::First,
                    (false, true) => Role::Last,
                    (false, false) => Role::Inner,
                };
                self.analysis.layers[l].residual = Some(ResidualRef { block: i, role });
            }
            for &l in block.shortcut() {
                self.analysis.layers[l].residual = Some(ResidualRef {
                    block: i,
                    role: Role::Shortcut,
                });
            }
        }
        self.block_adds = add_index;
        for (block, region, _) in blocks {
            let after = self.after_counts(&region);
            self.regions.push(BlockRegion {
                branch: region,
                after,
            });
            self.analysis.residual_blocks.push(block);
        }
    }

    /// Most weight layers on one path through `region`.
    fn depth(&self, region: &HashSet<usize>) -> usize {
        self.after_counts(region)
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Per node of `region`: the most layers on a path from it (inclusive)
    /// to the region's end.
    fn after_counts(&self, region: &HashSet<usize>) -> HashMap<usize, usize> {
        let g = self.g;
        let mut nodes: Vec<usize> = region.iter().copied().collect();
        nodes.sort_unstable_by(|a, b| b.cmp(a));
        let mut after: HashMap<usize, usize> = HashMap::new();
        for n in nodes {
            let node = &g.nodes[n];
            let mut next: Vec<usize> = Vec::new();
            for out in &node.outputs {
                next.extend(g.consumers_of(out));
                if let Some(&(parent, _)) = g.sub_outputs.get(out) {
                    next.push(parent);
                }
            }
            let best = next
                .iter()
                .filter_map(|c| after.get(c))
                .copied()
                .max()
                .unwrap_or(0);
            let own = usize::from(self.layer_at.contains_key(&n));
            after.insert(n, best + own);
        }
        after
    }

    /// Most layers on a path inside `region` that ends just before node `n`.
    ///
    /// An explicit-stack post-order walk: a deep graph cannot overflow the
    /// stack, and a cycle (only in a malformed file; found by the fuzzer) is
    /// cut where it closes instead of recursing forever.
    fn before_count(&self, region: &HashSet<usize>, n: usize) -> usize {
        let g = self.g;
        let preds = |node: usize| -> Vec<usize> {
            g.data_inputs(&g.nodes[node])
                .into_iter()
                .filter_map(|input| g.producer.get(input).copied())
                .filter(|p| region.contains(p))
                .collect()
        };
        let mut memo: HashMap<usize, usize> = HashMap::new();
        let mut open: HashSet<usize> = HashSet::new();
        let mut stack = vec![(n, false)];
        while let Some((node, expanded)) = stack.pop() {
            if memo.contains_key(&node) {
                continue;
            }
            if !expanded {
                if !open.insert(node) {
                    continue; // on the current path: a cycle closes here
                }
                stack.push((node, true));
                stack.extend(
                    preds(node)
                        .into_iter()
                        .filter(|p| !memo.contains_key(p) && !open.contains(p))
                        .map(|p| (p, false)),
                );
                continue;
            }
            let best = preds(node)
                .into_iter()
                .filter_map(|p| {
                    let own = usize::from(self.layer_at.contains_key(&p));
                    memo.get(&p).map(|&v| v + own)
                })
                .max()
                .unwrap_or(0);
            memo.insert(node, best);
            open.remove(&node);
        }
        memo.get(&n).copied().unwrap_or(0)
    }

    // ----------------------------------------------------------- activations

    fn find_activations(&mut self) {
        let residual_adds: HashSet<usize> = self.block_adds.iter().copied().collect();
        for l in 0..self.analysis.layers.len() {
            let start = self.analysis.layers[l].topo_index;
            let found = self.follow(start, &residual_adds);
            let layer = &mut self.analysis.layers[l];
            layer.activation = found.activation;
            layer.stops_at = found.stops_at;
            layer.between = found.between;
        }
    }

    fn follow(&self, start: usize, residual_adds: &HashSet<usize>) -> Found {
        let g = self.g;
        let mut between = Vec::new();
        let mut value = g.nodes[start].output();
        let stop = |between: Vec<String>, why: &str| Found {
            activation: Activation::None,
            stops_at: Some(why.to_string()),
            between,
        };
        for _ in 0..64 {
            let consumers = self.data_consumers(value);
            if consumers.len() > 1 {
                if let Some(activation) = self.decomposition(value, &consumers) {
                    return Found {
                        activation,
                        stops_at: None,
                        between,
                    };
                }
                return stop(between, "fanout");
            }
            let Some(&c) = consumers.first() else {
                if let Some(&(parent, pos)) = g.sub_outputs.get(value) {
                    let parent = &g.nodes[parent];
                    between.push(parent.op.to_string());
                    value = parent.outputs.get(pos).copied().unwrap_or("");
                    continue;
                }
                let why = if g.outputs.contains(value) {
                    "output"
                } else {
                    "unused"
                };
                return stop(between, why);
            };
            if g.outputs.contains(value) {
                return stop(between, "fanout");
            }
            let node = &g.nodes[c];
            if self.layer_at.contains_key(&c) {
                return stop(between, "layer");
            }
            if residual_adds.contains(&c) {
                return Found {
                    activation: Activation::ResidualAdd,
                    stops_at: Some("residual_add".into()),
                    between,
                };
            }
            let other_meta = || {
                node.inputs
                    .iter()
                    .filter(|&&i| i != value)
                    .all(|i| g.is_meta(i))
            };
            let activation = match node.op {
                "Relu" => Activation::Relu,
                "LeakyRelu" => Activation::LeakyRelu {
                    alpha: node.float("alpha").unwrap_or(0.01),
                },
                "PRelu" => Activation::PRelu,
                "Elu" => Activation::Elu {
                    alpha: node.float("alpha").unwrap_or(1.0),
                },
                "Selu" => Activation::Selu,
                "Sigmoid" => Activation::Sigmoid,
                "HardSigmoid" => Activation::HardSigmoid,
                "Tanh" => Activation::Tanh,
                "Softplus" => Activation::Softplus,
                "Gelu" => Activation::Gelu,
                "HardSwish" => Activation::HardSwish,
                "Softmax" => Activation::Softmax,
                "Clip" => self.clip(node),
                "Mish" | "Celu" | "ThresholdedRelu" | "LogSoftmax" | "Softsign" | "Erf" | "Exp"
                | "Log" | "Sin" | "Cos" | "Abs" | "Sqrt" | "Pow" | "Sign" | "Shrink"
                | "Hardmax" | "Reciprocal" | "Neg" | "Floor" | "Ceil" | "Round" => {
                    Activation::Other(node.op.to_lowercase())
                }
                "Add" | "Sub" | "Mul" | "Div" if other_meta() => {
                    if matches!(node.op, "Mul" | "Div") {
                        between.push(node.op.to_string());
                    }
                    value = node.output();
                    continue;
                }
                "Add" | "Sub" | "Sum" => return stop(between, "add"),
                "Mul" | "Div" => return stop(between, "mul"),
                "Identity" | "Dropout" | "Cast" => {
                    value = node.output();
                    continue;
                }
                "BatchNormalization"
                | "LayerNormalization"
                | "GroupNormalization"
                | "InstanceNormalization"
                | "Reshape"
                | "Flatten"
                | "Transpose"
                | "Squeeze"
                | "Unsqueeze"
                | "MaxPool"
                | "AveragePool"
                | "GlobalAveragePool"
                | "GlobalMaxPool"
                | "LpPool"
                | "GlobalLpPool"
                | "ReduceMean"
                | "ReduceSum"
                | "ReduceMax"
                | "Pad"
                | "Resize"
                | "Upsample"
                | "DepthToSpace"
                | "SpaceToDepth" => {
                    between.push(node.op.to_string());
                    value = node.output();
                    continue;
                }
                "MatMul" | "Gemm" | "Einsum" => return stop(between, "matmul"),
                op => return stop(between, &op.to_lowercase()),
            };
            return Found {
                activation,
                stops_at: None,
                between,
            };
        }
        stop(between, "too_deep")
    }

    /// Clip as ReLU6 / hard-tanh / ReLU, bounds from attributes (opset < 11)
    /// or constant inputs.
    fn clip(&self, node: &Node<'_>) -> Activation {
        let g = self.g;
        let (lo, hi) = if g.opset < 11 && (node.attr("min").is_some() || node.attr("max").is_some())
        {
            (node.float("min"), node.float("max"))
        } else {
            (
                node.input(1).and_then(|v| g.const_scalar(v)),
                node.input(2).and_then(|v| g.const_scalar(v)),
            )
        };
        let is = |v: Option<f64>, x: f64| v.is_some_and(|v| (v - x).abs() < 1e-6);
        if is(lo, 0.0) && is(hi, 6.0) {
            Activation::Relu6
        } else if is(lo, -1.0) && is(hi, 1.0) {
            Activation::HardTanh
        } else if is(lo, 0.0) && hi.is_none_or(|h| h.is_infinite() || h > 3.0e38) {
            Activation::Relu
        } else {
            Activation::Other("clip".into())
        }
    }

    /// Exporter decompositions that read `value` more than once: GELU (Erf and
    /// Tanh forms), SiLU `x·σ(x)`, HardSwish `x·hardsigmoid(x)`.
    fn decomposition(&self, value: &str, consumers: &[usize]) -> Option<Activation> {
        let g = self.g;
        let nodes: Vec<&Node<'_>> = consumers.iter().map(|&c| &g.nodes[c]).collect();
        let consumers_of = |v: &str| -> Vec<&Node<'_>> {
            g.consumers_of(v).iter().map(|&c| &g.nodes[c]).collect()
        };
        let multiplies_value = |v: &str| {
            nodes
                .iter()
                .any(|n| n.op == "Mul" && n.inputs.contains(&value) && n.inputs.contains(&v))
        };
        for n in &nodes {
            let out = n.output();
            match n.op {
                "Sigmoid" if multiplies_value(out) => return Some(Activation::Silu),
                "HardSigmoid" if multiplies_value(out) => return Some(Activation::HardSwish),
                "Div" | "Mul"
                    if n.inputs
                        .iter()
                        .filter(|&&i| i != value)
                        .all(|i| g.is_meta(i))
                        && consumers_of(out).iter().any(|c| c.op == "Erf") =>
                {
                    return Some(Activation::Gelu);
                }
                _ => {}
            }
        }
        // Tanh form: x·0.5·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        let cubes = nodes.iter().any(|n| {
            (n.op == "Pow" && n.input(1).and_then(|e| g.const_scalar(e)) == Some(3.0))
                || (n.op == "Mul" && n.inputs.iter().filter(|&&i| i == value).count() == 2)
        });
        if cubes {
            let mut frontier: Vec<&str> = nodes.iter().map(|n| n.output()).collect();
            for _ in 0..6 {
                let mut next = Vec::new();
                for v in frontier {
                    for c in consumers_of(v) {
                        match c.op {
                            "Tanh" => return Some(Activation::Gelu),
                            "Mul" | "Add" | "Pow" | "Div" | "Sub" => next.push(c.output()),
                            _ => {}
                        }
                    }
                }
                frontier = next;
            }
        }
        None
    }

    // ------------------------------------------------------- derived facts

    fn mark_norms_ending_branches(&mut self) {
        for (b, region) in self.regions.iter().enumerate() {
            for &n in &region.branch {
                let Some(&norm) = self.norm_at.get(&n) else {
                    continue;
                };
                // Nothing weighted after the norm on the way to the Add.
                if region.after.get(&n).copied() == Some(0) {
                    let slot = &mut self.analysis.norms[norm].ends_residual_branch;
                    if slot.is_none() {
                        *slot = Some(b);
                    }
                }
            }
        }
    }

    fn find_shared(&mut self) {
        let mut uses: Vec<(TensorId, usize, String)> = Vec::new();
        for l in &self.analysis.layers {
            uses.push((l.weight, l.topo_index, l.node.clone()));
        }
        for e in &self.analysis.embeddings {
            let index = self
                .g
                .nodes
                .iter()
                .position(|n| n.name == e.node && n.op == "Gather")
                .unwrap_or(0);
            uses.push((e.weight, index, e.node.clone()));
        }
        uses.sort_by_key(|(id, index, _)| (*id, *index));
        let mut shared: Vec<SharedWeight> = Vec::new();
        for group in uses.chunk_by(|a, b| a.0 == b.0) {
            if group.len() > 1 {
                shared.push(SharedWeight {
                    weight: group[0].0,
                    name: self.name(group[0].0),
                    uses: group.iter().map(|u| u.2.clone()).collect(),
                });
            }
        }
        self.analysis.shared_weights = shared;
    }

    fn detect_fused_bn(&mut self) {
        let mut renamed = 0;
        let mut renamed_transposed = 0;
        for l in &mut self.analysis.layers {
            if l.weight_name.starts_with("onnx::") {
                renamed += 1;
                if l.layout.operand == OperandLayout::InOut {
                    renamed_transposed += 1;
                }
            }
            let bn_after = l.between.iter().any(|b| b == "BatchNormalization");
            let folded_name = l.weight_name.starts_with("onnx::Conv")
                || l.bias_name
                    .as_ref()
                    .is_some_and(|b| *b == format!("{}_bias", l.weight_name));
            l.bn_folded =
                l.kind != LayerKind::Linear && l.bias.is_some() && !bn_after && folded_name;
        }
        self.analysis.bn_fused = self.analysis.layers.iter().any(|l| l.bn_folded);
        if self.analysis.bn_fused {
            self.analysis.warnings.push(
                "Conv+BatchNormalization fused export: BN scale/shift are folded into the conv \
                 weights and biases (export with training=TrainingMode.TRAINING and \
                 do_constant_folding=False to keep them)"
                    .into(),
            );
        }
        if renamed > 0 {
            let mut warning = format!(
                "{renamed} weights have exporter-generated names (onnx::…, constant folding)"
            );
            if renamed_transposed > 0 {
                warning.push_str(&format!(
                    "; {renamed_transposed} of them are stored transposed (in × out) \
                     relative to the PyTorch parameter"
                ));
            }
            self.analysis.warnings.push(warning);
        }
    }

    fn find_chain(&mut self) {
        self.analysis.chain = self.chain();
    }

    fn chain(&self) -> Result<Chain, String> {
        let g = self.g;
        let layers = &self.analysis.layers;
        if layers.is_empty() {
            return Err("no weight layers".into());
        }
        if !self.analysis.residual_blocks.is_empty() {
            return Err(format!(
                "{} residual blocks",
                self.analysis.residual_blocks.len()
            ));
        }
        if !self.analysis.embeddings.is_empty() {
            return Err("has embeddings".into());
        }
        if !g.sub_outputs.is_empty() {
            return Err("has subgraphs".into());
        }
        let mut steps = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let position = if i + 1 == layers.len() {
                ChainPosition::Output
            } else if i == 0 {
                ChainPosition::Input
            } else {
                ChainPosition::Hidden
            };
            let next = match layers.get(i + 1) {
                None => None,
                Some(next) => Some(self.link(layer, next)?),
            };
            steps.push(ChainStep {
                layer: i,
                position,
                next,
            });
        }
        Ok(Chain { steps })
    }

    /// What lies between two consecutive layers; `Err` when the first does not
    /// feed only the second.
    fn link(&self, from: &Layer, to: &Layer) -> Result<Link, String> {
        let g = self.g;
        let mut value = g.nodes[from.topo_index].output();
        let mut blocked: Option<String> = None;
        for _ in 0..64 {
            let consumers = self.data_consumers(value);
            let &[c] = consumers.as_slice() else {
                return Err(format!(
                    "'{}' output feeds {} nodes",
                    from.weight_name,
                    consumers.len()
                ));
            };
            if c == to.topo_index {
                return Ok(blocked.map_or(Link::Elementwise, Link::Blocked));
            }
            if self.layer_at.contains_key(&c) {
                return Err(format!(
                    "'{}' does not feed the next layer",
                    from.weight_name
                ));
            }
            let node = &g.nodes[c];
            let other_meta = node
                .inputs
                .iter()
                .filter(|&&i| i != value)
                .all(|i| g.is_meta(i));
            let fine = match node.op {
                "Relu" | "Identity" | "Dropout" | "Cast" | "Reshape" | "Flatten" | "Squeeze"
                | "Unsqueeze" | "AveragePool" | "GlobalAveragePool" => true,
                "Add" | "Sub" => other_meta,
                _ => false,
            };
            if !other_meta {
                return Err(format!(
                    "{} '{}' joins another data path between '{}' and '{}'",
                    node.op, node.name, from.weight_name, to.weight_name
                ));
            }
            if !fine && blocked.is_none() {
                blocked = Some(format!(
                    "{} between '{}' and '{}' breaks mirrored pairing",
                    node.op, from.weight_name, to.weight_name
                ));
            }
            value = node.output();
        }
        Err("path too long".into())
    }

    fn find_skipped(&mut self) {
        let g = self.g;
        for id in g.model.ids() {
            let entry = g.model.tensor(id);
            if self.claimed.contains(&id) || !entry.dtype.is_float() || entry.dims.len() < 2 {
                continue;
            }
            // Only tensors the graph can reach by name (not shadowed duplicates).
            if g.tensors.get(entry.name.as_str()) != Some(&id) {
                continue;
            }
            let uses: Vec<String> = g
                .consumers_of(&entry.name)
                .iter()
                .map(|&c| {
                    let n = &g.nodes[c];
                    let pos = n.inputs.iter().position(|&i| i == entry.name).unwrap_or(0);
                    format!("input {pos} of {} '{}'", n.op, n.name)
                })
                .collect();
            let reason = if uses.is_empty() {
                "not read by any node".to_string()
            } else {
                format!("unknown role: {}", uses.join(", "))
            };
            self.skip(id, reason);
        }
    }

    fn find_unknown_ops(&mut self) {
        let mut unknown: Vec<String> = self
            .g
            .nodes
            .iter()
            .filter(|n| !matches!(n.domain, "" | "ai.onnx") || !KNOWN_OPS.contains(&n.op))
            .map(|n| {
                if matches!(n.domain, "" | "ai.onnx") {
                    n.op.to_string()
                } else {
                    format!("{}::{}", n.domain, n.op)
                }
            })
            .collect();
        unknown.sort();
        unknown.dedup();
        self.analysis.unknown_ops = unknown;
    }
}

struct LayerShape {
    kind: LayerKind,
    operand: OperandLayout,
    groups: usize,
    n_out: usize,
    n_in: usize,
    fan_in: usize,
    fan_out: usize,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads: Vec<(usize, usize)>,
    auto_pad: AutoPad,
    delta_tap: Option<Vec<usize>>,
    alpha: f64,
}

struct Found {
    activation: Activation,
    stops_at: Option<String>,
    between: Vec<String>,
}

/// Ops whose meaning the analysis knows (layers, norms, activations, data
/// movement, shape arithmetic, control flow).
const KNOWN_OPS: &[&str] = &[
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "Gather",
    "GatherElements",
    "GatherND",
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Sigmoid",
    "HardSigmoid",
    "Tanh",
    "Softplus",
    "Gelu",
    "HardSwish",
    "Softmax",
    "LogSoftmax",
    "Clip",
    "Mish",
    "Celu",
    "ThresholdedRelu",
    "Softsign",
    "Erf",
    "Exp",
    "Log",
    "Sin",
    "Cos",
    "Abs",
    "Sqrt",
    "Pow",
    "Sign",
    "Neg",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Mean",
    "Max",
    "Min",
    "Mod",
    "Identity",
    "Dropout",
    "Cast",
    "CastLike",
    "Reshape",
    "Flatten",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "LpPool",
    "GlobalLpPool",
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL2",
    "Pad",
    "Resize",
    "Upsample",
    "DepthToSpace",
    "SpaceToDepth",
    "Concat",
    "Split",
    "Slice",
    "Shape",
    "Size",
    "Constant",
    "ConstantOfShape",
    "Expand",
    "Tile",
    "Range",
    "Where",
    "Equal",
    "Less",
    "Greater",
    "Not",
    "And",
    "Or",
    "If",
    "Loop",
    "Scan",
    "Einsum",
    "DequantizeLinear",
    "QuantizeLinear",
    "ArgMax",
    "ArgMin",
    "TopK",
    "NonZero",
    "ScatterND",
    "ScatterElements",
    "Trilu",
    "CumSum",
    "OneHot",
    "LessOrEqual",
    "GreaterOrEqual",
    "IsNaN",
    "Hardmax",
    "Shrink",
];
