//! Oracles of schemes.md §0.3, §1.6 and §2.5: orthogonal (flattened, per group, wide and
//! tall, gain), deep linear Jacobian, delta-orthogonal structure and isometry.

mod common;
use common::*;
use reinit_schemes::*;

fn orth(gain: f64) -> Scheme {
    Scheme::Orthogonal(OrthogonalParams {
        gain: GainChoice::Fixed(Gain::new(gain).unwrap()),
        ..Default::default()
    })
}

#[test]
fn orthogonal_rows_or_columns_for_linear_and_conv_per_group() {
    let specs = [
        LayerSpec::linear(32, 32),
        LayerSpec::linear(20, 70),
        LayerSpec::linear(70, 20),
        LayerSpec::conv(16, 8, &[3, 3], 1), // 16 × 72: rows orthonormal
        LayerSpec::conv(64, 4, &[3, 3], 1), // 64 × 36: columns
        LayerSpec::conv(24, 12, &[3], 3),   // per group 8 × 12
        LayerSpec::conv(12, 24, &[1, 1], 4), // per group 3 × 6
        LayerSpec::conv_transpose(6, 12, &[2, 2], 2),
    ];
    for (k, spec) in specs.iter().enumerate() {
        for seed in 0..5u64 {
            for gain in [1.0, 0.7, 1.6] {
                let mut s = Stream::new(seed, &format!("w{k}"), "orthogonal");
                let init = init_layer(&orth(gain), spec, &mut s).unwrap();
                let rows = spec.n_out;
                let cols = spec.n_in * spec.taps();
                for g in 0..spec.groups {
                    let block: Vec<f64> = init.weight[g * rows * cols..(g + 1) * rows * cols]
                        .iter()
                        .map(|x| x / gain)
                        .collect();
                    let e = orthogonality_error(&block, rows, cols);
                    assert!(e < 1e-12, "{:?} group {g} gain {gain}: {e}", spec.shape());
                    // §0.3 oracle on the f32 cast
                    let e32 = orthogonality_error_after_cast(
                        &init.weight[g * rows * cols..(g + 1) * rows * cols],
                        rows,
                        cols,
                        gain,
                        CastFormat::F32,
                    );
                    assert!(e32 <= 1e-5, "f32 {e32}");
                }
                assert_eq!(init.bias, Some(vec![0.0; spec.bias_len()]));
            }
        }
    }
}

#[test]
fn gain_follows_activation_by_default() {
    let spec = LayerSpec::linear(10, 10).with_activation(Activation::Tanh);
    let init = init_layer(
        &"orthogonal".parse().unwrap(),
        &spec,
        &mut Stream::new(0, "w", "orthogonal"),
    )
    .unwrap();
    // rows have norm 5/3
    let n = norm2(&init.weight[0..10]);
    assert!((n - 5.0 / 3.0).abs() < 1e-12);
    let spec = spec.with_activation(Activation::Gelu);
    let init = init_layer(
        &"orthogonal".parse().unwrap(),
        &spec,
        &mut Stream::new(0, "w", "orthogonal"),
    )
    .unwrap();
    assert!(init.notes.iter().any(|n| n.contains("gelu")));
}

#[test]
fn deep_linear_network_has_singular_values_gain_pow_l() {
    // §1.6 (b): every singular value of the Jacobian equals gain^L (1e-5 relative).
    let (n, depth) = (48, 30);
    for gain in [1.0, 1.02] {
        let mut j = faer::Mat::<f64>::identity(n, n);
        for l in 0..depth {
            let mut s = Stream::new(3, &format!("l{l}"), "orthogonal");
            let w = init_layer(&orth(gain), &LayerSpec::linear(n, n), &mut s)
                .unwrap()
                .weight;
            j = mat(&w, n, n) * &j;
        }
        let target = gain.powi(depth);
        for sv in singular_values(&j) {
            assert!(
                (sv / target - 1.0).abs() < 1e-5,
                "gain {gain}: {sv} vs {target}"
            );
        }
    }
}

#[test]
fn delta_orthogonal_structure_and_isometry_for_any_padding() {
    // §2.5: non-tap entries exactly 0; Hᵀ H = I (C_in ≤ C_out); stride 1 with the delta tap
    // of §0.4: ‖conv(x)‖² = σ_w² ‖x‖² whatever the padding.
    let sigma_w = 1.3;
    let scheme = Scheme::DeltaOrthogonal(DeltaOrthogonalParams {
        gain: GainChoice::Fixed(Gain::new(sigma_w).unwrap()),
        sigma_b: 0.0,
    });
    let (h, w) = (7, 6);
    for (c_in, c_out, k, groups) in [(4, 4, 3, 1), (3, 8, 3, 1), (4, 8, 5, 2), (6, 6, 4, 1)] {
        for (pb, pe) in [
            ((k - 1) / 2, k / 2),
            (k / 2, (k - 1) / 2),
            (k - 1, 0),
            (0, k - 1),
        ] {
            let mut spec = LayerSpec::conv(c_out, c_in, &[k, k], groups);
            spec.delta_tap = Some(vec![pb, pb]);
            let mut s = Stream::new(pb as u64, "conv", "delta-orthogonal");
            let init = init_layer(&scheme, &spec, &mut s).unwrap();
            let tap = pb * k + pb;
            let (n_out, n_in) = (spec.n_out, spec.n_in);
            for (idx, &v) in init.weight.iter().enumerate() {
                if idx % (k * k) != tap {
                    assert_eq!(v, 0.0);
                }
            }
            for g in 0..groups {
                let hm: Vec<f64> = (0..n_out * n_in)
                    .map(|e| init.weight[spec.index(g, e / n_in, e % n_in, tap)] / sigma_w)
                    .collect();
                assert!(orthogonality_error(&hm, n_out, n_in) < 1e-12);
            }
            let x = input(c_in * h * w, 7);
            let (y, ho, wo) = conv2d(
                &x,
                c_in,
                h,
                w,
                &init.weight,
                c_out,
                (k, k),
                groups,
                (pb, pe),
            );
            assert_eq!((ho, wo), (h, w));
            let ratio = norm2(&y).powi(2) / norm2(&x).powi(2);
            assert!(
                (ratio / (sigma_w * sigma_w) - 1.0).abs() < 1e-5,
                "k {k} pad {pb},{pe}: {ratio}"
            );
        }
    }
}

#[test]
fn delta_orthogonal_warns_when_contracting_and_falls_back_without_tap() {
    let mut spec = LayerSpec::conv(4, 8, &[3, 3], 1);
    spec.delta_tap = None;
    let init = init_layer(
        &"delta-orthogonal".parse().unwrap(),
        &spec,
        &mut Stream::new(0, "w", "d"),
    )
    .unwrap();
    assert!(init.notes.iter().any(|n| n.contains("row-orthogonal")));
    assert!(init.notes.iter().any(|n| n.contains("centre tap")));
}

/// Issue 15 item 6: before tanh-like units delta-orthogonal's default gain is the
/// critical point (as `critical`), so a tanh CNN is on the critical line (χ = 1), not in
/// the chaotic phase the tanh gain 5/3 gives (χ ≈ 1.21 per layer). The gain is read back
/// from the weights (Hᵀ H = σ_w² I at the tap), σ_b² from the drawn biases.
#[test]
fn delta_orthogonal_before_tanh_sits_on_the_critical_line() {
    let n = 256;
    let scheme: Scheme = "delta-orthogonal".parse().unwrap();
    for act in [Activation::Tanh, Activation::HardTanh] {
        let spec = LayerSpec::conv(n, n, &[3, 3], 1)
            .with_activation(act.clone())
            .with_bias(true);
        let init =
            init_layer(&scheme, &spec, &mut Stream::new(4, "w", "delta-orthogonal")).unwrap();
        let tap = spec.delta_tap_index().unwrap();
        let h: Vec<f64> = (0..n * n)
            .map(|e| init.weight[spec.index(0, e / n, e % n, tap)])
            .collect();
        let sigma_w2 = (0..n)
            .map(|c| (0..n).map(|r| h[r * n + c].powi(2)).sum::<f64>())
            .sum::<f64>()
            / n as f64;
        let expected = match act {
            Activation::Tanh => 1.05,
            _ => critical_point(&act, 1.0 / 64.0).unwrap().sigma_w2,
        };
        assert!((sigma_w2 - expected).abs() < 1e-9, "{act}: {sigma_w2}");
        let unit: Vec<f64> = h.iter().map(|x| x / sigma_w2.sqrt()).collect();
        assert!(orthogonality_error(&unit, n, n) < 1e-10);
        let bias = init.bias.unwrap();
        let sigma_b2 = bias.iter().map(|b| b * b).sum::<f64>() / n as f64;
        if act == Activation::Tanh {
            // σ_b² = 2.01e-5 drawn over 256 channels (relative sd ≈ 9 %)
            assert!((sigma_b2 / 2.01e-5 - 1.0).abs() < 0.4, "{sigma_b2}");
            let chi = fixed_point_of(&act, sigma_w2, sigma_b2).unwrap().chi;
            assert!((chi - 1.0).abs() <= 1e-3, "{act}: chi {chi}");
        }
        assert!(
            init.notes.iter().any(|m| m.contains("critical point")),
            "{:?}",
            init.notes
        );
    }
    // the tanh gain's χ, for contrast, and a fixed gain still wins
    let chaotic = fixed_point_of(&Activation::Tanh, (5.0f64 / 3.0).powi(2), 0.0)
        .unwrap()
        .chi;
    assert!(chaotic > 1.2, "{chaotic}");
    let fixed = Scheme::DeltaOrthogonal(DeltaOrthogonalParams {
        gain: GainChoice::Fixed(Gain::new(5.0 / 3.0).unwrap()),
        ..Default::default()
    });
    let spec = LayerSpec::linear(8, 8).with_activation(Activation::Tanh);
    let init = init_layer(&fixed, &spec, &mut Stream::new(0, "w", "delta-orthogonal")).unwrap();
    assert!((norm2(&init.weight[0..8]) - 5.0 / 3.0).abs() < 1e-12);
}
