//! Weight layers (Conv, ConvTranspose, Gemm, MatMul) with their canonical
//! view and fans, embeddings (`Gather` on a constant table) and norms.

use reinit_onnx::TensorId;

use super::Context;
use crate::graph::{ConstSource, Node};
use crate::layout::{delta_tap, same_pads};
use crate::ops::{Arith, LayerOp, Op, OpClass};
use crate::types::*;

impl<'g, 'm> Context<'g, 'm> {
    pub(super) fn find_layers(&mut self) {
        let g = self.g;
        for (index, node) in g.nodes.iter().enumerate() {
            let Some(op) = node.kind else { continue };
            match op.class() {
                OpClass::Layer(layer @ (LayerOp::Conv | LayerOp::ConvTranspose)) => {
                    self.conv_layer(index, node, op, layer == LayerOp::ConvTranspose)
                }
                OpClass::Layer(layer @ (LayerOp::Gemm | LayerOp::MatMul)) => {
                    self.linear_layer(index, node, op, layer == LayerOp::Gemm)
                }
                OpClass::Lookup => self.embedding(node),
                OpClass::Norm(kind) => self.norm(index, node, kind),
                _ => {}
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

    fn conv_layer(&mut self, index: usize, node: &Node<'_>, op: Op, transpose: bool) {
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
                op,
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

    fn linear_layer(&mut self, index: usize, node: &Node<'_>, op: Op, gemm: bool) {
        let g = self.g;
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
                op,
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
        if add.class() != Some(OpClass::Arithmetic(Arith::Add)) {
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
            op: shape.op,
            output: node.output().to_string(),
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
        let (running_mean, running_var) = (param(3), param(4));
        self.norm_at.insert(index, self.analysis.norms.len());
        self.analysis.norms.push(Norm {
            node: node.name.to_string(),
            op,
            scale,
            scale_name: scale.map(|s| self.name(s)),
            bias,
            bias_name: bias.map(|b| self.name(b)),
            running_mean,
            running_var,
            ends_residual_branch: None,
        });
    }
}

struct LayerShape {
    op: Op,
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
