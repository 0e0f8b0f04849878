//! IDInit oracles of schemes.md §4.3.

mod common;
use common::*;
use reinit_schemes::*;

fn idi(p: IdInitParams) -> Scheme {
    Scheme::IdInit(p)
}

fn branch(position: BranchPosition) -> ResidualRole {
    ResidualRole {
        position,
        branch_layers: 2,
        num_branches: 3,
    }
}

#[test]
fn deterministic_without_loose_noise() {
    let spec = LayerSpec::conv(32, 16, &[3, 3], 1);
    let a = init_layer(
        &"idinit".parse().unwrap(),
        &spec,
        &mut Stream::new(1, "w", "idinit"),
    )
    .unwrap();
    let b = init_layer(
        &"idinit".parse().unwrap(),
        &spec,
        &mut Stream::new(2, "w", "idinit"),
    )
    .unwrap();
    assert_eq!(a.weight, b.weight);
}

#[test]
fn padded_identity_pattern() {
    let tau = 0.8;
    let p = IdInitParams {
        tau,
        ..Default::default()
    };
    for (n_out, n_in) in [(5, 5), (12, 5), (7, 3), (3, 7), (1, 9)] {
        let w = init_layer(
            &idi(p),
            &LayerSpec::linear(n_out, n_in),
            &mut Stream::new(0, "w", "idinit"),
        )
        .unwrap()
        .weight;
        if n_out >= n_in {
            for i in 0..n_out {
                let row = &w[i * n_in..(i + 1) * n_in];
                assert_eq!(row.iter().filter(|&&x| x != 0.0).count(), 1);
                assert_eq!(row[i % n_in], tau);
            }
            // Mᵀ M diagonal with τ²·count_j
            let m = mat(&w, n_out, n_in);
            let g = m.transpose() * &m;
            for a in 0..n_in {
                for b in 0..n_in {
                    let count = (n_out - 1 - a) / n_in + 1;
                    let want = if a == b {
                        tau * tau * count as f64
                    } else {
                        0.0
                    };
                    assert!((g[(a, b)] - want).abs() < 1e-15);
                }
            }
        } else {
            for i in 0..n_out {
                for j in 0..n_in {
                    assert_eq!(w[i * n_in + j], if i == j { tau } else { 0.0 });
                }
            }
        }
    }
}

#[test]
fn residual_block_is_identity_at_init() {
    // y = x + W2·ReLU(W1 x), W1 = IDI_1, W2 = IDIZ_ε ⇒ ‖y − x‖ ≤ ε‖x‖; branch_last = zero ⇒ y = x.
    let n = 64;
    for branch_last in [BranchLast::Epsilon, BranchLast::Zero] {
        let p = IdInitParams {
            branch_last,
            ..Default::default()
        };
        let s1 = LayerSpec::linear(n, n)
            .with_activation(Activation::Relu)
            .with_residual(branch(BranchPosition::First));
        let s2 = LayerSpec::linear(n, n).with_residual(branch(BranchPosition::Last));
        let w1 = init_layer(&idi(p), &s1, &mut Stream::new(0, "w1", "idinit"))
            .unwrap()
            .weight;
        let w2 = init_layer(&idi(p), &s2, &mut Stream::new(0, "w2", "idinit"))
            .unwrap()
            .weight;
        for seed in 0..5 {
            let x = input(n, seed);
            let h: Vec<f64> = matvec(&w1, n, n, &x).iter().map(|v| v.max(0.0)).collect();
            let y: Vec<f64> = matvec(&w2, n, n, &h)
                .iter()
                .zip(&x)
                .map(|(a, b)| a + b)
                .collect();
            let diff: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - b).collect();
            match branch_last {
                BranchLast::Epsilon => assert!(norm2(&diff) <= p.epsilon * norm2(&x)),
                BranchLast::Zero => assert_eq!(y, x),
            }
        }
    }
}

#[test]
fn expand_then_contract_is_identity() {
    let n = 9;
    let up = init_layer(
        &"idinit".parse().unwrap(),
        &LayerSpec::linear(2 * n, n),
        &mut Stream::new(0, "a", "idinit"),
    )
    .unwrap()
    .weight;
    let down = init_layer(
        &"idinit".parse().unwrap(),
        &LayerSpec::linear(n, 2 * n),
        &mut Stream::new(0, "b", "idinit"),
    )
    .unwrap()
    .weight;
    let p = mat(&down, n, 2 * n) * mat(&up, 2 * n, n);
    for i in 0..n {
        for j in 0..n {
            assert_eq!(p[(i, j)], if i == j { 1.0 } else { 0.0 });
        }
    }
}

#[test]
fn channel_maintain_conv_is_tau_identity() {
    let tau = 1.5;
    let p = IdInitParams {
        tau,
        conv: IdConvRule::ChannelMaintain,
        ..Default::default()
    };
    let (c, h, w) = (6, 5, 7);
    for k in [3, 5] {
        let spec = LayerSpec::conv(c, c, &[k, k], 1);
        let wt = init_layer(&idi(p), &spec, &mut Stream::new(0, "w", "idinit"))
            .unwrap()
            .weight;
        let x = input(c * h * w, 3);
        let (y, _, _) = conv2d(&x, c, h, w, &wt, c, (k, k), 1, ((k - 1) / 2, (k - 1) / 2));
        for (a, b) in y.iter().zip(&x) {
            assert_eq!(*a, tau * b);
        }
    }
}

#[test]
fn patch_maintain_puts_one_tap_per_output_channel() {
    // C_out ≤ C_in·k²: output channel o has one τ at input channel ⌊o/k²⌋, tap o mod k².
    let spec = LayerSpec::conv(20, 4, &[3, 3], 1);
    let w = init_layer(
        &"idinit".parse().unwrap(),
        &spec,
        &mut Stream::new(0, "w", "idinit"),
    )
    .unwrap()
    .weight;
    for o in 0..20 {
        let row = &w[o * 36..(o + 1) * 36];
        assert_eq!(row.iter().filter(|&&x| x != 0.0).count(), 1);
        assert_eq!(w[spec.index(0, o, o / 9, o % 9)], 1.0);
    }
}

#[test]
fn loose_variant_adds_noise() {
    let p = IdInitParams {
        loose_std: 1e-3,
        ..Default::default()
    };
    let w = init_layer(
        &idi(p),
        &LayerSpec::linear(100, 100),
        &mut Stream::new(0, "w", "idinit"),
    )
    .unwrap()
    .weight;
    let off: Vec<f64> = (0..100 * 100)
        .filter(|e| e / 100 != e % 100)
        .map(|e| w[e])
        .collect();
    let (m, v) = mean_var(&off);
    assert!(m.abs() < 1e-4 && (v.sqrt() / 1e-3 - 1.0).abs() < 0.05);
}
