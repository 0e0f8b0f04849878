//! `reinit inspect` output: the JSON document (schema_version 1) and the table.

use serde_json::{Value, json};

use crate::ops::{Op, StopReason};
use crate::types::{Activation, Analysis, Layer, LayerKind, Link, Role, Skip};

/// Version of the `inspect --json` document.
pub const SCHEMA_VERSION: u64 = 1;

impl Analysis {
    /// The `reinit inspect --json` document (schema in the crate README).
    pub fn to_json(&self) -> Value {
        let names = |ids: &[usize]| -> Vec<Value> {
            ids.iter()
                .map(|&i| json!(self.layers[i].weight_name))
                .collect()
        };
        json!({
            "schema_version": SCHEMA_VERSION,
            "summary": {
                "layers": self.layers.len(),
                "linear": self.count(LayerKind::Linear),
                "conv": self.count(LayerKind::Conv),
                "conv_transpose": self.count(LayerKind::ConvTranspose),
                "residual_blocks": self.residual_blocks.len(),
                "num_branches": self.num_branches(),
                "layers_per_branch": self.layers_per_branch(),
                "bn_fused": self.bn_fused,
            },
            "layers": self.layers.iter().map(layer_json).collect::<Vec<_>>(),
            "residual_blocks": self.residual_blocks.iter().map(|b| json!({
                "add_node": b.add_node,
                "source": b.source,
                "skip": match b.skip { Skip::Identity => "identity", Skip::Projection(_) => "projection" },
                "branch": names(&b.branch),
                "shortcut": names(b.shortcut()),
                "depth": b.depth,
                "nested_in": b.nested_in,
            })).collect::<Vec<_>>(),
            "embeddings": self.embeddings.iter().map(|e| json!({
                "node": e.node, "weight": e.weight_name, "shape": e.shape,
            })).collect::<Vec<_>>(),
            "norms": self.norms.iter().map(|n| json!({
                "node": n.node,
                "op": n.op.name(),
                "scale": n.scale_name,
                "bias": n.bias_name,
                "ends_residual_branch": n.ends_residual_branch,
            })).collect::<Vec<_>>(),
            "shared_weights": self.shared_weights.iter().map(|s| json!({
                "weight": s.name, "uses": s.uses,
            })).collect::<Vec<_>>(),
            "chain": match &self.chain {
                Ok(chain) => json!({
                    "layers": chain.steps.iter().map(|s| json!(self.layers[s.layer].weight_name)).collect::<Vec<_>>(),
                    "mirrorable": chain.mirrorable(),
                    "blocked": chain.steps.iter().filter_map(|s| match &s.next {
                        Some(Link::Blocked(why)) => Some(json!({"after": self.layers[s.layer].weight_name, "reason": why})),
                        _ => None,
                    }).collect::<Vec<_>>(),
                }),
                Err(reason) => json!({ "not_a_chain": reason }),
            },
            "skipped": self.skipped.iter().map(|s| json!({
                "name": s.name, "reason": s.reason,
            })).collect::<Vec<_>>(),
            "unknown_ops": self.unknown_ops,
            "bn_fused": self.bn_fused,
            "warnings": self.warnings,
        })
    }

    /// A readable table (one row per layer) and a summary line.
    pub fn render_table(&self) -> String {
        let header = [
            "#",
            "weight",
            "kind",
            "shape",
            "groups",
            "fan_in",
            "fan_out",
            "activation",
            "residual",
        ];
        let rows: Vec<[String; 9]> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let shape = l
                    .stored_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("×");
                let residual = l
                    .residual
                    .map(|r| format!("block {} {}", r.block, r.role.name()))
                    .unwrap_or_else(|| "-".into());
                let mut activation = l.activation.name().to_string();
                if let Activation::LeakyRelu { alpha } | Activation::Elu { alpha } = l.activation {
                    activation = format!("{activation}({alpha})");
                }
                if l.between.contains(&Op::BatchNormalization) {
                    activation = format!("bn→{activation}");
                }
                [
                    i.to_string(),
                    l.weight_name.clone(),
                    l.kind.name().into(),
                    shape,
                    l.groups.to_string(),
                    l.fan_in.to_string(),
                    l.fan_out.to_string(),
                    activation,
                    residual,
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String| {
            let padded: Vec<String> = cells
                .iter()
                .zip(widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            out.push_str(padded.join("  ").trim_end());
            out.push('\n');
        };
        line(&header.map(String::from), &mut out);
        for row in &rows {
            line(row, &mut out);
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }

    /// One line: counts of layers, blocks, norms, embeddings, skipped.
    pub fn summary(&self) -> String {
        let projections = self
            .residual_blocks
            .iter()
            .filter(|b| matches!(b.skip, Skip::Projection(_)))
            .count();
        let mut s = format!(
            "{} layers ({} linear, {} conv, {} conv_transpose); {} residual blocks \
             (L={}, m={}, {} projection); {} norms; {} embeddings; {} shared; {} skipped",
            self.layers.len(),
            self.count(LayerKind::Linear),
            self.count(LayerKind::Conv),
            self.count(LayerKind::ConvTranspose),
            self.residual_blocks.len(),
            self.num_branches(),
            self.layers_per_branch(),
            projections,
            self.norms.len(),
            self.embeddings.len(),
            self.shared_weights.len(),
            self.skipped.len(),
        );
        if self.bn_fused {
            s.push_str("; Conv+BN fused export");
        }
        if !self.unknown_ops.is_empty() {
            s.push_str(&format!("; unknown ops: {}", self.unknown_ops.join(", ")));
        }
        if !self.warnings.is_empty() {
            s.push_str(&format!("; {} warnings", self.warnings.len()));
        }
        s
    }

    fn count(&self, kind: LayerKind) -> usize {
        self.layers.iter().filter(|l| l.kind == kind).count()
    }
}

fn layer_json(l: &Layer) -> Value {
    let activation = if l.activation.is_linear() {
        "none"
    } else {
        l.activation.name()
    };
    let params = match l.activation {
        Activation::LeakyRelu { alpha } | Activation::Elu { alpha } => json!({ "alpha": alpha }),
        _ => Value::Null,
    };
    json!({
        "node": l.node,
        "op": l.op.name(),
        "kind": l.kind.name(),
        "weight": l.weight_name,
        "bias": l.bias_name,
        "shape": l.stored_shape,
        "groups": l.groups,
        "fan_in": l.fan_in,
        "fan_out": l.fan_out,
        "activation": activation,
        "activation_params": params,
        "stops_at": l.stops_at.as_ref().map(StopReason::name),
        "between": l.between.iter().map(|op| op.name()).collect::<Vec<_>>(),
        "residual": l.residual.map(|r| json!({
            "block": r.block,
            // The documented roles are first|inner|last|shortcut; a one-layer
            // branch is its own last layer, which is what zero-init-last needs.
            "role": if r.role == Role::Only { "last" } else { r.role.name() },
        })),
        "n_out": l.n_out,
        "n_in": l.n_in,
        "kernel": l.kernel,
        "strides": l.strides,
        "dilations": l.dilations,
        "pads": l.pads.iter().map(|&(b, e)| json!([b, e])).collect::<Vec<_>>(),
        "delta_tap": l.delta_tap,
        "via": l.via,
        "alpha": l.alpha,
        "bn_folded": l.bn_folded,
    })
}
