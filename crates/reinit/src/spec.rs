//! From the graph's view of a layer to the schemes' [`LayerSpec`]: the one
//! place where the two vocabularies meet.

use reinit_graph::{Analysis, ChainPosition as GraphChain, Layer, Role};
use reinit_schemes::{
    Activation, BranchPosition, ChainPosition, LayerKind, LayerSpec, ResidualRole,
};

pub fn activation(a: &reinit_graph::Activation) -> Activation {
    use reinit_graph::Activation as G;
    match a {
        G::Relu => Activation::Relu,
        G::LeakyRelu { alpha } => Activation::LeakyRelu { alpha: *alpha },
        G::PRelu => Activation::PRelu,
        G::Elu { alpha } => Activation::Elu { alpha: *alpha },
        G::Selu => Activation::Selu,
        G::Sigmoid => Activation::Sigmoid,
        G::HardSigmoid => Activation::HardSigmoid,
        G::Tanh => Activation::Tanh,
        G::Softplus => Activation::Softplus,
        G::Gelu => Activation::Gelu,
        G::Silu => Activation::Silu,
        G::HardSwish => Activation::HardSwish,
        G::Relu6 => Activation::Relu6,
        G::HardTanh => Activation::HardTanh,
        G::Softmax => Activation::Softmax,
        G::None | G::ResidualAdd => Activation::Linear,
        G::Other(op) => Activation::Other(op.clone()),
    }
}

/// The layer's role as a short word for plans and reports.
pub fn role(layer: &Layer) -> String {
    match layer.residual {
        Some(r) => format!("residual[{}].{}", r.block, r.role.name()),
        None if is_network_output(layer) => "output".into(),
        None => "plain".into(),
    }
}

fn is_network_output(layer: &Layer) -> bool {
    layer.stops_at == Some(reinit_graph::StopReason::Output)
        || matches!(layer.activation, reinit_graph::Activation::Softmax)
}

/// Position of layer `index` in the model's feed-forward chain, when the chain
/// can be mirrored (relu-share).
pub fn chain_position(analysis: &Analysis, index: usize) -> Option<ChainPosition> {
    let chain = analysis.chain.as_ref().ok().filter(|c| c.mirrorable())?;
    let step = chain.steps.iter().find(|s| s.layer == index)?;
    Some(match step.position {
        GraphChain::Input => ChainPosition::Input,
        GraphChain::Hidden => ChainPosition::Hidden,
        GraphChain::Output => ChainPosition::Output,
    })
}

pub fn layer_spec(analysis: &Analysis, index: usize) -> LayerSpec {
    let layer = &analysis.layers[index];
    let residual = layer.residual.and_then(|r| {
        let position = match r.role {
            Role::First => BranchPosition::First,
            Role::Inner => BranchPosition::Inner,
            Role::Last => BranchPosition::Last,
            Role::Only => BranchPosition::Only,
            Role::Shortcut => return None,
        };
        let block = &analysis.residual_blocks[r.block];
        Some(ResidualRole {
            position,
            branch_layers: block.depth.max(1),
            num_branches: analysis.num_branches(),
        })
    });
    LayerSpec {
        kind: match layer.kind {
            reinit_graph::LayerKind::Linear => LayerKind::Linear,
            reinit_graph::LayerKind::Conv => LayerKind::Conv,
            reinit_graph::LayerKind::ConvTranspose => LayerKind::ConvTranspose,
        },
        groups: layer.groups,
        n_out: layer.n_out,
        n_in: layer.n_in,
        kernel: layer.kernel.clone(),
        delta_tap: layer.delta_tap.clone(),
        fan_in: layer.fan_in,
        fan_out: layer.fan_out,
        activation: activation(&layer.activation),
        residual,
        chain: chain_position(analysis, index),
        network_output: is_network_output(layer),
        dead_inputs: Vec::new(),
        has_bias: layer.bias.is_some(),
    }
}
