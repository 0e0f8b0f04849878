//! IDInit (Pan, Wang, Wu, Wang, Zhang, Xu, "IDInit: A Universal and Stable Initialization
//! Method for Neural Network Training", ICLR 2025), schemes.md §4.
//!
//! No official code was found; the construction is the spec's \[design\] reading, every
//! unconfirmed rule behind a named option ([`IdInitParams`]):
//! * `IDI_τ`: `M[i, j] = τ` iff `j == i mod n_in` (padded identity; [`IdIndexRule::ModMin`]
//!   repeats it horizontally too), `IDIZ_ε` the same pattern with ε.
//! * main-stem layers `IDI_τ`; last layer of a residual branch `IDIZ_ε` (or zeros);
//!   classifier `IDI_τ` (or zeros).
//! * convs: patch-maintain (pattern on the flattened `(n_out, n_in·Πk)` kernel, input channel
//!   major) or channel-maintain (pattern at the delta tap); per group.
//! * no dead-neuron fix: the paper's ε on units that would see only zero-padded channels
//!   needs a data-flow of structurally zero channels the graph analysis does not have, so
//!   it is not offered (issue 15: it could never fire from ONNX).
//! * `loose_std`: `N(0, s²)` noise on every entry. Biases 0.

use crate::init::{SparseWeight, WeightValues};
use crate::layer::{LayerKind, LayerSpec};
use crate::params::{BranchLast, ClassifierRule, IdConvRule, IdIndexRule, IdInitParams};
use crate::rng::Stream;

/// Whether `(i, j)` of an `n_out × n_in` padded identity is on the pattern.
fn on_pattern(i: usize, j: usize, n_out: usize, n_in: usize, rule: IdIndexRule) -> bool {
    match rule {
        IdIndexRule::ModIn => j == i % n_in,
        IdIndexRule::ModMin => {
            let m = n_out.min(n_in);
            i.abs_diff(j).is_multiple_of(m)
        }
    }
}

pub(crate) fn idinit(
    p: &IdInitParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> (WeightValues, Option<Vec<f64>>) {
    // the identity-like pattern, sparse: (canonical index, value)
    let mut entries: Vec<(usize, f64)> = Vec::new();
    let sparse = |mut entries: Vec<(usize, f64)>| {
        entries.sort_unstable_by_key(|e| e.0);
        WeightValues::Sparse(SparseWeight {
            len: spec.numel(),
            entries,
        })
    };
    let bias = spec.has_bias.then(|| vec![0.0; spec.bias_len()]);
    let (n_out, n_in, taps) = (spec.n_out, spec.n_in, spec.taps());
    let value = if spec.residual.is_some_and(|r| r.position.is_last()) {
        match p.branch_last {
            BranchLast::Epsilon => {
                notes.push(format!(
                    "idinit: last layer of a residual branch: IDIZ_eps, eps = {}",
                    p.epsilon
                ));
                Some(p.epsilon)
            }
            BranchLast::Zero => {
                notes.push("idinit: last layer of a residual branch: zeros".into());
                None
            }
        }
    } else if spec.network_output && p.classifier == ClassifierRule::Zero {
        notes.push("idinit: classifier zeroed [UNCONFIRMED option]".into());
        None
    } else {
        Some(p.tau)
    };
    if n_out == 0 || n_in == 0 || taps == 0 {
        return (sparse(entries), bias);
    }
    let conv = spec.kind != LayerKind::Linear && taps > 1;
    let rule = if conv {
        p.conv
    } else {
        IdConvRule::PatchMaintain
    };
    let mut notes_tap = Vec::new();
    let tap = spec.delta_tap_or_centre(&mut notes_tap);
    if let Some(v) = value {
        if rule == IdConvRule::ChannelMaintain {
            notes.append(&mut notes_tap);
        }
        for g in 0..spec.groups {
            match rule {
                IdConvRule::PatchMaintain => {
                    // flattened row o: columns (i, t) ↦ i·taps + t, input-channel major
                    let cols = n_in * taps;
                    for o in 0..n_out {
                        for col in 0..cols {
                            if on_pattern(o, col, n_out, cols, p.index_rule) {
                                entries.push((spec.index(g, o, 0, 0) + col, v));
                            }
                        }
                    }
                }
                IdConvRule::ChannelMaintain => {
                    for o in 0..n_out {
                        for i in 0..n_in {
                            if on_pattern(o, i, n_out, n_in, p.index_rule) {
                                entries.push((spec.index(g, o, i, tap), v));
                            }
                        }
                    }
                }
            }
        }
    }
    if p.loose_std > 0.0 {
        let mut w = sparse(entries).into_vec();
        let mut noise = vec![0.0; w.len()];
        rng.fill_normal(&mut noise, p.loose_std);
        for (x, n) in w.iter_mut().zip(&noise) {
            *x += n;
        }
        notes.push(format!(
            "idinit: loose variant, N(0, {}^2) added [UNCONFIRMED value]",
            p.loose_std
        ));
        return (WeightValues::Dense(w), bias);
    }
    (sparse(entries), bias)
}
