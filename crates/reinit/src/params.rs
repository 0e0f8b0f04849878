//! Scheme parameters as users give them (CLI flags, `--rules` TOML, Python
//! keywords), and their translation into a typed [`Scheme`].

use reinit_schemes::{
    Density, DensityDistribution, Distribution, FanMode, Gain, GainChoice, MaskMode, Scheme,
    Submatrix,
};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Every tunable parameter; `None` means "the scheme's default".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SchemeParams {
    /// EOI: fraction of non-zero weights, in (0, 1].
    #[arg(long)]
    pub density: Option<f64>,
    /// EOI: how density is spread over layers: uniform | erk | uniform-skip-first-last.
    #[arg(long)]
    pub sparsity_distribution: Option<String>,
    /// Fixed gain (orthogonal, he, xavier, lecun, delta-orthogonal) or σw (eoi);
    /// default: the gain of the following activation.
    #[arg(long)]
    pub gain: Option<f64>,
    /// he/xavier/lecun: normal | uniform | truncated-normal.
    #[arg(long)]
    pub distribution: Option<String>,
    /// he/lecun/fixup: fan-in | fan-out.
    #[arg(long)]
    pub fan_mode: Option<String>,
    /// Bias standard deviation σb (eoi, delta-orthogonal, relu-share).
    #[arg(long)]
    pub sigma_b: Option<f64>,
    /// IDInit: scale τ of the padded identity.
    #[arg(long)]
    pub tau: Option<f64>,
    /// IDInit: ε on the last layer of each residual branch.
    #[arg(long)]
    pub epsilon: Option<f64>,
    /// critical: target fixed point q* of the pre-activation variance.
    #[arg(long)]
    pub q_star: Option<f64>,
    /// relu-share: gaussian | orthogonal submatrix.
    #[arg(long)]
    pub submatrix: Option<String>,
    /// EOI convolutions: the `more_nonzeros` variant (orthogonal at every tap).
    #[arg(long)]
    pub more_nonzeros: Option<bool>,
    /// EOI: the mask `--mask-out` writes and `verify` holds fixed: trainable (default; the
    /// reference's, convs topped up with random zero positions to the density) | support
    /// (the non-zeros only; a k×k conv then trains at about density/k²).
    #[arg(long)]
    pub mask_mode: Option<String>,
}

fn choice<T: Copy>(param: &str, value: &str, options: &[(&str, T)]) -> Result<T, Error> {
    options
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let known: Vec<_> = options.iter().map(|(n, _)| *n).collect();
            Error::Usage(format!(
                "--{param} {value}: expected one of {}",
                known.join(", ")
            ))
        })
}

impl SchemeParams {
    /// Names of the parameters that are set.
    fn set_names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        let mut add = |set: bool, name| {
            if set {
                names.push(name)
            }
        };
        add(self.density.is_some(), "density");
        add(
            self.sparsity_distribution.is_some(),
            "sparsity-distribution",
        );
        add(self.gain.is_some(), "gain");
        add(self.distribution.is_some(), "distribution");
        add(self.fan_mode.is_some(), "fan-mode");
        add(self.sigma_b.is_some(), "sigma-b");
        add(self.tau.is_some(), "tau");
        add(self.epsilon.is_some(), "epsilon");
        add(self.q_star.is_some(), "q-star");
        add(self.submatrix.is_some(), "submatrix");
        add(self.more_nonzeros.is_some(), "more-nonzeros");
        add(self.mask_mode.is_some(), "mask-mode");
        names
    }

    /// `other`'s set parameters override ours.
    pub fn merged(&self, other: &SchemeParams) -> SchemeParams {
        macro_rules! pick {
            ($($f:ident),*) => { SchemeParams { $($f: other.$f.clone().or_else(|| self.$f.clone())),* } };
        }
        pick!(
            density,
            sparsity_distribution,
            gain,
            distribution,
            fan_mode,
            sigma_b,
            tau,
            epsilon,
            q_star,
            submatrix,
            more_nonzeros,
            mask_mode
        )
    }

    /// Builds the scheme `name` with these parameters. With `strict`, a
    /// parameter the scheme does not take is a usage error (a typo should not
    /// silently do nothing); `auto` passes `strict = false`.
    pub fn scheme(&self, name: &str, strict: bool) -> Result<Scheme, Error> {
        let mut scheme: Scheme = name
            .parse()
            .map_err(|e: reinit_schemes::SchemeError| Error::Usage(e.to_string()))?;
        let mut used: Vec<&str> = Vec::new();
        let gain = |g: Option<f64>| -> Result<Option<Gain>, Error> {
            g.map(|g| Gain::new(g).map_err(|e| Error::Usage(e.to_string())))
                .transpose()
        };
        match &mut scheme {
            Scheme::He(p) | Scheme::Xavier(p) | Scheme::Lecun(p) => {
                if let Some(g) = gain(self.gain)? {
                    p.gain = GainChoice::Fixed(g);
                    used.push("gain");
                }
                if let Some(d) = &self.distribution {
                    p.distribution = choice(
                        "distribution",
                        d,
                        &[
                            ("normal", Distribution::Normal),
                            ("uniform", Distribution::Uniform),
                            ("truncated-normal", Distribution::TruncatedNormal),
                        ],
                    )?;
                    used.push("distribution");
                }
                if let Some(f) = &self.fan_mode {
                    p.fan_mode = fan_mode(f)?;
                    used.push("fan-mode");
                }
            }
            Scheme::Orthogonal(p) => {
                if let Some(g) = gain(self.gain)? {
                    p.gain = GainChoice::Fixed(g);
                    used.push("gain");
                }
            }
            Scheme::DeltaOrthogonal(p) => {
                if let Some(g) = gain(self.gain)? {
                    p.gain = GainChoice::Fixed(g);
                    used.push("gain");
                }
                if let Some(s) = self.sigma_b {
                    p.sigma_b = s;
                    used.push("sigma-b");
                }
            }
            Scheme::Critical(p) => {
                if let Some(q) = self.q_star {
                    p.target = reinit_schemes::CriticalTarget::QStar(q);
                    used.push("q-star");
                }
            }
            Scheme::Eoi(p) => {
                if let Some(d) = self.density {
                    p.density = Density::new(d).map_err(|e| Error::Usage(e.to_string()))?;
                    used.push("density");
                }
                if let Some(d) = &self.sparsity_distribution {
                    p.distribution = choice(
                        "sparsity-distribution",
                        d,
                        &[
                            ("uniform", DensityDistribution::Uniform),
                            ("erk", DensityDistribution::Erk),
                            (
                                "uniform-skip-first-last",
                                DensityDistribution::UniformSkipFirstLast,
                            ),
                        ],
                    )?;
                    used.push("sparsity-distribution");
                }
                if let Some(g) = gain(self.gain)? {
                    p.sigma_w = g;
                    used.push("gain");
                }
                if let Some(s) = self.sigma_b {
                    p.sigma_b = s;
                    used.push("sigma-b");
                }
                if let Some(m) = self.more_nonzeros {
                    p.more_nonzeros = m;
                    used.push("more-nonzeros");
                }
                if let Some(m) = &self.mask_mode {
                    p.mask = choice(
                        "mask-mode",
                        m,
                        &[
                            ("trainable", MaskMode::Trainable),
                            ("support", MaskMode::Support),
                        ],
                    )?;
                    used.push("mask-mode");
                }
            }
            Scheme::IdInit(p) => {
                if let Some(t) = self.tau {
                    p.tau = t;
                    used.push("tau");
                }
                if let Some(e) = self.epsilon {
                    p.epsilon = e;
                    used.push("epsilon");
                }
            }
            Scheme::ReluShare(p) => {
                if let Some(s) = &self.submatrix {
                    p.submatrix = choice(
                        "submatrix",
                        s,
                        &[
                            ("gaussian", Submatrix::Gaussian),
                            ("orthogonal", Submatrix::Orthogonal),
                        ],
                    )?;
                    used.push("submatrix");
                }
                if let Some(s) = self.sigma_b {
                    p.sigma_b = s;
                    used.push("sigma-b");
                }
            }
            Scheme::Fixup(p) => {
                if let Some(f) = &self.fan_mode {
                    p.fan_mode = fan_mode(f)?;
                    used.push("fan-mode");
                }
            }
            Scheme::TorchDefault | Scheme::Lsuv(_) => {}
        }
        if strict {
            let unused: Vec<_> = self
                .set_names()
                .into_iter()
                .filter(|n| !used.contains(n))
                .collect();
            if !unused.is_empty() {
                return Err(Error::Usage(format!(
                    "--{} does not apply to scheme {name} (see `reinit schemes`)",
                    unused.join(", --")
                )));
            }
        }
        scheme.validate().map_err(|e| Error::Usage(e.to_string()))?;
        Ok(scheme)
    }
}

fn fan_mode(value: &str) -> Result<FanMode, Error> {
    choice(
        "fan-mode",
        value,
        &[("fan-in", FanMode::FanIn), ("fan-out", FanMode::FanOut)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_reach_the_scheme() {
        let p = SchemeParams {
            density: Some(0.2),
            ..Default::default()
        };
        match p.scheme("eoi", true).unwrap() {
            Scheme::Eoi(e) => assert_eq!(e.density.get(), 0.2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn misapplied_or_bad_parameters_are_usage_errors() {
        let p = SchemeParams {
            density: Some(0.2),
            ..Default::default()
        };
        assert!(matches!(p.scheme("he", true), Err(Error::Usage(m)) if m.contains("--density")));
        assert!(p.scheme("he", false).is_ok());
        let p = SchemeParams {
            density: Some(1.5),
            ..Default::default()
        };
        assert!(matches!(p.scheme("eoi", true), Err(Error::Usage(_))));
        assert!(matches!(
            SchemeParams::default().scheme("nope", true),
            Err(Error::Usage(_))
        ));
    }
}
