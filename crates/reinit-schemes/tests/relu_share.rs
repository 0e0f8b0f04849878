//! relu-share (Burkholz & Dubatovka / looks-linear) oracles of schemes.md §3.3.

mod common;
use common::*;
use faer::Mat;
use reinit_schemes::*;

fn rs(submatrix: Submatrix) -> Scheme {
    Scheme::ReluShare(ReluShareParams {
        submatrix,
        ..Default::default()
    })
}

struct Net {
    layers: Vec<(Vec<f64>, Vec<f64>, usize, usize)>,
}

/// A plain ReLU MLP with widths `w[0] … w[L]`, ReLU after every layer but the last.
fn build(widths: &[usize], scheme: &Scheme, seed: u64) -> Net {
    let depth = widths.len() - 1;
    let layers = (0..depth)
        .map(|l| {
            let pos = if l == 0 {
                ChainPosition::Input
            } else if l == depth - 1 {
                ChainPosition::Output
            } else {
                ChainPosition::Hidden
            };
            let act = if l == depth - 1 {
                Activation::Linear
            } else {
                Activation::Relu
            };
            let spec = LayerSpec::linear(widths[l + 1], widths[l])
                .with_activation(act)
                .with_chain(pos);
            let init = init_layer(
                scheme,
                &spec,
                &mut Stream::new(seed, &format!("l{l}"), "relu-share"),
            )
            .unwrap();
            (init.weight, init.bias.unwrap(), widths[l + 1], widths[l])
        })
        .collect();
    Net { layers }
}

impl Net {
    fn forward(&self, x: &[f64]) -> Vec<f64> {
        let mut h = x.to_vec();
        let last = self.layers.len() - 1;
        for (l, (w, b, r, c)) in self.layers.iter().enumerate() {
            h = matvec(w, *r, *c, &h)
                .iter()
                .zip(b)
                .map(|(a, b)| a + b)
                .collect();
            if l != last {
                h.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        h
    }

    /// Input–output Jacobian at x by the chain rule.
    fn jacobian(&self, x: &[f64]) -> Mat<f64> {
        let mut h = x.to_vec();
        let mut j: Option<Mat<f64>> = None;
        let last = self.layers.len() - 1;
        for (l, (w, b, r, c)) in self.layers.iter().enumerate() {
            h = matvec(w, *r, *c, &h)
                .iter()
                .zip(b)
                .map(|(a, b)| a + b)
                .collect();
            let d: Vec<f64> = h
                .iter()
                .map(|&v| if l == last || v > 0.0 { 1.0 } else { 0.0 })
                .collect();
            let wm = Mat::<f64>::from_fn(*r, *c, |i, k| d[i] * w[i * c + k]);
            j = Some(match j {
                None => wm,
                Some(j) => wm * j,
            });
            if l != last {
                h.iter_mut().for_each(|v| *v = v.max(0.0));
            }
        }
        j.unwrap()
    }

    /// The product of the submatrices: what the net computes exactly.
    fn linear_map(&self) -> Mat<f64> {
        let mut j: Option<Mat<f64>> = None;
        let last = self.layers.len() - 1;
        for (l, (w, _, r, c)) in self.layers.iter().enumerate() {
            let rows = if l == last { *r } else { r / 2 };
            let cols = if l == 0 { *c } else { c / 2 };
            let a = Mat::<f64>::from_fn(rows, cols, |i, k| w[i * c + k]);
            j = Some(match j {
                None => a,
                Some(j) => a * j,
            });
        }
        j.unwrap()
    }
}

#[test]
fn mirrored_structure_is_exact() {
    for sub in [Submatrix::Gaussian, Submatrix::Orthogonal] {
        let spec = LayerSpec::linear(10, 8)
            .with_activation(Activation::Relu)
            .with_chain(ChainPosition::Hidden);
        let w = init_layer(&rs(sub), &spec, &mut Stream::new(0, "w", "relu-share"))
            .unwrap()
            .weight;
        let (h_out, h_in) = (5, 4);
        for o in 0..h_out {
            for i in 0..h_in {
                let a = w[o * 8 + i];
                assert_eq!(w[(o + h_out) * 8 + i + h_in], a);
                assert_eq!(w[o * 8 + i + h_in], -a);
                assert_eq!(w[(o + h_out) * 8 + i], -a);
            }
        }
    }
}

#[test]
fn mirrored_net_is_exactly_linear() {
    // f(αx+βy) = αf(x)+βf(y) with zero biases; with mirrored biases [c; −c] (σ_b > 0) the
    // map stays exactly affine, checked with α + β = 1.
    let widths = [20, 64, 64, 64, 10];
    for sub in [Submatrix::Gaussian, Submatrix::Orthogonal] {
        for (sigma_b, alpha, beta) in [(0.0, 0.7, -1.3), (0.3, 1.7, -0.7)] {
            let scheme = Scheme::ReluShare(ReluShareParams {
                submatrix: sub,
                sigma_b,
                ..Default::default()
            });
            let net = build(&widths, &scheme, 1);
            let (x, y) = (input(20, 1), input(20, 2));
            let xy: Vec<f64> = x
                .iter()
                .zip(&y)
                .map(|(a, b)| alpha * a + beta * b)
                .collect();
            let (fx, fy, fxy) = (net.forward(&x), net.forward(&y), net.forward(&xy));
            for k in 0..10 {
                let want = alpha * fx[k] + beta * fy[k];
                assert!(
                    (fxy[k] - want).abs() <= 1e-5 * want.abs().max(1.0),
                    "{sub:?} σ_b {sigma_b}"
                );
            }
            if sigma_b == 0.0 {
                // f(x) = A^L ⋯ A^1 x
                let a = net.linear_map();
                let ax: Vec<f64> = (0..10)
                    .map(|i| (0..20).map(|k| a[(i, k)] * x[k]).sum())
                    .collect();
                for (p, q) in fx.iter().zip(&ax) {
                    assert!((p - q).abs() < 1e-10 * q.abs().max(1.0));
                }
            }
        }
    }
}

#[test]
fn orthogonal_mirrored_deep_net_is_an_isometry() {
    // input 64, hidden 128 (and odd 129 via the zero-unit rule), output 64, 200 layers: every
    // singular value of the Jacobian is 1 (±1e-5).
    for hidden in [128, 129] {
        let mut widths = vec![64];
        widths.extend(std::iter::repeat_n(hidden, 199));
        widths.push(64);
        let net = build(&widths, &rs(Submatrix::Orthogonal), 7);
        let x = input(64, 9);
        let svs = singular_values(&net.jacobian(&x));
        assert_eq!(svs.len(), 64);
        for sv in svs {
            assert!((sv - 1.0).abs() < 1e-5, "hidden {hidden}: {sv}");
        }
    }
}

#[test]
fn odd_width_leftover_unit_is_zero() {
    let spec = LayerSpec::linear(7, 9)
        .with_activation(Activation::Relu)
        .with_chain(ChainPosition::Hidden);
    let init = init_layer(
        &rs(Submatrix::Gaussian),
        &spec,
        &mut Stream::new(0, "w", "relu-share"),
    )
    .unwrap();
    assert!(init.weight[6 * 9..].iter().all(|&x| x == 0.0), "last row");
    assert!((0..7).all(|o| init.weight[o * 9 + 8] == 0.0), "last column");
    assert!(init.notes.iter().any(|n| n.contains("odd width")));
}

#[test]
fn gaussian_submatrix_has_he_marginal_variance() {
    let n = 400;
    let spec = LayerSpec::linear(n, n)
        .with_activation(Activation::Relu)
        .with_chain(ChainPosition::Hidden);
    let w = init_layer(
        &rs(Submatrix::Gaussian),
        &spec,
        &mut Stream::new(0, "w", "relu-share"),
    )
    .unwrap()
    .weight;
    let (m, v) = mean_var(&w);
    let want = 2.0 / n as f64;
    let tol = 3.0 * (2.0 / (n * n / 4) as f64).sqrt(); // a quarter of the entries are independent
    assert!(
        m.abs() < 1e-3 && (v / want - 1.0).abs() < tol,
        "{v} vs {want}"
    );
    // E‖f(x)‖²/‖x‖² ≈ 1 across draws (Gaussian variant, constant width)
    let widths = [64, 64, 64, 64, 64];
    let ratios: Vec<f64> = (0..200)
        .map(|seed| {
            let net = build(&widths, &rs(Submatrix::Gaussian), seed);
            let x = input(64, 1000 + seed);
            (norm2(&net.forward(&x)) / norm2(&x)).powi(2)
        })
        .collect();
    let (m, _) = mean_var(&ratios);
    // hidden/output layers double the variance of the halved input: E ratio = 1 for the
    // input layer's 1/N_0 and 2/N for the rest through the mirrored (linear) map
    assert!((m - 1.0).abs() < 0.15, "E ratio {m}");
}

#[test]
fn refuses_where_the_pairing_breaks() {
    let s = rs(Submatrix::Gaussian);
    let no_chain = LayerSpec::linear(8, 8).with_activation(Activation::Relu);
    assert!(
        init_layer(&s, &no_chain, &mut Stream::new(0, "w", "r"))
            .unwrap_err()
            .to_string()
            .contains("plain ReLU chain")
    );
    let tanh = no_chain
        .clone()
        .with_chain(ChainPosition::Hidden)
        .with_activation(Activation::Tanh);
    assert!(
        init_layer(&s, &tanh, &mut Stream::new(0, "w", "r"))
            .unwrap_err()
            .to_string()
            .contains("tanh")
    );
    let res = no_chain
        .with_chain(ChainPosition::Hidden)
        .with_residual(ResidualRole {
            position: BranchPosition::First,
            branch_layers: 2,
            num_branches: 1,
        });
    assert!(
        init_layer(&s, &res, &mut Stream::new(0, "w", "r"))
            .unwrap_err()
            .to_string()
            .contains("residual")
    );
}

#[test]
fn conv_blocks_on_channel_axes() {
    let spec = LayerSpec::conv(8, 6, &[3, 3], 1)
        .with_activation(Activation::Relu)
        .with_chain(ChainPosition::Hidden);
    for sub in [Submatrix::Gaussian, Submatrix::Orthogonal] {
        let w = init_layer(&rs(sub), &spec, &mut Stream::new(0, "w", "relu-share"))
            .unwrap()
            .weight;
        for o in 0..4 {
            for i in 0..3 {
                for t in 0..9 {
                    let a = w[spec.index(0, o, i, t)];
                    assert_eq!(w[spec.index(0, o + 4, i + 3, t)], a);
                    assert_eq!(w[spec.index(0, o, i + 3, t)], -a);
                }
            }
        }
        if sub == Submatrix::Orthogonal {
            let k: Vec<f64> = (0..12).map(|e| w[spec.index(0, e / 3, e % 3, 4)]).collect();
            assert!(orthogonality_error(&k, 4, 3) < 1e-12);
        }
    }
}
