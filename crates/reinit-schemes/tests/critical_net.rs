//! Network-level oracles of schemes.md §2.7: depth propagation of the length map and the
//! Jacobian spectrum of a deep tanh MLP, orthogonal vs Gaussian.

mod common;
use common::*;
use faer::Mat;
use reinit_schemes::*;

fn critical_at(q: f64) -> Scheme {
    Scheme::Critical(CriticalParams {
        target: CriticalTarget::QStar(q),
        ..Default::default()
    })
}

#[test]
fn depth_propagation_stays_near_q_star() {
    // tanh, width 512, L = 200, (σ_w², σ_b²) = (1.05, 2.01e-5) (the default for tanh), input
    // with per-unit mean square q*: every depth's mean squared pre-activation within 15%.
    let (n, depth) = (512, 200);
    let q_star = fixed_point_of(&Activation::Tanh, 1.05, 2.01e-5)
        .unwrap()
        .q_star;
    let scheme: Scheme = "critical".parse().unwrap();
    let spec = LayerSpec::linear(n, n).with_activation(Activation::Tanh);
    let mut h: Vec<f64> = input(n, 1).iter().map(|z| z * q_star.sqrt()).collect();
    for l in 0..depth {
        let init = init_layer(
            &scheme,
            &spec,
            &mut Stream::new(0, &format!("l{l}"), "critical"),
        )
        .unwrap();
        let x: Vec<f64> = h.iter().map(|v| v.tanh()).collect();
        let b = init.bias.unwrap();
        h = matvec(&init.weight, n, n, &x)
            .iter()
            .zip(&b)
            .map(|(a, c)| a + c)
            .collect();
        let q = h.iter().map(|v| v * v).sum::<f64>() / n as f64;
        assert!(
            (q / q_star - 1.0).abs() < 0.15,
            "depth {l}: q {q} vs {q_star}"
        );
    }
}

/// Mean and variance of the eigenvalues of J Jᵀ for a tanh MLP built with `weights(l)`.
fn jacobian_moments(
    n: usize,
    depth: usize,
    q_star: f64,
    sb2: f64,
    weights: impl Fn(usize) -> Vec<f64>,
) -> (f64, f64) {
    let mut h: Vec<f64> = input(n, 5).iter().map(|z| z * q_star.sqrt()).collect();
    let mut j = Mat::<f64>::identity(n, n);
    let mut bias_stream = Stream::new(1, "bias", "test");
    for l in 0..depth {
        let w = weights(l);
        let x: Vec<f64> = h.iter().map(|v| v.tanh()).collect();
        h = matvec(&w, n, n, &x)
            .iter()
            .map(|a| a + sb2.sqrt() * bias_stream.normal())
            .collect();
        // J ← D^l W^l J with D = diag φ'(h^l) evaluated at this layer's pre-activation
        let d: Vec<f64> = h.iter().map(|v| 1.0 - v.tanh().powi(2)).collect();
        let wm = Mat::<f64>::from_fn(n, n, |r, c| d[r] * w[r * n + c]);
        j = wm * &j;
    }
    let jjt = &j * j.transpose();
    let m1 = (0..n).map(|i| jjt[(i, i)]).sum::<f64>() / n as f64;
    let mut m2 = 0.0;
    for c in 0..n {
        for r in 0..n {
            m2 += jjt[(r, c)] * jjt[(r, c)];
        }
    }
    let m2 = m2 / n as f64;
    (m1, m2 - m1 * m1)
}

#[test]
fn tanh_jacobian_spectrum_orthogonal_vs_gaussian() {
    // tanh, q* = 1/4, width 1000, L = 16: orthogonal → mean 1 ± 0.1, variance 2.19 ± 25%;
    // Gaussian with the same σ's → variance ≥ 4× larger.
    let (n, depth, q) = (1000, 16, 0.25);
    let cp = critical_point(&Activation::Tanh, q).unwrap();
    let predicted = depth as f64 * cp.orthogonal_variance_per_layer();
    assert!((predicted - 2.19).abs() < 0.01);
    let spec = LayerSpec::linear(n, n)
        .with_activation(Activation::Tanh)
        .with_bias(false);
    let scheme = critical_at(q);
    let (m_orth, v_orth) = jacobian_moments(n, depth, q, cp.sigma_b2, |l| {
        init_layer(
            &scheme,
            &spec,
            &mut Stream::new(2, &format!("l{l}"), "critical"),
        )
        .unwrap()
        .weight
    });
    assert!((m_orth - 1.0).abs() < 0.1, "mean {m_orth}");
    assert!(
        (v_orth / predicted - 1.0).abs() < 0.25,
        "orthogonal variance {v_orth} vs {predicted}"
    );
    let std = (cp.sigma_w2 / n as f64).sqrt();
    let (m_g, v_g) = jacobian_moments(n, depth, q, cp.sigma_b2, |l| {
        let mut w = vec![0.0; n * n];
        Stream::new(2, &format!("g{l}"), "gauss").fill_normal(&mut w, std);
        w
    });
    assert!((m_g - 1.0).abs() < 0.25, "gaussian mean {m_g}");
    assert!(
        v_g >= 4.0 * v_orth,
        "gaussian variance {v_g} vs orthogonal {v_orth}"
    );
}

#[test]
fn critical_layer_is_scaled_orthogonal_with_normal_bias() {
    let spec = LayerSpec::conv(16, 8, &[3, 3], 1).with_activation(Activation::Tanh);
    let init = init_layer(
        &"critical".parse().unwrap(),
        &spec,
        &mut Stream::new(0, "w", "critical"),
    )
    .unwrap();
    let tap = 4;
    let h: Vec<f64> = (0..16 * 8)
        .map(|e| init.weight[spec.index(0, e / 8, e % 8, tap)] / 1.05f64.sqrt())
        .collect();
    assert!(orthogonality_error(&h, 16, 8) < 1e-12);
    assert!(
        init.notes.iter().any(|n| n.contains("q* = 0.0259")),
        "{:?}",
        init.notes
    );
    let b = init.bias.unwrap();
    assert!(b.iter().all(|x| x.abs() < 6.0 * 2.01e-5f64.sqrt()) && b.iter().any(|&x| x != 0.0));
    // sigmoid at the default target is refused with the reason
    let e = init_layer(
        &"critical".parse().unwrap(),
        &spec.clone().with_activation(Activation::Sigmoid),
        &mut Stream::new(0, "w", "critical"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("sigmoid"), "{e}");
}
