//! EOI oracles of schemes.md §5.5 through `init_layer`: density, exact orthogonality with
//! gain, masks, conv delta placement and the linear-network Jacobian.

mod common;
use common::*;
use reinit_schemes::*;

fn eoi(d: f64, sigma_w: f64, mask: MaskMode, more: bool) -> Scheme {
    Scheme::Eoi(EoiParams {
        density: Density::new(d).unwrap(),
        sigma_w: Gain::new(sigma_w).unwrap(),
        mask,
        more_nonzeros: more,
        ..Default::default()
    })
}

#[test]
fn linear_layers_hit_density_and_stay_exactly_orthogonal() {
    for (k, (n_out, n_in)) in [(128, 128), (64, 200), (200, 64), (33, 97)]
        .into_iter()
        .enumerate()
    {
        for seed in 0..3u64 {
            for d in [0.05, 0.125, 0.4] {
                let sw = 1.0247;
                let spec = LayerSpec::linear(n_out, n_in);
                let init = init_layer(
                    &eoi(d, sw, MaskMode::Support, false),
                    &spec,
                    &mut Stream::new(seed, &format!("w{k}"), "eoi"),
                )
                .unwrap();
                let unit: Vec<f64> = init.weight.iter().map(|x| x / sw).collect();
                let e = orthogonality_error(&unit, n_out, n_in);
                assert!(e <= 1e-10, "{n_out}x{n_in} d {d}: {e}");
                assert!(
                    (density(&init.weight) - d).abs() <= 0.01,
                    "{n_out}x{n_in} d {d}: {}",
                    density(&init.weight)
                );
                let mask = init.mask.unwrap();
                assert!(
                    mask.iter()
                        .zip(&init.weight)
                        .all(|(&m, &w)| m == (w != 0.0))
                );
                assert_eq!(init.bias, Some(vec![0.0; n_out]));
            }
        }
    }
}

#[test]
fn conv_uses_a_sparse_orthogonal_centre_and_trainable_mask_density() {
    let d = 0.1;
    for more in [false, true] {
        let spec = LayerSpec::conv(64, 64, &[3, 3], 1);
        let init = init_layer(
            &eoi(d, 1.0, MaskMode::Trainable, more),
            &spec,
            &mut Stream::new(1, "conv", "eoi"),
        )
        .unwrap();
        let tap = 4;
        let dc = if more {
            (d * 9.0f64).min(1.0).min(d.sqrt())
        } else {
            d
        };
        let centre: Vec<f64> = (0..64 * 64)
            .map(|e| init.weight[spec.index(0, e / 64, e % 64, tap)])
            .collect();
        for (idx, &v) in init.weight.iter().enumerate() {
            if idx % 9 != tap {
                assert_eq!(v, 0.0);
            }
        }
        assert!(orthogonality_error(&centre, 64, 64) <= 1e-10);
        assert!(
            (density(&centre) - dc).abs() <= 0.01,
            "centre density {}",
            density(&centre)
        );
        let mask = init.mask.unwrap();
        let md = mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64;
        assert!((md - d).abs() <= 0.01, "mask density {md}");
        // the mask covers the support
        assert!(mask.iter().zip(&init.weight).all(|(&m, &w)| m || w == 0.0));
    }
}

#[test]
fn biases_are_normal_with_sigma_b() {
    let scheme = Scheme::Eoi(EoiParams {
        sigma_b: 0.5,
        ..Default::default()
    });
    let init = init_layer(
        &scheme,
        &LayerSpec::linear(4000, 100),
        &mut Stream::new(0, "w", "eoi"),
    )
    .unwrap();
    let (m, v) = mean_var(&init.bias.unwrap());
    assert!(m.abs() < 0.05 && (v / 0.25 - 1.0).abs() < 0.1, "{m} {v}");
}

#[test]
fn unreachable_density_warns() {
    let init = init_layer(
        &eoi(0.005, 1.0, MaskMode::None, false),
        &LayerSpec::linear(50, 100),
        &mut Stream::new(0, "w", "eoi"),
    )
    .unwrap();
    assert!(init.notes.iter().any(|n| n.contains("identity returned")));
    assert!(init.mask.is_none());
}

#[test]
fn linear_eoi_network_has_unit_singular_values_at_any_density() {
    // §5.5 network-level: 7-layer width-100 MLP, 100×784 input, 10×100 head, linear
    // activations, σ_w = 1 ⇒ J Jᵀ = I_10 exactly at any density.
    let widths = [784, 100, 100, 100, 100, 100, 100, 10];
    for d in [0.1, 0.3] {
        let mut j: Option<faer::Mat<f64>> = None;
        for l in 0..7 {
            let (n_in, n_out) = (widths[l], widths[l + 1]);
            let spec = LayerSpec::linear(n_out, n_in);
            let w = init_layer(
                &eoi(d, 1.0, MaskMode::None, false),
                &spec,
                &mut Stream::new(4, &format!("l{l}"), "eoi"),
            )
            .unwrap()
            .weight;
            let wm = mat(&w, n_out, n_in);
            j = Some(match j {
                None => wm,
                Some(j) => wm * j,
            });
        }
        let j = j.unwrap();
        for sv in singular_values(&j) {
            assert!((sv - 1.0).abs() < 1e-10, "d {d}: {sv}");
        }
    }
}

#[test]
fn erk_densities_through_init_many_keep_the_global_budget() {
    let layers: Vec<(String, LayerSpec)> = vec![
        ("c1".into(), LayerSpec::conv(32, 3, &[3, 3], 1)),
        ("c2".into(), LayerSpec::conv(64, 32, &[3, 3], 1)),
        ("c3".into(), LayerSpec::conv(128, 64, &[3, 3], 1)),
        ("fc".into(), LayerSpec::linear(10, 128)),
    ];
    let d = 0.1;
    let p = EoiParams {
        density: Density::new(d).unwrap(),
        distribution: DensityDistribution::Erk,
        mask: MaskMode::Trainable,
        ..Default::default()
    };
    let specs: Vec<LayerSpec> = layers.iter().map(|(_, s)| s.clone()).collect();
    let dens = layer_densities(&specs, &p);
    let out = init_many(&layers, &Scheme::Eoi(p), 0);
    let (mut kept, mut total) = (0.0, 0.0);
    for ((init, spec), dl) in out.iter().zip(&specs).zip(&dens) {
        let init = init.as_ref().unwrap();
        let m = init.mask.as_ref().unwrap();
        let md = m.iter().filter(|&&x| x).count() as f64 / m.len() as f64;
        // the stem may be unreachable below 1/max dim; other layers follow their density
        if *dl >= 1.0 / spec.n_out.max(spec.n_in) as f64 {
            assert!((md - dl).abs() <= 0.01, "{:?}: {md} vs {dl}", spec.shape());
        }
        kept += md * m.len() as f64;
        total += m.len() as f64;
    }
    assert!((kept / total - d).abs() <= 0.01, "global {}", kept / total);
}

/// Issue 15 item 1: by default (`EoiParams::default()`, as the CLI and `verify` use it) a
/// conv's mask is the reference's trainable mask — density d over the whole kernel, to
/// within one element — while the weights stay the sparse orthogonal centre tap. Covers
/// 3×3, 5×5, 1-D, grouped and transposed kernels, several densities and seeds.
#[test]
fn default_conv_mask_is_the_trainable_mask_at_density_d() {
    let specs = [
        LayerSpec::conv(64, 64, &[3, 3], 1),
        LayerSpec::conv(32, 48, &[3, 3], 1),
        LayerSpec::conv(40, 24, &[5, 5], 1),
        LayerSpec::conv(48, 48, &[3], 1),
        LayerSpec::conv(64, 64, &[3, 3], 4),
        LayerSpec::conv_transpose(32, 32, &[3, 3], 1),
    ];
    for (k, spec) in specs.iter().enumerate() {
        for d in [0.1, 0.25, 0.5] {
            for seed in 0..2u64 {
                let scheme = Scheme::Eoi(EoiParams {
                    density: Density::new(d).unwrap(),
                    ..Default::default()
                });
                let name = format!("conv{k}");
                let init = init_layer(&scheme, spec, &mut Stream::new(seed, &name, "eoi")).unwrap();
                let mask = init.mask.as_ref().unwrap();
                let n = mask.len() as f64;
                let kept = mask.iter().filter(|&&m| m).count() as f64;
                assert!(
                    (kept / n - d).abs() <= 1.0 / n + 1e-12,
                    "{:?} d {d}: mask density {}",
                    spec.shape(),
                    kept / n
                );
                // the weight's support is trainable, and the weight is the exact
                // orthogonal tap with zeros elsewhere
                assert!(mask.iter().zip(&init.weight).all(|(&m, &w)| m || w == 0.0));
                let tap = spec.delta_tap_index().unwrap();
                for g in 0..spec.groups {
                    let mut h = Vec::with_capacity(spec.n_out * spec.n_in);
                    for o in 0..spec.n_out {
                        for i in 0..spec.n_in {
                            h.push(init.weight[spec.index(g, o, i, tap)]);
                            for t in (0..spec.taps()).filter(|&t| t != tap) {
                                assert_eq!(init.weight[spec.index(g, o, i, t)], 0.0);
                            }
                        }
                    }
                    let e = orthogonality_error(&h, spec.n_out, spec.n_in);
                    assert!(e <= 1e-10, "{:?} group {g}: {e}", spec.shape());
                }
                // the top-up is reproducible from the seed and leaves the weights as
                // the support mask mode draws them
                let again =
                    init_layer(&scheme, spec, &mut Stream::new(seed, &name, "eoi")).unwrap();
                assert_eq!(again.mask, init.mask);
                let support = Scheme::Eoi(EoiParams {
                    density: Density::new(d).unwrap(),
                    mask: MaskMode::Support,
                    ..Default::default()
                });
                let s = init_layer(&support, spec, &mut Stream::new(seed, &name, "eoi")).unwrap();
                assert_eq!(s.weight, init.weight);
                let s_mask = s.mask.unwrap();
                assert!(
                    s_mask
                        .iter()
                        .zip(&init.weight)
                        .all(|(&m, &w)| m == (w != 0.0))
                );
            }
        }
    }
    // another seed draws other added positions
    let scheme = Scheme::Eoi(EoiParams {
        density: Density::new(0.25).unwrap(),
        ..Default::default()
    });
    let a = init_layer(&scheme, &specs[0], &mut Stream::new(0, "c", "eoi")).unwrap();
    let b = init_layer(&scheme, &specs[0], &mut Stream::new(1, "c", "eoi")).unwrap();
    assert_ne!(a.mask, b.mask);
}
