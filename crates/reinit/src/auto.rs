//! `--scheme auto`: a scheme per layer, chosen by its role, with the reason.

use reinit_graph::{Activation, Analysis, Role};

use crate::params::SchemeParams;

/// What `auto` does, as `reinit schemes` shows it (the rules are [`choose`]'s).
pub const AUTO_SUMMARY: &str = "per layer: idinit in residual branches, relu-share (orthogonal submatrix) on plain ReLU chains, critical before tanh, delta-orthogonal for convs, orthogonal elsewhere";

/// The scheme name for layer `index` and why.
pub fn choose(analysis: &Analysis, index: usize) -> (&'static str, String) {
    let layer = &analysis.layers[index];
    if let Some(r) = layer.residual
        && r.role != Role::Shortcut
    {
        return (
            "idinit",
            format!(
                "in the branch of residual block {}: IDInit starts the block as an identity",
                r.block
            ),
        );
    }
    // A mirrorable chain is joined only by ReLUs and elementwise ops; its output
    // layer must take the mirrored form too, or the pairing is not undone.
    if crate::spec::chain_position(analysis, index).is_some() {
        return (
            "relu-share",
            "plain ReLU chain: mirrored parameter sharing with an orthogonal submatrix \
             (exactly linear at init, all singular values 1)"
                .into(),
        );
    }
    if matches!(layer.activation, Activation::Tanh | Activation::HardTanh) {
        return (
            "critical",
            format!(
                "{} follows: orthogonal weights at the critical point",
                layer.activation.name()
            ),
        );
    }
    if layer.delta_tap.is_some() && layer.kernel.iter().product::<usize>() > 1 {
        return (
            "delta-orthogonal",
            "convolution with an identity tap: delta-orthogonal".into(),
        );
    }
    (
        "orthogonal",
        "no residual, ReLU-chain or tanh role: orthogonal".into(),
    )
}

/// The parameters `auto` builds its choice with: the user's, except that relu-share
/// takes the orthogonal submatrix unless `--submatrix` says otherwise — the paper's
/// Gaussian submatrix makes the chain exactly linear but not isometric (the variance of
/// the squared singular values grows with depth), and `auto` promises isometry.
pub fn params(chosen: &str, params: &SchemeParams) -> SchemeParams {
    let mut params = params.clone();
    if chosen == "relu-share" && params.values().get("submatrix").is_none() {
        params
            .set("submatrix", "orthogonal")
            .expect("submatrix is a choice parameter of the table");
    }
    params
}
