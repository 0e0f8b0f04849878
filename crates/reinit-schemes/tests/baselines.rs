//! He / Xavier / LeCun / torch-default moments, Fixup and LSUV oracles (schemes.md §1).

mod common;
use common::*;
use reinit_schemes::*;

/// Relative tolerance on a sample std of n i.i.d. values: 3·√(1/(2n)) (§1.7's rule) plus
/// the uniform law's larger kurtosis margin.
fn tol(n: usize) -> f64 {
    4.0 * (1.0 / (2.0 * n as f64)).sqrt()
}

fn vp(distribution: Distribution, fan_mode: FanMode, gain: GainChoice) -> VarianceParams {
    VarianceParams {
        distribution,
        fan_mode,
        gain,
        bias: BiasInit::Zero,
    }
}

#[test]
fn variance_scaling_moments() {
    let specs = [
        LayerSpec::linear(300, 500).with_activation(Activation::Relu),
        LayerSpec::conv(64, 32, &[3, 3], 1).with_activation(Activation::Tanh),
        LayerSpec::conv(64, 32, &[3, 3], 4).with_activation(Activation::LeakyRelu { alpha: 0.2 }),
        LayerSpec::conv_transpose(32, 48, &[4, 4], 1),
    ];
    for spec in &specs {
        let gain = spec.activation.gain();
        for dist in [
            Distribution::Normal,
            Distribution::Uniform,
            Distribution::TruncatedNormal,
        ] {
            for fan_mode in [FanMode::FanIn, FanMode::FanOut] {
                let fan = if fan_mode == FanMode::FanIn {
                    spec.fan_in
                } else {
                    spec.fan_out
                } as f64;
                let cases = [
                    (
                        Scheme::He(vp(dist, fan_mode, GainChoice::FromActivation)),
                        gain / fan.sqrt(),
                    ),
                    (
                        Scheme::Xavier(vp(
                            dist,
                            fan_mode,
                            GainChoice::Fixed(Gain::new(1.0).unwrap()),
                        )),
                        (2.0 / (spec.fan_in + spec.fan_out) as f64).sqrt(),
                    ),
                    (
                        Scheme::Lecun(vp(
                            dist,
                            fan_mode,
                            GainChoice::Fixed(Gain::new(1.0).unwrap()),
                        )),
                        (1.0 / fan).sqrt(),
                    ),
                ];
                for (scheme, want) in cases {
                    let init =
                        init_layer(&scheme, spec, &mut Stream::new(5, "w", scheme.name())).unwrap();
                    let (m, v) = mean_var(&init.weight);
                    let n = init.weight.len();
                    assert!(
                        m.abs() < 4.0 * want / (n as f64).sqrt(),
                        "{scheme} {dist:?} mean {m}"
                    );
                    assert!(
                        (v.sqrt() / want - 1.0).abs() < tol(n),
                        "{scheme} {dist:?} {fan_mode:?} {:?}: std {} vs {want}",
                        spec.shape(),
                        v.sqrt()
                    );
                    let maxabs = init.weight.iter().fold(0.0f64, |a, x| a.max(x.abs()));
                    match dist {
                        Distribution::Uniform => assert!(maxabs <= want * 3f64.sqrt()),
                        Distribution::TruncatedNormal => {
                            assert!(maxabs < 2.0 * want / 0.8796256610342398)
                        }
                        Distribution::Normal => {}
                    }
                    assert_eq!(init.bias, Some(vec![0.0; spec.bias_len()]));
                }
            }
        }
    }
}

#[test]
fn torch_default_bounds() {
    let spec = LayerSpec::conv(64, 16, &[3, 3], 1);
    let init = init_layer(
        &Scheme::TorchDefault,
        &spec,
        &mut Stream::new(0, "w", "torch-default"),
    )
    .unwrap();
    let bound = 1.0 / (spec.fan_in as f64).sqrt();
    let (_, v) = mean_var(&init.weight);
    assert!(init.weight.iter().all(|x| x.abs() <= bound));
    assert!((v.sqrt() / (bound / 3f64.sqrt()) - 1.0).abs() < tol(init.weight.len()));
    let b = init.bias.unwrap();
    assert_eq!(b.len(), 64);
    assert!(b.iter().all(|x| x.abs() <= bound) && b.iter().any(|&x| x != 0.0));
    let keep = Scheme::He(VarianceParams {
        bias: BiasInit::Keep,
        ..Default::default()
    });
    assert!(
        init_layer(&keep, &spec, &mut Stream::new(0, "w", "he"))
            .unwrap()
            .bias
            .is_none()
    );
}

fn role(position: BranchPosition, m: usize, l: usize) -> ResidualRole {
    ResidualRole {
        position,
        branch_layers: m,
        num_branches: l,
    }
}

#[test]
fn fixup_oracles() {
    let fixup: Scheme = "fixup".parse().unwrap();
    let (l, c) = (9, 16);
    // residual net: stem, L blocks of (conv, conv), classifier
    let stem = LayerSpec::conv(c, 3, &[3, 3], 1).with_activation(Activation::Relu);
    let first = LayerSpec::conv(c, c, &[3, 3], 1)
        .with_activation(Activation::Relu)
        .with_residual(role(BranchPosition::First, 2, l));
    let last = LayerSpec::conv(c, c, &[3, 3], 1).with_residual(role(BranchPosition::Last, 2, l));
    let fc = LayerSpec::linear(10, c).as_network_output();
    let s = |n: &str| Stream::new(0, n, "fixup");
    let w_last = init_layer(&fixup, &last, &mut s("last")).unwrap();
    assert!(w_last.weight.iter().all(|&x| x == 0.0));
    let w_fc = init_layer(&fixup, &fc, &mut s("fc")).unwrap();
    assert!(w_fc.weight.iter().all(|&x| x == 0.0));
    assert!(w_fc.bias.as_ref().unwrap().iter().all(|&x| x == 0.0));
    // logits are 0 for any input ⇒ cross-entropy = ln(10) exactly
    let feats = input(c, 3);
    let logits: Vec<f64> = matvec(&w_fc.weight, 10, c, &feats)
        .iter()
        .zip(w_fc.bias.as_ref().unwrap())
        .map(|(a, b)| a + b)
        .collect();
    let lse = logits.iter().map(|z| z.exp()).sum::<f64>().ln();
    assert_eq!(lse - logits[3], 10f64.ln());
    // scaled layers: std ≈ √(2/fan_out)·L^(−1/(2m−2))
    for m in [2usize, 3] {
        let spec =
            LayerSpec::conv(64, 64, &[3, 3], 1).with_residual(role(BranchPosition::First, m, l));
        let w = init_layer(&fixup, &spec, &mut s("first")).unwrap().weight;
        let want =
            (2.0 / spec.fan_out as f64).sqrt() * (l as f64).powf(-1.0 / (2.0 * m as f64 - 2.0));
        let (_, v) = mean_var(&w);
        assert!(
            (v.sqrt() / want - 1.0).abs() < 3.0 * (1.0 / (2.0 * w.len() as f64)).sqrt(),
            "m {m}"
        );
    }
    // unscaled stem, He fan_out
    let w = init_layer(&fixup, &stem, &mut s("stem")).unwrap().weight;
    let (_, v) = mean_var(&w);
    assert!((v.sqrt() / (2.0 / stem.fan_out as f64).sqrt() - 1.0).abs() < tol(w.len()));
    // block output = act(input): the branch contributes exactly 0
    let w1 = init_layer(&fixup, &first, &mut s("b")).unwrap().weight;
    assert!(w1.iter().any(|&x| x != 0.0));
    let (h, w) = (5, 6);
    let x = input(c * h * w, 4);
    let (t, _, _) = conv2d(&x, c, h, w, &w1, c, (3, 3), 1, (1, 1));
    let t: Vec<f64> = t.iter().map(|v| v.max(0.0)).collect();
    let (branch_out, _, _) = conv2d(&t, c, h, w, &w_last.weight, c, (3, 3), 1, (1, 1));
    let y: Vec<f64> = x
        .iter()
        .zip(&branch_out)
        .map(|(a, b)| (a + b).max(0.0))
        .collect();
    let relu_x: Vec<f64> = x.iter().map(|v| v.max(0.0)).collect();
    assert_eq!(y, relu_x);
    // a branch with m = 1 and a non-last position is inconsistent
    let bad = LayerSpec::linear(4, 4).with_residual(role(BranchPosition::First, 1, 3));
    assert!(init_layer(&fixup, &bad, &mut s("x")).is_err());
}

#[test]
fn lsuv_preinit_is_orthonormal_and_rescaling_keeps_it_proportional() {
    let p = LsuvParams::default();
    let spec = LayerSpec::linear(30, 50);
    let init = init_layer(&Scheme::Lsuv(p), &spec, &mut Stream::new(0, "w", "lsuv")).unwrap();
    assert!(orthogonality_error(&init.weight, 30, 50) < 1e-12);
    let mut w = init.weight.clone();
    // a layer whose output variance is 4: one division by 2 (exact with zero bias)
    assert!(!lsuv_rescale(&mut w, 4.0, &p).unwrap());
    let scaled: Vec<f64> = w.iter().map(|x| x * 2.0).collect();
    assert!(orthogonality_error(&scaled, 30, 50) < 1e-12);
    assert!(lsuv_rescale(&mut w, 1.05, &p).unwrap());
    assert!(lsuv_rescale(&mut w, 0.0, &p).is_err());
}

#[test]
fn norm_options() {
    let he: Scheme = "he".parse().unwrap();
    let last = NormSpec {
        channels: 4,
        after_branch_last: true,
    };
    let plain = NormSpec {
        channels: 4,
        after_branch_last: false,
    };
    let zero = NormOptions {
        zero_init_last_gamma: true,
        reset: false,
    };
    assert_eq!(init_norm(&he, &last, &zero).unwrap().gamma, vec![0.0; 4]);
    assert!(init_norm(&he, &plain, &zero).is_none());
    let reset = NormOptions {
        zero_init_last_gamma: false,
        reset: true,
    };
    assert_eq!(init_norm(&he, &plain, &reset).unwrap().gamma, vec![1.0; 4]);
    assert!(init_norm(&"idinit".parse().unwrap(), &plain, &reset).is_none());
}
