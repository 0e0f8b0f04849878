//! The first nonlinearity after each layer: the search forward from a layer's
//! output through biases, norms, reshapes and pooling, exporter decompositions
//! (GELU, SiLU, HardSwish) and `Clip` bounds.

use std::collections::HashSet;

use super::Context;
use crate::graph::Node;
use crate::ops::{Arith, LayerOp, Op, OpClass, StopReason};
use crate::types::*;

impl<'g, 'm> Context<'g, 'm> {
    pub(super) fn find_activations(&mut self) {
        let residual_adds: HashSet<usize> = self.block_adds.iter().copied().collect();
        for l in 0..self.analysis.layers.len() {
            let start = self.analysis.layers[l].topo_index;
            let found = match self.fused_activation(&self.g.nodes[start]) {
                Some(activation) => Found {
                    activation,
                    stops_at: None,
                    between: Vec::new(),
                },
                None => self.follow(start, &residual_adds),
            };
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
        let stop = |between: Vec<Op>, why: StopReason| Found {
            activation: Activation::None,
            stops_at: Some(why),
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
                return stop(between, StopReason::Fanout);
            }
            let Some(&c) = consumers.first() else {
                if let Some(&(parent, pos)) = g.sub_outputs.get(value) {
                    let parent = &g.nodes[parent];
                    between.extend(parent.kind);
                    value = parent.outputs.get(pos).copied().unwrap_or("");
                    continue;
                }
                let why = if g.outputs.contains(value) {
                    StopReason::Output
                } else {
                    StopReason::Unused
                };
                return stop(between, why);
            };
            if g.outputs.contains(value) {
                return stop(between, StopReason::Fanout);
            }
            let node = &g.nodes[c];
            if self.layer_at.contains_key(&c) {
                return stop(between, StopReason::Layer);
            }
            if residual_adds.contains(&c) {
                return Found {
                    activation: Activation::ResidualAdd,
                    stops_at: Some(StopReason::ResidualAdd),
                    between,
                };
            }
            let Some(op) = node.kind else {
                return stop(between, StopReason::Unknown(node.op.to_lowercase()));
            };
            let other_meta = || {
                node.inputs
                    .iter()
                    .filter(|&&i| i != value)
                    .all(|i| g.is_meta(i))
            };
            let activation = match op.class() {
                OpClass::Activation => self.activation_of(op, node),
                OpClass::Nonlinear => Activation::Other(op.name().to_lowercase()),
                OpClass::Arithmetic(
                    arith @ (Arith::Add | Arith::Sub | Arith::Mul | Arith::Div),
                ) if other_meta() => {
                    // A bias or a constant scale; the scale is recorded.
                    if matches!(arith, Arith::Mul | Arith::Div) {
                        between.push(op);
                    }
                    value = node.output();
                    continue;
                }
                OpClass::Arithmetic(Arith::Add | Arith::Sub | Arith::Sum) => {
                    return stop(between, StopReason::Add);
                }
                OpClass::Arithmetic(Arith::Mul | Arith::Div) => {
                    return stop(between, StopReason::Mul);
                }
                OpClass::PassThrough => {
                    value = node.output();
                    continue;
                }
                OpClass::Norm(_) | OpClass::Layout | OpClass::Resample | OpClass::Reduce => {
                    between.push(op);
                    value = node.output();
                    continue;
                }
                OpClass::Layer(LayerOp::Gemm | LayerOp::MatMul) | OpClass::Contraction => {
                    return stop(between, StopReason::MatMul);
                }
                _ => return stop(between, StopReason::Op(op)),
            };
            return Found {
                activation,
                stops_at: None,
                between,
            };
        }
        stop(between, StopReason::TooDeep)
    }

    /// The graph [`Activation`] of an op of class [`OpClass::Activation`],
    /// parameters read from the node.
    fn activation_of(&self, op: Op, node: &Node<'_>) -> Activation {
        match op {
            Op::Relu => Activation::Relu,
            Op::LeakyRelu => Activation::LeakyRelu {
                alpha: node.float("alpha").unwrap_or(0.01),
            },
            Op::PRelu => Activation::PRelu,
            Op::Elu => Activation::Elu {
                alpha: node.float("alpha").unwrap_or(1.0),
            },
            Op::Selu => Activation::Selu,
            Op::Sigmoid => Activation::Sigmoid,
            Op::HardSigmoid => Activation::HardSigmoid,
            Op::Tanh => Activation::Tanh,
            Op::Softplus => Activation::Softplus,
            Op::Gelu => Activation::Gelu,
            Op::HardSwish => Activation::HardSwish,
            Op::Softmax => Activation::Softmax,
            Op::Clip => self.clip(node),
            other => Activation::Other(other.name().to_lowercase()),
        }
    }

    /// The activation a contrib layer applies itself (`com.microsoft`
    /// FusedConv / FusedGemm: `activation` names it, `activation_params` holds
    /// LeakyRelu's alpha or Clip's bounds).
    fn fused_activation(&self, node: &Node<'_>) -> Option<Activation> {
        if !matches!(node.kind, Some(Op::FusedConv | Op::FusedGemm)) {
            return None;
        }
        let name = node.string("activation")?;
        let params = node.floats("activation_params").unwrap_or_default();
        let param = |i: usize| params.get(i).map(|&p| f64::from(p));
        Some(match name.as_str() {
            "Relu" => Activation::Relu,
            "Tanh" => Activation::Tanh,
            "Sigmoid" => Activation::Sigmoid,
            "HardSigmoid" => Activation::HardSigmoid,
            "LeakyRelu" => Activation::LeakyRelu {
                alpha: param(0).unwrap_or(0.01),
            },
            "Clip" => clip_activation(param(0), param(1)),
            other => Activation::Other(other.to_lowercase()),
        })
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
        clip_activation(lo, hi)
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
            nodes.iter().any(|n| {
                n.kind == Some(Op::Mul) && n.inputs.contains(&value) && n.inputs.contains(&v)
            })
        };
        for n in &nodes {
            let out = n.output();
            match n.kind {
                Some(Op::Sigmoid) if multiplies_value(out) => return Some(Activation::Silu),
                Some(Op::HardSigmoid) if multiplies_value(out) => {
                    return Some(Activation::HardSwish);
                }
                Some(Op::Div | Op::Mul)
                    if n.inputs
                        .iter()
                        .filter(|&&i| i != value)
                        .all(|i| g.is_meta(i))
                        && consumers_of(out).iter().any(|c| c.kind == Some(Op::Erf)) =>
                {
                    return Some(Activation::Gelu);
                }
                _ => {}
            }
        }
        // Tanh form: x·0.5·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
        let cubes = nodes.iter().any(|n| {
            (n.kind == Some(Op::Pow) && n.input(1).and_then(|e| g.const_scalar(e)) == Some(3.0))
                || (n.kind == Some(Op::Mul)
                    && n.inputs.iter().filter(|&&i| i == value).count() == 2)
        });
        if cubes {
            let mut frontier: Vec<&str> = nodes.iter().map(|n| n.output()).collect();
            for _ in 0..6 {
                let mut next = Vec::new();
                for v in frontier {
                    for c in consumers_of(v) {
                        match c.kind {
                            Some(Op::Tanh) => return Some(Activation::Gelu),
                            Some(Op::Mul | Op::Add | Op::Pow | Op::Div | Op::Sub) => {
                                next.push(c.output())
                            }
                            _ => {}
                        }
                    }
                }
                frontier = next;
            }
        }
        None
    }
}

/// `Clip(lo, hi)` as ReLU6, hard-tanh or ReLU when the bounds say so.
fn clip_activation(lo: Option<f64>, hi: Option<f64>) -> Activation {
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

struct Found {
    activation: Activation,
    stops_at: Option<StopReason>,
    between: Vec<Op>,
}
