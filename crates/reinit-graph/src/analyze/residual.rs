//! Residual blocks: joins of two data paths that leave one fork, their branch
//! and shortcut layers, depths, nesting and each layer's role.

use std::collections::{HashMap, HashSet};

use super::{BlockRegion, Context};
use crate::ops::{Arith, OpClass};
use crate::types::*;

impl<'g, 'm> Context<'g, 'm> {
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

    pub(super) fn position(&self, value: &str) -> i64 {
        self.g.producer.get(value).map_or(-1, |&i| i as i64)
    }

    pub(super) fn find_residual_blocks(&mut self) {
        let g = self.g;
        let mut blocks: Vec<(ResidualBlock, HashSet<usize>, HashSet<usize>)> = Vec::new();
        let mut add_index: Vec<usize> = Vec::new();
        for (index, node) in g.nodes.iter().enumerate() {
            if !matches!(
                node.class(),
                Some(OpClass::Arithmetic(Arith::Add | Arith::Sum))
            ) {
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
            if !self.is_fork(source, [(&anc_a, &region_a), (&anc_b, &region_b)]) {
                continue;
            }
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

    /// Whether `source`, the latest value both operands of a join depend on, is
    /// the fork of a residual block: the value both paths leave from.
    ///
    /// An attention mask (or position bias) is computed once from the graph
    /// inputs and added to every layer's scores. From the second layer on, the
    /// scores depend on it too (through the earlier layers), so the mask is the
    /// latest common ancestor of `scores + mask` and that `Add` looked like a
    /// block whose branch held every earlier layer (BERT-base: 35 blocks for 24).
    /// Strict dominance (every path to both operands passes the fork) cannot
    /// tell the two apart: the mask reaches every attention branch, so no hidden
    /// state dominates its own branch either. What does: a fork that no weight
    /// layer precedes (a mask, a bias or an embedding sum prepared from the
    /// inputs) dominates the *weighted* computation of a real block — every
    /// weight layer feeding either operand lies on a path from it — while the
    /// scores of a masked attention come from layers the mask never reaches.
    /// A fork behind a weight layer is a hidden state; its blocks keep their
    /// side inputs (masks, cross-attention keys) as before.
    fn is_fork(
        &self,
        source: &'m str,
        operands: [(&HashSet<&'m str>, &HashSet<usize>); 2],
    ) -> bool {
        let g = self.g;
        let layer_node = |v: &&'m str| {
            g.producer
                .get(v)
                .copied()
                .filter(|n| self.layer_at.contains_key(n))
        };
        if self
            .ancestors(source)
            .iter()
            .any(|v| layer_node(v).is_some())
        {
            return true;
        }
        operands.iter().all(|(ancestors, region)| {
            ancestors
                .iter()
                .filter_map(layer_node)
                .all(|n| region.contains(&n))
        })
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
}
