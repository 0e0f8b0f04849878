//! Gauss–Hermite quadrature against the standard normal measure `Dz`.

use std::sync::OnceLock;

/// Nodes and weights such that `∫ f(z) Dz ≈ Σ wᵢ f(zᵢ)` (probabilists' convention:
/// `Dz = e^{−z²/2}/√(2π) dz`; the weights sum to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussHermite {
    pub nodes: Vec<f64>,
    pub weights: Vec<f64>,
}

impl GaussHermite {
    /// `∫ f(z) Dz`.
    pub fn integrate(&self, f: impl Fn(f64) -> f64) -> f64 {
        self.nodes
            .iter()
            .zip(&self.weights)
            .map(|(&z, &w)| w * f(z))
            .sum()
    }
}

/// The `n`-point rule (`n ≥ 1`). Physicists' nodes by Newton iteration on the orthonormal
/// Hermite recurrence (Numerical Recipes' `gauher` initial guesses), then rescaled to the
/// normal measure: `zᵢ = √2·xᵢ`, `wᵢ = w'ᵢ/√π`. Exact for polynomials of degree `2n − 1`.
pub fn gauss_hermite(n: usize) -> GaussHermite {
    let n = n.max(1);
    let pim4 = std::f64::consts::PI.powf(-0.25);
    let mut x = vec![0.0; n];
    let mut w = vec![0.0; n];
    let m = n.div_ceil(2);
    let nf = n as f64;
    let mut z: f64 = 0.0;
    for i in 0..m {
        z = match i {
            0 => (2.0 * nf + 1.0).sqrt() - 1.85575 * (2.0 * nf + 1.0).powf(-0.16667),
            1 => z - 1.14 * nf.powf(0.426) / z,
            2 => 1.86 * z - 0.86 * x[0],
            3 => 1.91 * z - 0.91 * x[1],
            _ => 2.0 * z - x[i - 2],
        };
        let mut pp = 0.0;
        for _ in 0..100 {
            let mut p1 = pim4;
            let mut p2 = 0.0;
            for j in 0..n {
                let p3 = p2;
                p2 = p1;
                let jf = j as f64;
                p1 = z * (2.0 / (jf + 1.0)).sqrt() * p2 - (jf / (jf + 1.0)).sqrt() * p3;
            }
            pp = (2.0 * nf).sqrt() * p2;
            let z1 = z;
            z = z1 - p1 / pp;
            if (z - z1).abs() <= 1e-15 * z.abs().max(1.0) {
                break;
            }
        }
        x[i] = z;
        x[n - 1 - i] = -z;
        w[i] = 2.0 / (pp * pp);
        w[n - 1 - i] = w[i];
    }
    let sqrt_pi = std::f64::consts::PI.sqrt();
    GaussHermite {
        nodes: x.iter().map(|v| v * std::f64::consts::SQRT_2).collect(),
        weights: w.iter().map(|v| v / sqrt_pi).collect(),
    }
}

/// Number of nodes of the shared rule used by the critical-line solver.
pub const DEFAULT_NODES: usize = 160;

/// The shared [`DEFAULT_NODES`]-point rule.
pub(crate) fn default_rule() -> &'static GaussHermite {
    static RULE: OnceLock<GaussHermite> = OnceLock::new();
    RULE.get_or_init(|| gauss_hermite(DEFAULT_NODES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_normal_moments() {
        for n in [5, 20, 100, 160] {
            let gh = gauss_hermite(n);
            assert!((gh.integrate(|_| 1.0) - 1.0).abs() < 1e-13, "n {n}");
            assert!(gh.integrate(|z| z).abs() < 1e-13);
            assert!((gh.integrate(|z| z * z) - 1.0).abs() < 1e-12);
            assert!((gh.integrate(|z| z.powi(4)) - 3.0).abs() < 1e-11);
            if n >= 5 {
                // degree 8 is exact from n = 5 on: E z⁸ = 105
                assert!((gh.integrate(|z| z.powi(8)) - 105.0).abs() < 1e-8, "n {n}");
            }
        }
        // a smooth non-polynomial: E cos(z) = e^{−1/2}
        let gh = default_rule();
        assert!((gh.integrate(f64::cos) - (-0.5f64).exp()).abs() < 1e-14);
    }
}
