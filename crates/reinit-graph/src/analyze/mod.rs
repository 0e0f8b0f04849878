//! The analysis passes, in order: weight layers / embeddings / norms
//! (`layers`), residual blocks (`residual`), the activation after each layer
//! (`activation`), then the derived facts: roles, shared weights, fused BN,
//! chain, skipped tensors, unknown ops (`derived`). What each op means comes
//! from the op table (`crate::ops`), read once per node.

mod activation;
mod derived;
mod layers;
mod residual;

use std::collections::{HashMap, HashSet};

use reinit_onnx::{Model, TensorId};

use crate::graph::Graph;
use crate::ops::OpClass;
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

impl<'g, 'm> Context<'g, 'm> {
    pub(super) fn name(&self, id: TensorId) -> String {
        self.g.model.tensor(id).name.clone()
    }

    pub(super) fn skip(&mut self, id: TensorId, reason: String) {
        if self.claimed.insert(id) {
            let name = self.name(id);
            self.analysis.skipped.push(Skipped {
                tensor: id,
                name,
                reason,
            });
        }
    }

    /// Consumers that read the value's data (`Shape`/`Size` only read its dims).
    pub(super) fn data_consumers(&self, value: &str) -> Vec<usize> {
        self.g
            .consumers_of(value)
            .iter()
            .copied()
            .filter(|&c| self.g.nodes[c].class() != Some(OpClass::Shape))
            .collect()
    }
}
