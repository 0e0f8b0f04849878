//! The default training recipe of `verify` for a model: which optimizer,
//! learning rate and schedule the runs use when the user gives none, and why
//! (recorded in the report as `optimizer_choice`).
//!
//! Residual networks without normalization layers are trained the way the
//! initializations made for them were evaluated — SGD with momentum 0.9 at
//! lr 0.1 (He et al. 2016; Fixup, Zhang et al. 2019, trains such nets at that
//! rate; IDInit's analysis assumes momentum), with cosine decay over the run.
//! AdamW is the wrong probe there for two measured reasons: it divides every
//! gradient by its own scale, so the gradient explosion that makes He fail
//! without normalization never reaches the weights (He on the 16-block
//! fixture: loss 28 at init, collapse to a constant output, no blow-up); and
//! its first step moves zero-initialized weights (Fixup's branch-last layers
//! and classifier) by a full lr per entry, all at once (Fixup on ResNet-18
//! without BN: loss spike 228x at step 3). Everything else — normalized
//! networks, plain MLPs, transformers — keeps AdamW at lr 3e-3.

use reinit_onnx::Model;
use reinit_onnx::proto::{GraphProto, NodeProto};

use crate::train::{LrSchedule, Optimizer, TrainConfig};

/// SGD momentum of the no-normalization residual recipe.
pub const SGD_MOMENTUM: f64 = 0.9;
/// Learning rate of SGD when none is given (ResNet / Fixup).
pub const SGD_LR: f64 = 0.1;
/// Learning rate of AdamW when none is given.
pub const ADAMW_LR: f64 = 3e-3;

/// Which parts of the recipe the user fixed (`--optimizer`, `--lr`,
/// `--lr-schedule`); the others follow the model.
#[derive(Debug, Clone, Copy, Default)]
pub struct Given {
    pub optimizer: bool,
    pub lr: bool,
    pub schedule: bool,
}

/// What the graph says about how it must be trained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    /// Normalization nodes (by op type, first few), including LayerNorm /
    /// RMSNorm written out as ReduceMean … Sqrt.
    pub normalization: Vec<String>,
    /// `Add`/`Sum` nodes joining two computed values (neither a weight nor a
    /// constant): skip connections.
    pub residual_adds: usize,
}

const NORM_OPS: &[&str] = &[
    "BatchNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "RMSNormalization",
    "SimplifiedLayerNormalization",
    "SkipLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "EmbedLayerNormalization",
];

impl Structure {
    pub fn of(model: &Model) -> Structure {
        let Some(graph) = model.proto().graph.as_ref() else {
            return Structure {
                normalization: Vec::new(),
                residual_adds: 0,
            };
        };
        Structure::of_graph(graph)
    }

    fn of_graph(graph: &GraphProto) -> Structure {
        let op = |n: &NodeProto| n.op_type.clone().unwrap_or_default();
        let producer: std::collections::HashMap<&str, &NodeProto> = graph
            .node
            .iter()
            .flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n)))
            .collect();
        let fixed: std::collections::HashSet<&str> = graph
            .initializer
            .iter()
            .filter_map(|t| t.name.as_deref())
            .chain(
                graph
                    .node
                    .iter()
                    .filter(|n| op(n) == "Constant")
                    .flat_map(|n| n.output.iter().map(String::as_str)),
            )
            .collect();
        let produced_by = |value: &str, kind: &str| {
            producer
                .get(value)
                .is_some_and(|p| p.op_type.as_deref() == Some(kind))
        };
        let mut normalization = Vec::new();
        let mut residual_adds = 0;
        for node in &graph.node {
            let kind = op(node);
            if NORM_OPS.contains(&kind.as_str()) {
                normalization.push(kind.clone());
            } else if kind == "Sqrt"
                && let Some(x) = node.input.first()
            {
                // ReduceMean(x²) (+ ε) → Sqrt: a normalization written out
                let from_mean = produced_by(x, "ReduceMean")
                    || producer.get(x.as_str()).is_some_and(|p| {
                        p.op_type.as_deref() == Some("Add")
                            && p.input.iter().any(|i| produced_by(i, "ReduceMean"))
                    });
                if from_mean {
                    normalization.push("ReduceMean/Sqrt".into());
                }
            }
            if (kind == "Add" || kind == "Sum")
                && node.input.len() >= 2
                && node.input.iter().all(|i| {
                    !i.is_empty()
                        && !fixed.contains(i.as_str())
                        && producer.contains_key(i.as_str())
                })
            {
                residual_adds += 1;
            }
        }
        normalization.dedup();
        Structure {
            normalization,
            residual_adds,
        }
    }

    /// A residual network without any normalization layer.
    pub fn residual_without_normalization(&self) -> bool {
        self.normalization.is_empty() && self.residual_adds > 0
    }
}

/// Fills the parts of `train`'s recipe that `given` leaves open from
/// `structure`, and returns the sentence the report records.
pub fn choose(train: &mut TrainConfig, given: Given, structure: &Structure) -> String {
    let no_norm_residual = structure.residual_without_normalization();
    let why_model = if no_norm_residual {
        format!(
            "a residual network ({} skip-connection Adds) without normalization layers: \
             SGD with momentum {SGD_MOMENTUM}, lr {SGD_LR}, cosine decay (the recipe Fixup and \
             IDInit are evaluated with; AdamW's per-weight step sizes would hide the gradient \
             explosion of an init that does not tame the residual sum, and move zero-initialized \
             weights by a full lr at once)",
            structure.residual_adds
        )
    } else if structure.normalization.is_empty() {
        format!(
            "no residual connections and no normalization layers: AdamW, lr {ADAMW_LR}, constant"
        )
    } else {
        format!(
            "normalization layers ({}): AdamW, lr {ADAMW_LR}, constant",
            structure.normalization.join(", ")
        )
    };
    if given.optimizer {
        // an explicit optimizer keeps the fixed defaults it always had
        // (scripts that pass `--optimizer sgd --lr X` see no change)
        if !given.lr {
            train.lr = ADAMW_LR;
        }
        if !given.schedule {
            train.schedule = LrSchedule::Constant;
        }
    } else {
        train.optimizer = if no_norm_residual {
            Optimizer::Sgd {
                momentum: SGD_MOMENTUM,
            }
        } else {
            Optimizer::AdamW
        };
        if !given.lr {
            train.lr = if no_norm_residual { SGD_LR } else { ADAMW_LR };
        }
        if !given.schedule {
            train.schedule = if no_norm_residual {
                LrSchedule::Cosine
            } else {
                LrSchedule::Constant
            };
        }
    }
    match (given.optimizer, given.lr, given.schedule) {
        (false, false, false) => format!("default for {why_model}"),
        _ => {
            let mut parts = Vec::new();
            if given.optimizer {
                parts.push("--optimizer");
            }
            if given.lr {
                parts.push("--lr");
            }
            if given.schedule {
                parts.push("--lr-schedule");
            }
            format!(
                "{} given (an explicit --optimizer defaults to lr {ADAMW_LR}, constant; \
                 otherwise the optimizer, lr and schedule follow the model). The model is \
                 {why_model}",
                parts.join(", ")
            )
        }
    }
}

/// `SGD (momentum 0.9), lr 0.1, cosine` — one line for logs.
pub fn describe(optimizer: Optimizer, lr: f64, schedule: LrSchedule) -> String {
    let opt = match optimizer {
        Optimizer::Sgd { momentum } => format!("SGD (momentum {momentum})"),
        Optimizer::AdamW => "AdamW".to_string(),
    };
    format!("{opt}, lr {lr}, {}", schedule.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use reinit_onnx::proto::TensorProto;

    fn node(op: &str, inputs: &[&str], output: &str) -> NodeProto {
        NodeProto {
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.into()],
            ..Default::default()
        }
    }

    fn graph(nodes: Vec<NodeProto>, weights: &[&str]) -> GraphProto {
        GraphProto {
            node: nodes,
            initializer: weights
                .iter()
                .map(|w| TensorProto {
                    name: Some(w.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn skip_adds_count_but_bias_adds_and_normalized_graphs_do_not_pick_sgd() {
        // conv → relu → conv, + x: one residual Add; the bias Add has a weight
        let g = graph(
            vec![
                node("Conv", &["x", "w1"], "a"),
                node("Relu", &["a"], "b"),
                node("MatMul", &["b", "w2"], "c"),
                node("Add", &["c", "bias"], "d"),
                node("Add", &["d", "x0"], "y"),
                node("Relu", &["x"], "x0"),
            ],
            &["w1", "w2", "bias"],
        );
        let s = Structure::of_graph(&g);
        assert_eq!(s.residual_adds, 1);
        assert!(s.residual_without_normalization());
        let mut t = TrainConfig::default();
        let why = choose(&mut t, Given::default(), &s);
        assert_eq!(t.optimizer, Optimizer::Sgd { momentum: 0.9 });
        assert_eq!((t.lr, t.schedule), (SGD_LR, LrSchedule::Cosine));
        assert!(why.starts_with("default for a residual network"), "{why}");

        // the same graph with a LayerNorm written out: AdamW
        let mut nodes = g.node.clone();
        nodes.extend([
            node("ReduceMean", &["y"], "m"),
            node("Add", &["m", "eps"], "v"),
            node("Sqrt", &["v"], "s"),
        ]);
        let s = Structure::of_graph(&graph(nodes, &["w1", "w2", "bias", "eps"]));
        assert_eq!(s.normalization, vec!["ReduceMean/Sqrt".to_string()]);
        let mut t = TrainConfig::default();
        choose(&mut t, Given::default(), &s);
        assert_eq!((t.optimizer, t.lr), (Optimizer::AdamW, ADAMW_LR));
        assert_eq!(t.schedule, LrSchedule::Constant);

        // a plain chain: AdamW
        let plain = graph(vec![node("MatMul", &["x", "w"], "y")], &["w"]);
        let s = Structure::of_graph(&plain);
        assert!(!s.residual_without_normalization());
    }

    #[test]
    fn what_the_user_gives_is_kept_and_named() {
        let s = Structure {
            normalization: vec![],
            residual_adds: 3,
        };
        let mut t = TrainConfig {
            lr: 0.01,
            ..TrainConfig::default()
        };
        let why = choose(
            &mut t,
            Given {
                lr: true,
                ..Given::default()
            },
            &s,
        );
        assert_eq!(t.lr, 0.01);
        assert_eq!(t.optimizer, Optimizer::Sgd { momentum: 0.9 });
        assert!(why.starts_with("--lr given"), "{why}");
        let mut t = TrainConfig {
            optimizer: Optimizer::AdamW,
            ..TrainConfig::default()
        };
        choose(
            &mut t,
            Given {
                optimizer: true,
                ..Given::default()
            },
            &s,
        );
        assert_eq!((t.optimizer, t.lr), (Optimizer::AdamW, ADAMW_LR));
        // `--optimizer sgd` alone: the fixed defaults scripts relied on
        let mut t = TrainConfig {
            optimizer: Optimizer::Sgd { momentum: 0.9 },
            ..TrainConfig::default()
        };
        choose(
            &mut t,
            Given {
                optimizer: true,
                ..Given::default()
            },
            &s,
        );
        assert_eq!((t.lr, t.schedule), (ADAMW_LR, LrSchedule::Constant));
    }
}
