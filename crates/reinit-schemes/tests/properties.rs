//! Property tests over random shapes and seeds (32 cases each, shapes drawn from a fixed
//! stream so failures reproduce): the structural oracles hold for every shape.

mod common;
use common::*;
use reinit_schemes::*;

struct Case {
    spec: LayerSpec,
    seed: u64,
}

/// Random layer: linear or conv (1-D/2-D, groups 1–3, k 1–4), per-group sides 1–96.
fn cases(n: usize, tag: &str) -> Vec<Case> {
    let mut s = Stream::new(2026, tag, "property-shapes");
    (0..n)
        .map(|k| {
            let groups = 1 + s.below(3) as usize;
            let n_out = 1 + s.below(96) as usize;
            let n_in = 1 + s.below(96) as usize;
            let spec = match s.below(3) {
                0 => LayerSpec::linear(n_out, n_in),
                1 => LayerSpec::conv(
                    groups * n_out,
                    groups * n_in,
                    &[1 + s.below(4) as usize],
                    groups,
                ),
                _ => {
                    let kk = [1 + s.below(4) as usize, 1 + s.below(4) as usize];
                    LayerSpec::conv(groups * n_out, groups * n_in, &kk, groups)
                }
            };
            Case {
                spec,
                seed: k as u64,
            }
        })
        .collect()
}

fn group_block(w: &[f64], spec: &LayerSpec, g: usize) -> Vec<f64> {
    let block = spec.n_out * spec.n_in * spec.taps();
    w[g * block..(g + 1) * block].to_vec()
}

fn tap_matrix(w: &[f64], spec: &LayerSpec, g: usize, tap: usize) -> Vec<f64> {
    (0..spec.n_out * spec.n_in)
        .map(|e| w[spec.index(g, e / spec.n_in, e % spec.n_in, tap)])
        .collect()
}

#[test]
fn orthogonal_property() {
    for c in cases(32, "orth") {
        let init = init_layer(
            &"orthogonal".parse().unwrap(),
            &c.spec,
            &mut Stream::new(c.seed, "w", "orthogonal"),
        )
        .unwrap();
        for g in 0..c.spec.groups {
            let e = orthogonality_error(
                &group_block(&init.weight, &c.spec, g),
                c.spec.n_out,
                c.spec.n_in * c.spec.taps(),
            );
            assert!(e < 1e-12, "{:?} g{g}: {e}", c.spec.shape());
        }
    }
}

#[test]
fn delta_orthogonal_property() {
    for c in cases(32, "delta") {
        let init = init_layer(
            &"delta-orthogonal".parse().unwrap(),
            &c.spec,
            &mut Stream::new(c.seed, "w", "delta-orthogonal"),
        )
        .unwrap();
        let tap = c.spec.delta_tap_index().unwrap();
        let taps = c.spec.taps();
        for (idx, &v) in init.weight.iter().enumerate() {
            if taps > 1 && idx % taps != tap {
                assert_eq!(v, 0.0);
            }
        }
        if taps > 1 {
            for g in 0..c.spec.groups {
                let h = tap_matrix(&init.weight, &c.spec, g, tap);
                assert!(orthogonality_error(&h, c.spec.n_out, c.spec.n_in) < 1e-12);
            }
        }
    }
}

#[test]
fn eoi_property() {
    let mut ds = Stream::new(1, "densities", "property");
    for c in cases(32, "eoi") {
        let d = 0.02 + 0.9 * ds.uniform();
        let scheme = Scheme::Eoi(EoiParams {
            density: Density::new(d).unwrap(),
            ..Default::default()
        });
        let init = init_layer(&scheme, &c.spec, &mut Stream::new(c.seed, "w", "eoi")).unwrap();
        let tap = c.spec.delta_tap_index().unwrap();
        for g in 0..c.spec.groups {
            let h = tap_matrix(&init.weight, &c.spec, g, tap);
            assert!(orthogonality_error(&h, c.spec.n_out, c.spec.n_in) <= 1e-10);
            if d >= 1.0 / c.spec.n_out.max(c.spec.n_in) as f64 {
                assert!(
                    // half the last rotation's jump at most (see eoi.rs's test)
                    (density(&h) - d).abs() <= 0.015 + 1.0 / h.len() as f64,
                    "{:?} d {d}: {}",
                    c.spec.shape(),
                    density(&h)
                );
            }
        }
        // the default (trainable) mask covers the support and, for k×k kernels, holds
        // ⌈d·numel⌉ entries; for 1×1 kernels it is the support
        let mask = init.mask.unwrap();
        assert!(mask.iter().zip(&init.weight).all(|(&m, &w)| m || w == 0.0));
        let kept = mask.iter().filter(|&&m| m).count();
        let support = init.weight.iter().filter(|&&w| w != 0.0).count();
        if c.spec.taps() > 1 {
            let n = mask.len() as f64;
            assert!(
                kept == support.max((d * n - 1e-9).ceil() as usize),
                "{:?} d {d}: {kept} of {n}",
                c.spec.shape()
            );
        } else {
            assert_eq!(kept, support);
        }
    }
}

#[test]
fn idinit_property() {
    for c in cases(32, "idinit") {
        let init = init_layer(
            &"idinit".parse().unwrap(),
            &c.spec,
            &mut Stream::new(c.seed, "w", "idinit"),
        )
        .unwrap();
        let cols = c.spec.n_in * c.spec.taps();
        for g in 0..c.spec.groups {
            let m = group_block(&init.weight, &c.spec, g);
            for o in 0..c.spec.n_out {
                let row = &m[o * cols..(o + 1) * cols];
                // every row has exactly one τ = 1, at o mod cols (contracting: [I, 0];
                // expanding: stacked identities)
                assert_eq!(row.iter().filter(|&&x| x != 0.0).count(), 1);
                assert_eq!(row[o % cols], 1.0);
            }
        }
    }
}

#[test]
fn relu_share_property() {
    for c in cases(32, "relu-share") {
        let spec = c
            .spec
            .clone()
            .with_activation(Activation::Relu)
            .with_chain(ChainPosition::Hidden);
        let r = init_layer(
            &"relu-share".parse().unwrap(),
            &spec,
            &mut Stream::new(c.seed, "w", "relu-share"),
        );
        if spec.n_out < 2 || spec.n_in < 2 {
            assert!(r.is_err());
            continue;
        }
        let w = r.unwrap().weight;
        let (ho, hi, t) = (spec.n_out / 2, spec.n_in / 2, spec.taps());
        for g in 0..spec.groups {
            for o in 0..ho {
                for i in 0..hi {
                    for k in 0..t {
                        let a = w[spec.index(g, o, i, k)];
                        assert_eq!(w[spec.index(g, o + ho, i + hi, k)], a);
                        assert_eq!(w[spec.index(g, o, i + hi, k)], -a);
                        assert_eq!(w[spec.index(g, o + ho, i, k)], -a);
                    }
                }
            }
        }
    }
}

#[test]
fn masked_dense_orthogonal_is_not_an_isometry() {
    // §5.5 contrast: a randomly masked dense orthogonal net at the same density has shrinking,
    // spread singular values, unlike EOI (tests/eoi.rs).
    let (n, depth, d) = (100, 7, 0.1);
    let mut mask_stream = Stream::new(0, "mask", "test");
    let mut j = faer::Mat::<f64>::identity(n, n);
    for l in 0..depth {
        let w = init_layer(
            &"orthogonal".parse().unwrap(),
            &LayerSpec::linear(n, n),
            &mut Stream::new(1, &format!("l{l}"), "o"),
        )
        .unwrap()
        .weight;
        let masked: Vec<f64> = w
            .iter()
            .map(|&x| if mask_stream.uniform() < d { x } else { 0.0 })
            .collect();
        j = mat(&masked, n, n) * &j;
    }
    let sv = singular_values(&j);
    let (max, min) = (sv[0], sv[sv.len() - 1]);
    assert!(max < 0.1, "max {max}");
    assert!(max / min > 2.0, "spread {}", max / min);
}
