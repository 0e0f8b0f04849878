//! ReLU initialization by initial parameter sharing (Burkholz & Dubatovka, "Initialization of
//! ReLUs for Dynamical Isometry", NeurIPS 2019) and the looks-linear orthogonal variant
//! (Balduzzi et al. 2017), schemes.md §3.3.
//!
//! Mirrored blocks make a ReLU chain exactly linear at init (`ReLU(u) − ReLU(−u) = u`):
//! input layer `[A; −A]`, hidden `[[A, −A], [−A, A]]`, output `[A, −A]`; first half / second
//! half pairing; biases `[c; −c]`. For convs the blocks are on the channel axes with a kernel
//! submatrix `K` (Gaussian, or delta-orthogonal for the orthogonal variant). Odd widths: the
//! leftover (last) unit gets a zero row and a zero column in the next layer \[design\].

use crate::error::SchemeError;
use crate::layer::{ChainPosition, LayerKind, LayerSpec};
use crate::linalg::haar_orthogonal;
use crate::params::{OddWidth, ReluShareParams, Submatrix};
use crate::rng::Stream;

const SCHEME: &str = "relu-share";

pub(crate) fn relu_share(
    p: &ReluShareParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
) -> Result<(Vec<f64>, Option<Vec<f64>>), SchemeError> {
    let position = spec.chain.ok_or_else(|| SchemeError::Unsupported {
        scheme: SCHEME,
        reason: "the layer is not in a plain ReLU chain (no chain position); mirrored \
                 pairing cannot be kept"
            .into(),
    })?;
    if spec.residual.is_some() {
        return Err(SchemeError::Unsupported {
            scheme: SCHEME,
            reason: "the layer is inside a residual branch: the residual addition does not \
                     respect the mirrored pairing"
                .into(),
        });
    }
    if position != ChainPosition::Output && !spec.activation.is_relu() {
        return Err(SchemeError::Unsupported {
            scheme: SCHEME,
            reason: format!(
                "the layer is followed by {} — mirroring is exact only for ReLU \
                 (leaky ReLU would need rescaling by 1+alpha)",
                spec.activation
            ),
        });
    }
    let (n_out, n_in, taps) = (spec.n_out, spec.n_in, spec.taps());
    let mirror_out = position != ChainPosition::Output;
    let mirror_in = position != ChainPosition::Input;
    let (h_out, h_in) = (
        if mirror_out { n_out / 2 } else { n_out },
        if mirror_in { n_in / 2 } else { n_in },
    );
    if h_out == 0 || h_in == 0 {
        return Err(SchemeError::Shape {
            scheme: SCHEME,
            shape: format!("{:?}", spec.shape()),
            reason: "a mirrored side needs at least 2 units per group".into(),
        });
    }
    let odd = (mirror_out && n_out % 2 == 1) || (mirror_in && n_in % 2 == 1);
    if odd {
        match p.odd_width {
            OddWidth::ZeroUnit => notes.push(
                "relu-share: odd width, the leftover unit gets a zero row/column [design]".into(),
            ),
            OddWidth::He => {
                notes.push(
                    "relu-share: odd width, He normal for this layer (not mirrored) [design]"
                        .into(),
                );
                let std = (2.0 / spec.fan_in.max(1) as f64).sqrt();
                let mut w = vec![0.0; spec.numel()];
                rng.fill_normal(&mut w, std);
                return Ok((w, spec.has_bias.then(|| vec![0.0; spec.bias_len()])));
            }
        }
    }
    let conv = spec.kind != LayerKind::Linear && taps > 1;
    let tap = if conv && p.submatrix == Submatrix::Orthogonal {
        spec.delta_tap_or_centre(notes)
    } else {
        0
    };
    let mut w = vec![0.0; spec.numel()];
    let mut bias = spec.has_bias.then(|| vec![0.0; spec.bias_len()]);
    for g in 0..spec.groups {
        // submatrix A: h_out × h_in × taps, row-major
        let a: Vec<f64> = match p.submatrix {
            Submatrix::Gaussian => {
                let mut a = vec![0.0; h_out * h_in * taps];
                rng.fill_normal(&mut a, (1.0 / (h_in * taps) as f64).sqrt());
                a
            }
            Submatrix::Orthogonal => {
                let h = haar_orthogonal(h_out, h_in, 1.0, rng);
                let mut a = vec![0.0; h_out * h_in * taps];
                for o in 0..h_out {
                    for i in 0..h_in {
                        a[(o * h_in + i) * taps + tap] = h[o * h_in + i];
                    }
                }
                a
            }
        };
        let signs_out: &[(usize, f64)] = if mirror_out {
            &[(0, 1.0), (1, -1.0)]
        } else {
            &[(0, 1.0)]
        };
        let signs_in: &[(usize, f64)] = if mirror_in {
            &[(0, 1.0), (1, -1.0)]
        } else {
            &[(0, 1.0)]
        };
        for &(bo, so) in signs_out {
            for &(bi, si) in signs_in {
                for o in 0..h_out {
                    for i in 0..h_in {
                        let dst = spec.index(g, bo * h_out + o, bi * h_in + i, 0);
                        let src = (o * h_in + i) * taps;
                        for t in 0..taps {
                            w[dst + t] = so * si * a[src + t];
                        }
                    }
                }
            }
        }
        if let Some(b) = bias.as_mut()
            && mirror_out
            && p.sigma_b > 0.0
        {
            for o in 0..h_out {
                let c = rng.normal() * p.sigma_b;
                b[g * n_out + o] = c;
                b[g * n_out + h_out + o] = -c;
            }
        }
    }
    Ok((w, bias))
}
