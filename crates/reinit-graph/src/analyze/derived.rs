//! Facts derived from layers and blocks: norms that end a branch, shared
//! weights, fused-BN exports, the feed-forward chain, skipped tensors and ops
//! outside the table.

use reinit_onnx::TensorId;

use super::Context;
use crate::ops::{Arith, Op, OpClass};
use crate::types::*;

impl<'g, 'm> Context<'g, 'm> {
    pub(super) fn mark_norms_ending_branches(&mut self) {
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

    pub(super) fn find_shared(&mut self) {
        let mut uses: Vec<(TensorId, usize, String)> = Vec::new();
        for l in &self.analysis.layers {
            uses.push((l.weight, l.topo_index, l.node.clone()));
        }
        for e in &self.analysis.embeddings {
            let index = self
                .g
                .nodes
                .iter()
                .position(|n| n.name == e.node && n.kind == Some(Op::Gather))
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

    pub(super) fn detect_fused_bn(&mut self) {
        let mut renamed = 0;
        let mut renamed_transposed = 0;
        for l in &mut self.analysis.layers {
            if l.weight_name.starts_with("onnx::") {
                renamed += 1;
                if l.layout.operand == OperandLayout::InOut {
                    renamed_transposed += 1;
                }
            }
            let bn_after = l.between.contains(&Op::BatchNormalization);
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

    pub(super) fn find_chain(&mut self) {
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
            let fine = match node.kind {
                Some(op) if op.def().keeps_pairing => true,
                Some(op) => {
                    matches!(op.class(), OpClass::Arithmetic(Arith::Add | Arith::Sub)) && other_meta
                }
                None => false,
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

    pub(super) fn find_skipped(&mut self) {
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

    pub(super) fn find_unknown_ops(&mut self) {
        let mut unknown: Vec<String> = self
            .g
            .nodes
            .iter()
            .filter(|n| n.kind.is_none())
            .map(|n| n.qualified_op())
            .collect();
        unknown.sort();
        unknown.dedup();
        self.analysis.unknown_ops = unknown;
    }
}
