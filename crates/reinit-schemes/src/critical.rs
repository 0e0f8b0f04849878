//! Mean-field critical line (Pennington, Schoenholz & Ganguli 2017; Xiao et al. 2018),
//! schemes.md §2.1–2.3.
//!
//! For `h^l = W^l φ(h^{l−1}) + b^l` with weight variance `σ_w²/n` and bias variance `σ_b²`:
//! length map `q ↦ σ_w² ∫ φ(√q z)² Dz + σ_b²`, `χ = σ_w² μ1(q*)`, with
//! `μ_k(q) = ∫ φ'(√q z)^{2k} Dz`. On the critical line (`χ = 1`) at a target `q*`:
//! `σ_w² = 1/μ1(q*)`, `σ_b² = q* − σ_w² ∫ φ(√q* z)² Dz` (feasible iff `σ_b² ≥ 0`).
//! Integrals use Gauss–Hermite quadrature ([`crate::gauss_hermite`], 160 nodes) for smooth φ
//! and closed forms for piecewise-linear ones (linear, ReLU, leaky ReLU, PReLU, hard-tanh).

use crate::activation::{Activation, PRELU_INIT_SLOPE};
use crate::error::SchemeError;
use crate::quadrature::default_rule;

const SELU_LAMBDA: f64 = 1.050_700_987_355_480_5;
const SELU_ALPHA: f64 = 1.673_263_242_354_377_2;

/// One point of the mean-field analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CriticalPoint {
    pub sigma_w2: f64,
    pub sigma_b2: f64,
    /// Fixed point of the length map.
    pub q_star: f64,
    /// Slope of the correlation map at `q*` (1 on the critical line).
    pub chi: f64,
    pub mu1: f64,
    pub mu2: f64,
}

impl CriticalPoint {
    /// `μ2/μ1² − 1`: per-layer variance of the `J Jᵀ` spectrum for orthogonal weights on the
    /// critical line (§2.2).
    pub fn orthogonal_variance_per_layer(&self) -> f64 {
        self.mu2 / (self.mu1 * self.mu1) - 1.0
    }
}

/// A scalar unit: φ and φ'.
pub(crate) trait Unit {
    fn phi(&self, h: f64) -> f64;
    fn dphi(&self, h: f64) -> f64;
}

struct Smooth<F: Fn(f64) -> f64, G: Fn(f64) -> f64>(F, G);

impl<F: Fn(f64) -> f64, G: Fn(f64) -> f64> Unit for Smooth<F, G> {
    fn phi(&self, h: f64) -> f64 {
        (self.0)(h)
    }
    fn dphi(&self, h: f64) -> f64 {
        (self.1)(h)
    }
}

fn sigmoid(h: f64) -> f64 {
    1.0 / (1.0 + (-h).exp())
}

fn std_normal_cdf(h: f64) -> f64 {
    0.5 * libm::erfc(-h / std::f64::consts::SQRT_2)
}

fn std_normal_pdf(h: f64) -> f64 {
    (-0.5 * h * h).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// `∫ φ(√q z)² Dz` and `μ1`, `μ2` for a unit by quadrature.
pub(crate) fn moments_by_quadrature(unit: &dyn Unit, q: f64) -> (f64, f64, f64) {
    let rule = default_rule();
    let s = q.sqrt();
    let phi2 = rule.integrate(|z| unit.phi(s * z).powi(2));
    let mu1 = rule.integrate(|z| unit.dphi(s * z).powi(2));
    let mu2 = rule.integrate(|z| unit.dphi(s * z).powi(4));
    (phi2, mu1, mu2)
}

/// `(∫φ², μ1, μ2)` at `q` for an activation.
fn moments(act: &Activation, q: f64) -> Result<(f64, f64, f64), SchemeError> {
    let leaky = |a: f64| {
        (
            q * (1.0 + a * a) / 2.0,
            (1.0 + a * a) / 2.0,
            (1.0 + a.powi(4)) / 2.0,
        )
    };
    Ok(match act {
        Activation::Linear => (q, 1.0, 1.0),
        Activation::Relu => (q / 2.0, 0.5, 0.5),
        Activation::LeakyRelu { alpha } => leaky(*alpha),
        Activation::PRelu => leaky(PRELU_INIT_SLOPE),
        Activation::HardTanh => {
            if q == 0.0 {
                (0.0, 1.0, 1.0)
            } else {
                let a = 1.0 / (2.0 * q).sqrt();
                let e = libm::erf(a);
                let phi2 = q * (e - 2.0 * a / std::f64::consts::PI.sqrt() * (-a * a).exp())
                    + libm::erfc(a);
                (phi2, e, e)
            }
        }
        Activation::Tanh => {
            moments_by_quadrature(&Smooth(f64::tanh, |h: f64| 1.0 - h.tanh().powi(2)), q)
        }
        Activation::Sigmoid => moments_by_quadrature(
            &Smooth(sigmoid, |h: f64| {
                let s = sigmoid(h);
                s * (1.0 - s)
            }),
            q,
        ),
        Activation::Softplus => moments_by_quadrature(
            &Smooth(|h: f64| if h > 30.0 { h } else { h.exp().ln_1p() }, sigmoid),
            q,
        ),
        Activation::Gelu => moments_by_quadrature(
            &Smooth(
                |h: f64| h * std_normal_cdf(h),
                |h: f64| std_normal_cdf(h) + h * std_normal_pdf(h),
            ),
            q,
        ),
        Activation::Silu => moments_by_quadrature(
            &Smooth(
                |h: f64| h * sigmoid(h),
                |h: f64| {
                    let s = sigmoid(h);
                    s + h * s * (1.0 - s)
                },
            ),
            q,
        ),
        Activation::Elu { alpha } => {
            let a = *alpha;
            moments_by_quadrature(
                &Smooth(
                    move |h: f64| if h > 0.0 { h } else { a * h.exp_m1() },
                    move |h: f64| if h > 0.0 { 1.0 } else { a * h.exp() },
                ),
                q,
            )
        }
        Activation::Selu => moments_by_quadrature(
            &Smooth(
                |h: f64| SELU_LAMBDA * if h > 0.0 { h } else { SELU_ALPHA * h.exp_m1() },
                |h: f64| SELU_LAMBDA * if h > 0.0 { 1.0 } else { SELU_ALPHA * h.exp() },
            ),
            q,
        ),
        Activation::HardSigmoid => moments_by_quadrature(
            // ONNX HardSigmoid defaults: alpha 0.2, beta 0.5
            &Smooth(
                |h: f64| (0.2 * h + 0.5).clamp(0.0, 1.0),
                |h: f64| {
                    if (0.2 * h + 0.5) > 0.0 && (0.2 * h + 0.5) < 1.0 {
                        0.2
                    } else {
                        0.0
                    }
                },
            ),
            q,
        ),
        Activation::HardSwish => moments_by_quadrature(
            &Smooth(
                |h: f64| h * (h / 6.0 + 0.5).clamp(0.0, 1.0),
                |h: f64| {
                    if h <= -3.0 {
                        0.0
                    } else if h >= 3.0 {
                        1.0
                    } else {
                        h / 3.0 + 0.5
                    }
                },
            ),
            q,
        ),
        Activation::Relu6 => moments_by_quadrature(
            &Smooth(
                |h: f64| h.clamp(0.0, 6.0),
                |h: f64| if h > 0.0 && h < 6.0 { 1.0 } else { 0.0 },
            ),
            q,
        ),
        Activation::Softmax | Activation::Other(_) => {
            return Err(SchemeError::Infeasible {
                activation: act.to_string(),
                reason: "no mean-field map for this activation (not elementwise or unknown)".into(),
            });
        }
    })
}

/// `μ_k(q) = ∫ φ'(√q z)^{2k} Dz` for `k ∈ {1, 2}`.
pub fn mu(act: &Activation, q: f64, k: u32) -> Result<f64, SchemeError> {
    let (_, m1, m2) = moments(act, q)?;
    match k {
        1 => Ok(m1),
        2 => Ok(m2),
        _ => Err(SchemeError::InvalidParam {
            scheme: "critical",
            param: "k",
            value: k.to_string(),
            reason: "only μ1 and μ2 are provided".into(),
        }),
    }
}

/// `∫ φ(√q z)² Dz`.
pub fn phi_square_mean(act: &Activation, q: f64) -> Result<f64, SchemeError> {
    Ok(moments(act, q)?.0)
}

/// One step of the length map: `σ_w² ∫ φ(√q z)² Dz + σ_b²`.
pub fn length_map(
    act: &Activation,
    q: f64,
    sigma_w2: f64,
    sigma_b2: f64,
) -> Result<f64, SchemeError> {
    Ok(sigma_w2 * phi_square_mean(act, q)? + sigma_b2)
}

/// The point on the critical line with fixed point `q_star` (§2.1). Errors when
/// `σ_b² < 0` (e.g. the logistic sigmoid below `q* ≈ 45`).
pub fn critical_point(act: &Activation, q_star: f64) -> Result<CriticalPoint, SchemeError> {
    if !(q_star.is_finite() && q_star > 0.0) {
        return Err(SchemeError::InvalidParam {
            scheme: "critical",
            param: "q_star",
            value: q_star.to_string(),
            reason: "must be finite and > 0".into(),
        });
    }
    let (phi2, mu1, mu2) = moments(act, q_star)?;
    critical_from_moments(&act.to_string(), q_star, phi2, mu1, mu2)
}

pub(crate) fn critical_from_moments(
    name: &str,
    q_star: f64,
    phi2: f64,
    mu1: f64,
    mu2: f64,
) -> Result<CriticalPoint, SchemeError> {
    if mu1.is_nan() || mu1 <= 0.0 {
        return Err(SchemeError::Infeasible {
            activation: name.to_string(),
            reason: format!("mu1({q_star}) = {mu1}: the activation has no slope there"),
        });
    }
    let sigma_w2 = 1.0 / mu1;
    let mut sigma_b2 = q_star - sigma_w2 * phi2;
    if sigma_b2 < 0.0 {
        if sigma_b2 > -1e-12 * q_star {
            sigma_b2 = 0.0;
        } else {
            let hint = if name == "sigmoid" {
                "; the logistic sigmoid has a critical line only for q* ≳ 45 with no isometry \
                 — use tanh (or an erf-like unit) instead"
            } else {
                ""
            };
            return Err(SchemeError::Infeasible {
                activation: name.to_string(),
                reason: format!(
                    "no critical point at q* = {q_star}: sigma_b^2 would be {sigma_b2:.4e} < 0{hint}"
                ),
            });
        }
    }
    Ok(CriticalPoint {
        sigma_w2,
        sigma_b2,
        q_star,
        chi: 1.0,
        mu1,
        mu2,
    })
}

/// The (stable) fixed point `q*` of the length map for given variances and `χ` there.
/// Found by bisection of `σ_w² ∫φ² + σ_b² − q` on a doubling bracket; `q* = 0` when the
/// map contracts to 0 with `σ_b² = 0`.
pub fn fixed_point_of(
    act: &Activation,
    sigma_w2: f64,
    sigma_b2: f64,
) -> Result<CriticalPoint, SchemeError> {
    let g =
        |q: f64| -> Result<f64, SchemeError> { Ok(length_map(act, q, sigma_w2, sigma_b2)? - q) };
    let mut lo = 1e-300_f64.max(sigma_b2 * 1e-6);
    if sigma_b2 == 0.0 {
        lo = 1e-12;
    }
    let finish = |q: f64| -> Result<CriticalPoint, SchemeError> {
        let (_, mu1, mu2) = moments(act, q)?;
        Ok(CriticalPoint {
            sigma_w2,
            sigma_b2,
            q_star: q,
            chi: sigma_w2 * mu1,
            mu1,
            mu2,
        })
    };
    if g(lo)? <= 0.0 {
        // the map pulls every q below lo: only q* = 0 (needs σ_b² = 0)
        return finish(0.0);
    }
    let mut hi = lo.max(1e-3);
    while g(hi)? > 0.0 {
        hi *= 2.0;
        if hi > 1e12 {
            return Err(SchemeError::Infeasible {
                activation: act.to_string(),
                reason: format!(
                    "the length map has no finite fixed point for sigma_w^2 = {sigma_w2}, sigma_b^2 = {sigma_b2}"
                ),
            });
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if g(mid)? > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-15 * hi {
            break;
        }
    }
    finish(0.5 * (lo + hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Table rows (q*, σ_w², σ_b², μ2/μ1²−1) from schemes.md §2.3.
    const TANH: [(f64, f64, f64, f64); 6] = [
        (1.0 / 64.0, 1.03056, 4.651e-6, 0.0017),
        (1.0 / 16.0, 1.11538, 2.369e-4, 0.0192),
        (0.25, 1.39396, 8.125e-3, 0.1370),
        (0.5, 1.68798, 3.804e-2, 0.2992),
        (1.0, 2.15330, 0.1510, 0.5835),
        (4.0, 3.90701, 1.5180, 1.7359),
    ];
    const HARD_TANH: [(f64, f64, f64, f64); 6] = [
        (1.0 / 64.0, 1.000000, 0.0, 0.0),
        (1.0 / 16.0, 1.000063, 3.57e-6, 0.0001),
        (0.25, 1.047669, 8.90e-3, 0.0477),
        (0.5, 1.186661, 5.96e-2, 0.1867),
        (1.0, 1.464795, 0.2441, 0.4648),
        (4.0, 2.611478, 2.066, 1.6115),
    ];

    fn check_table(act: &Activation, table: &[(f64, f64, f64, f64)]) {
        for &(q, sw2, sb2, var) in table {
            let p = critical_point(act, q).unwrap();
            assert!(
                (p.sigma_w2 - sw2).abs() <= 1e-4,
                "{act} q*={q}: σw² {} vs {sw2}",
                p.sigma_w2
            );
            let db = (p.sigma_b2 - sb2).abs();
            assert!(
                db <= 1e-6 || db <= 0.01 * sb2,
                "{act} q*={q}: σb² {} vs {sb2}",
                p.sigma_b2
            );
            assert!(
                (p.orthogonal_variance_per_layer() - var).abs() <= 1e-4 + 0.01 * var,
                "{act} q*={q}: var {} vs {var}",
                p.orthogonal_variance_per_layer()
            );
        }
    }

    #[test]
    fn tanh_table() {
        check_table(&Activation::Tanh, &TANH);
    }

    #[test]
    fn hard_tanh_table() {
        check_table(&Activation::HardTanh, &HARD_TANH);
    }

    #[test]
    fn erf_unit_table() {
        // φ(h) = erf(√π h / 2) (unit slope): q*=1/64 → (1.02425, 2.99e-6); 1/4 → (1.33619,
        // 6.85e-3); 1 → (2.03509, 0.1484).
        let c = std::f64::consts::PI.sqrt() / 2.0;
        let unit = Smooth(
            move |h: f64| libm::erf(c * h),
            move |h: f64| (-(c * h) * (c * h)).exp(),
        );
        for (q, sw2, sb2) in [
            (1.0 / 64.0, 1.02425, 2.99e-6),
            (0.25, 1.33619, 6.85e-3),
            (1.0, 2.03509, 0.1484),
        ] {
            let (phi2, m1, m2) = moments_by_quadrature(&unit, q);
            let p = critical_from_moments("erf", q, phi2, m1, m2).unwrap();
            assert!((p.sigma_w2 - sw2).abs() <= 1e-4, "q {q}: {}", p.sigma_w2);
            assert!(
                (p.sigma_b2 - sb2).abs() <= 1e-6f64.max(0.01 * sb2),
                "q {q}: {}",
                p.sigma_b2
            );
        }
    }

    #[test]
    fn xiao_pair_sits_on_the_critical_line() {
        let p = fixed_point_of(&Activation::Tanh, 1.05, 2.01e-5).unwrap();
        assert!((0.0258..=0.0260).contains(&p.q_star), "q* {}", p.q_star);
        assert!((0.9999..=1.0001).contains(&p.chi), "χ {}", p.chi);
    }

    #[test]
    fn sigmoid_is_refused_at_small_q_and_feasible_near_45() {
        let e = critical_point(&Activation::Sigmoid, 1.0 / 64.0).unwrap_err();
        assert!(e.to_string().contains("tanh"), "{e}");
        let p = critical_point(&Activation::Sigmoid, 60.0).unwrap();
        assert!(p.sigma_w2 > 16.0 && p.orthogonal_variance_per_layer() > 1.0);
    }

    #[test]
    fn relu_and_linear_closed_forms() {
        let p = critical_point(&Activation::Relu, 0.3).unwrap();
        assert!((p.sigma_w2 - 2.0).abs() < 1e-15 && p.sigma_b2 == 0.0);
        assert!((p.orthogonal_variance_per_layer() - 1.0).abs() < 1e-15);
        let p = critical_point(&Activation::Linear, 0.3).unwrap();
        assert!((p.sigma_w2 - 1.0).abs() < 1e-15 && p.sigma_b2 == 0.0);
        // quadrature agrees with the leaky closed form away from the kink's influence
        let lr = Activation::LeakyRelu { alpha: 0.1 };
        assert!((mu(&lr, 1.0, 1).unwrap() - 0.505).abs() < 1e-15);
        assert!(critical_point(&Activation::Softmax, 0.1).is_err());
    }

    #[test]
    fn fixed_point_inverts_the_solver() {
        for &(q, ..) in &TANH {
            let p = critical_point(&Activation::Tanh, q).unwrap();
            let fp = fixed_point_of(&Activation::Tanh, p.sigma_w2, p.sigma_b2).unwrap();
            assert!((fp.q_star / q - 1.0).abs() < 1e-6, "q* {q}: {}", fp.q_star);
            assert!((fp.chi - 1.0).abs() < 1e-6, "q* {q}: χ {}", fp.chi);
        }
    }

    #[test]
    fn smooth_relu_likes_are_solvable() {
        for act in [
            Activation::Gelu,
            Activation::Silu,
            Activation::Selu,
            Activation::Elu { alpha: 1.0 },
        ] {
            let p = critical_point(&act, 1.0).unwrap();
            assert!(p.sigma_w2.is_finite() && p.sigma_w2 > 0.0, "{act}");
            // χ = σ_w² μ1 = 1 and q* is a fixed point of the length map
            assert!((p.sigma_w2 * mu(&act, 1.0, 1).unwrap() - 1.0).abs() < 1e-12);
            let q1 = length_map(&act, 1.0, p.sigma_w2, p.sigma_b2).unwrap();
            assert!((q1 - 1.0).abs() < 1e-12, "{act}: {q1}");
        }
        // softplus has a large positive mean (like the sigmoid): no critical point at q* = 1
        assert!(critical_point(&Activation::Softplus, 1.0).is_err());
    }
}
