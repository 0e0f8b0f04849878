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
    let chain = analysis
        .chain
        .as_ref()
        .ok()
        .filter(|c| c.mirrorable() && pairing_breaks(analysis).is_empty())?;
    let step = chain.steps.iter().find(|s| s.layer == index)?;
    Some(match step.position {
        GraphChain::Input => ChainPosition::Input,
        GraphChain::Hidden => ChainPosition::Hidden,
        GraphChain::Output => ChainPosition::Output,
    })
}

/// Where relu-share's mirrored pairing would silently break between two
/// consecutive chain layers joined only by elementwise ops, one sentence per
/// break naming both layers (empty when the model is no chain). Each layer
/// pairs unit `u` of a group with `u + n/2` of the same group; the next layer
/// must pair its inputs the same way, which fails when
/// * the two layers have different group counts (the halves are per group), or
/// * a Flatten spreads each channel over `s > 1` inputs and the channel count
///   per group is odd (the leftover channel's pixels land in the other half).
pub fn pairing_breaks(analysis: &Analysis) -> Vec<String> {
    let Ok(chain) = &analysis.chain else {
        return Vec::new();
    };
    let mut breaks = Vec::new();
    for pair in chain.steps.windows(2) {
        let (from, to) = (
            &analysis.layers[pair[0].layer],
            &analysis.layers[pair[1].layer],
        );
        let outputs = from.n_out * from.groups;
        let inputs = to.n_in * to.groups;
        if outputs == 0 || inputs % outputs != 0 {
            breaks.push(format!(
                "'{}' reads {inputs} inputs from the {outputs} outputs of '{}': no channel-wise pairing",
                to.weight_name, from.weight_name
            ));
        } else if from.groups != to.groups {
            breaks.push(format!(
                "'{}' has {} groups and '{}' {}: the mirrored halves are per group and do not line up",
                from.weight_name, from.groups, to.weight_name, to.groups
            ));
        } else if inputs > outputs && from.n_out % 2 == 1 {
            breaks.push(format!(
                "'{}' has an odd channel count ({}) before a Flatten into '{}' ({} inputs per \
                 channel): the leftover channel's values fall into the other half",
                from.weight_name,
                from.n_out,
                to.weight_name,
                inputs / outputs
            ));
        }
    }
    breaks
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
        has_bias: layer.bias.is_some(),
    }
}
