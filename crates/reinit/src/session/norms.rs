//! The norm layers a plan resets: zero-init-last (γ = β = 0 where a norm
//! ends a residual branch) from the scheme, and with `--reset-norms` γ = 1,
//! β = 0 and running statistics of mean 0, variance 1 elsewhere.

use reinit_onnx::{Edits, Model, TensorId};
use reinit_schemes::{NormInit, NormOptions, NormSpec, init_norm};

use crate::plan::PlannedNorm;
use crate::report::{NormReset, Report};

/// Sets a planned norm's parameters into `edits`, recording a reset in `report`.
pub(super) fn set_norm(
    model: &Model,
    norm: &PlannedNorm,
    options: &NormOptions,
    edits: &mut Edits,
    report: &mut Report,
) {
    let channels = model.tensor(norm.scale).numel();
    let spec = NormSpec {
        channels,
        after_branch_last: norm.after_branch_last,
    };
    // The reset is done here for every scheme (IDInit's identity blocks
    // need β = 0 too); the schemes crate only decides zero-init-last.
    let zero_last = NormOptions {
        reset: false,
        ..*options
    };
    let init = norm
        .scheme
        .and_then(|scheme| init_norm(&scheme, &spec, &zero_last))
        .or_else(|| {
            norm.reset.then(|| NormInit {
                gamma: vec![1.0; channels],
                beta: vec![0.0; channels],
            })
        });
    let Some(init) = init else {
        return;
    };
    let mut set = Vec::new();
    let mut put = |id: TensorId, values: Vec<f64>| {
        if model.tensor(id).numel() == values.len() && model.tensor(id).dtype.is_float() {
            set.push(model.tensor(id).name.clone());
            edits.set(id, values);
        }
    };
    put(norm.scale, init.gamma);
    if let Some(bias) = norm.bias {
        put(bias, init.beta);
    }
    if norm.reset {
        if let Some(mean) = norm.running_mean {
            put(mean, vec![0.0; model.tensor(mean).numel()]);
        }
        if let Some(var) = norm.running_var {
            put(var, vec![1.0; model.tensor(var).numel()]);
        }
        report.norms_reset.push(NormReset {
            node: norm.node.clone(),
            op: norm.op.name().into(),
            tensors: set,
        });
    }
}
