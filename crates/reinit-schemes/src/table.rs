//! The scheme table: the [`Scheme`] enum and [`SCHEMES`], one [`SchemeDef`] per scheme.
//!
//! Everything that lists schemes or their parameters derives from [`SCHEMES`]: name
//! parsing ([`Scheme::from_str`](std::str::FromStr)), parameter checking
//! (`values.rs`, [`ParamValues::build`](crate::ParamValues::build): a parameter the chosen scheme does not take is an error, for
//! every scheme), and in crate `reinit` the CLI flags, `reinit schemes` (+ `--json`), the
//! `--rules` keys and the Python keywords.
//!
//! Adding a scheme touches three files: a new module with its parameters, its
//! [`SchemeDef`] and its construction (`random_mask.rs` is the worked example); a variant
//! of [`Scheme`], its entry in [`SCHEMES`] and its arms in the matches below (this file);
//! `mod` and `pub use` in `lib.rs`.

use std::fmt;
use std::str::FromStr;

use crate::builtin;
use crate::eoi::layer_densities;
use crate::error::SchemeError;
use crate::init::{self, WeightValues};
use crate::layer::LayerSpec;
use crate::params::{
    CriticalParams, DeltaOrthogonalParams, Density, DensityDistribution, EoiParams, FixupParams,
    IdInitParams, LsuvParams, MaskMode, OrthogonalParams, ReluShareParams, VarianceParams,
};
use crate::random_mask::{self, RandomMaskParams};
use crate::rng::Stream;
use crate::structured;
pub(crate) use crate::values::{Given, ParamValues};

/// An initialization scheme with its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scheme {
    He(VarianceParams),
    Xavier(VarianceParams),
    Lecun(VarianceParams),
    /// What PyTorch `Linear`/`ConvNd` start from: `U(±1/√fan_in)` weights and biases.
    TorchDefault,
    Orthogonal(OrthogonalParams),
    DeltaOrthogonal(DeltaOrthogonalParams),
    Critical(CriticalParams),
    Eoi(EoiParams),
    IdInit(IdInitParams),
    ReluShare(ReluShareParams),
    Fixup(FixupParams),
    Lsuv(LsuvParams),
    RandomMask(RandomMaskParams),
}

/// Every scheme, in documentation order.
pub const SCHEMES: &[&SchemeDef] = &[
    &builtin::HE,
    &builtin::XAVIER,
    &builtin::LECUN,
    &builtin::TORCH_DEFAULT,
    &builtin::ORTHOGONAL,
    &builtin::DELTA_ORTHOGONAL,
    &builtin::CRITICAL,
    &builtin::EOI,
    &random_mask::DEF,
    &builtin::IDINIT,
    &builtin::RELU_SHARE,
    &builtin::FIXUP,
    &builtin::LSUV,
];

/// What a scheme produced for one weight: values (maybe undrawn), bias, mask.
pub(crate) type Filled = (WeightValues, Option<Vec<f64>>, Option<Vec<bool>>);

impl Scheme {
    /// The scheme's definition in [`SCHEMES`].
    pub fn def(&self) -> &'static SchemeDef {
        match self {
            Scheme::He(_) => &builtin::HE,
            Scheme::Xavier(_) => &builtin::XAVIER,
            Scheme::Lecun(_) => &builtin::LECUN,
            Scheme::TorchDefault => &builtin::TORCH_DEFAULT,
            Scheme::Orthogonal(_) => &builtin::ORTHOGONAL,
            Scheme::DeltaOrthogonal(_) => &builtin::DELTA_ORTHOGONAL,
            Scheme::Critical(_) => &builtin::CRITICAL,
            Scheme::Eoi(_) => &builtin::EOI,
            Scheme::IdInit(_) => &builtin::IDINIT,
            Scheme::ReluShare(_) => &builtin::RELU_SHARE,
            Scheme::Fixup(_) => &builtin::FIXUP,
            Scheme::Lsuv(_) => &builtin::LSUV,
            Scheme::RandomMask(_) => &random_mask::DEF,
        }
    }

    /// The CLI name (also the scheme id of its random streams).
    pub fn name(&self) -> &'static str {
        self.def().name
    }

    /// Whether the scheme's weights are i.i.d. draws (or zeros), which
    /// [`init_layer_lazy`](crate::init_layer_lazy) leaves undrawn so they can
    /// be produced piece by piece.
    pub fn draws_iid(&self) -> bool {
        self.def().draws_iid
    }

    /// This scheme with no EOI mask computed (`mask-mode none`): the same weights and
    /// biases (the trainable mask's top-up draws from a substream of its own), for a run
    /// whose masks nobody reads. Schemes whose mask is part of the weight (random-mask)
    /// are unchanged.
    pub fn without_mask(&self) -> Scheme {
        match *self {
            Scheme::Eoi(p) => Scheme::Eoi(EoiParams {
                mask: MaskMode::None,
                ..p
            }),
            other => other,
        }
    }

    /// Checks every parameter's domain.
    pub fn validate(&self) -> Result<(), SchemeError> {
        match self {
            Scheme::Critical(p) => builtin::validate_critical(p),
            Scheme::DeltaOrthogonal(p) => builtin::nonneg("delta-orthogonal", "sigma_b", p.sigma_b),
            Scheme::Eoi(p) => builtin::nonneg("eoi", "sigma_b", p.sigma_b),
            Scheme::IdInit(p) => builtin::validate_idinit(p),
            Scheme::ReluShare(p) => builtin::nonneg("relu-share", "sigma_b", p.sigma_b),
            Scheme::Lsuv(p) => builtin::validate_lsuv(p),
            Scheme::RandomMask(p) => p.validate(),
            Scheme::He(_)
            | Scheme::Xavier(_)
            | Scheme::Lecun(_)
            | Scheme::TorchDefault
            | Scheme::Orthogonal(_)
            | Scheme::Fixup(_) => Ok(()),
        }
    }

    /// The global density and how it is spread over layers, for sparse schemes.
    pub fn sparsity(&self) -> Option<(Density, DensityDistribution)> {
        match self {
            Scheme::Eoi(p) => Some((p.density, p.distribution)),
            Scheme::RandomMask(p) => Some((p.density, p.distribution)),
            _ => None,
        }
    }

    /// This scheme at one layer's resolved density (the distribution becomes uniform).
    pub fn at_layer_density(&self, density: Density) -> Scheme {
        match *self {
            Scheme::Eoi(p) => Scheme::Eoi(EoiParams {
                density,
                distribution: DensityDistribution::Uniform,
                ..p
            }),
            Scheme::RandomMask(p) => Scheme::RandomMask(RandomMaskParams {
                density,
                distribution: DensityDistribution::Uniform,
                ..p
            }),
            other => other,
        }
    }

    /// Fills one layer (the dispatch behind [`init_layer_lazy`](crate::init_layer_lazy)).
    pub(crate) fn fill(
        &self,
        spec: &LayerSpec,
        rng: &mut Stream,
        notes: &mut Vec<String>,
    ) -> Result<Filled, SchemeError> {
        let plain = |(w, b): (WeightValues, Option<Vec<f64>>)| (w, b, None);
        Ok(match self {
            Scheme::He(p) => plain(structured::variance_scheme(self, p, spec, rng, notes)?),
            Scheme::Xavier(p) => plain(structured::variance_scheme(self, p, spec, rng, notes)?),
            Scheme::Lecun(p) => plain(structured::variance_scheme(self, p, spec, rng, notes)?),
            Scheme::TorchDefault => plain(crate::variance::torch_default(spec, rng)),
            Scheme::Orthogonal(p) => plain(structured::orthogonal(p, spec, rng, notes)),
            Scheme::DeltaOrthogonal(p) => plain(structured::delta_orthogonal(p, spec, rng, notes)?),
            Scheme::Critical(p) => plain(structured::critical(p, spec, rng, notes)?),
            Scheme::Eoi(p) => {
                let d = layer_densities(std::slice::from_ref(spec), p)[0];
                structured::eoi_layer(p, d, spec, rng, notes)?
            }
            Scheme::IdInit(p) => plain(crate::idinit::idinit(p, spec, rng, notes)),
            Scheme::ReluShare(p) => plain(init::with_dense(crate::relu_share::relu_share(
                p, spec, rng, notes,
            )?)),
            Scheme::Fixup(p) => plain(structured::fixup(p, spec, rng, notes)?),
            Scheme::Lsuv(_) => plain(structured::lsuv_pre_init(spec, rng, notes)),
            Scheme::RandomMask(p) => random_mask::fill(p, spec, rng, notes)?,
        })
    }
}

impl FromStr for Scheme {
    type Err = SchemeError;

    /// Parses a CLI name (or alias; case, `_` and `-` are not told apart) into the scheme
    /// with its default parameters.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ParamValues::default().build(s, true)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One scheme: what it is, where it comes from, what it takes and how it is built.
pub struct SchemeDef {
    /// The CLI name (also the scheme id of its random streams).
    pub name: &'static str,
    /// Other names that parse to it.
    pub aliases: &'static [&'static str],
    pub summary: &'static str,
    /// What the scheme needs from the graph analysis.
    pub needs: &'static str,
    pub paper: &'static str,
    pub params: &'static [ParamDef],
    /// Weights are i.i.d. draws (or zeros): they can be produced piece by piece.
    pub draws_iid: bool,
    /// The scheme promises (semi-)orthogonal weights (or exactly orthogonal taps).
    pub orthogonal: bool,
    /// Builds the scheme from the given parameters (all of them declared in `params`;
    /// choices already checked against [`ParamKind::Choice`]); absent ones take defaults.
    pub build: fn(&Given<'_>) -> Result<Scheme, SchemeError>,
}

impl SchemeDef {
    pub fn param(&self, name: &str) -> Option<&'static ParamDef> {
        self.params.iter().find(|p| p.name == name)
    }

    fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }
}

/// The type of a parameter's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// A float.
    Number,
    /// `true` or `false`.
    Flag,
    /// One of these names.
    Choice(&'static [&'static str]),
}

/// One parameter of one scheme. Several schemes may take a parameter of the same name;
/// its kind is then the same everywhere (a test checks it), its default and help may differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamDef {
    /// Kebab-case, as the CLI flag (`--fan-mode`), the rules key and (with `_`) the Python
    /// keyword.
    pub name: &'static str,
    pub kind: ParamKind,
    /// The default, as shown to users.
    pub default: &'static str,
    pub help: &'static str,
}

/// The scheme names, in documentation order.
pub fn scheme_names() -> impl Iterator<Item = &'static str> {
    SCHEMES.iter().map(|d| d.name)
}

/// The definition answering to `name` (CLI name or alias; case, `_`/`-` folded).
pub fn lookup(name: &str) -> Result<&'static SchemeDef, SchemeError> {
    let folded = name.trim().to_ascii_lowercase().replace('_', "-");
    SCHEMES
        .iter()
        .copied()
        .find(|d| d.answers_to(&folded))
        .ok_or_else(|| SchemeError::UnknownScheme(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{ParamValue, ParamValues, all_params};

    #[test]
    fn names_round_trip_and_defaults_validate() {
        for def in SCHEMES {
            let s: Scheme = def.name.parse().unwrap();
            assert_eq!(s.name(), def.name);
            assert_eq!(s.def().name, def.name);
            assert!(s.validate().is_ok());
            for alias in def.aliases {
                assert_eq!(alias.parse::<Scheme>().unwrap().name(), def.name);
            }
        }
        assert!("nope".parse::<Scheme>().is_err());
        assert!(matches!(
            "nope".parse::<Scheme>(),
            Err(SchemeError::UnknownScheme(_))
        ));
    }

    #[test]
    fn a_shared_parameter_has_one_kind() {
        for shared in all_params() {
            for (scheme, p) in &shared.schemes {
                assert_eq!(
                    std::mem::discriminant(&p.kind),
                    std::mem::discriminant(&shared.kind),
                    "{scheme} --{}",
                    shared.name
                );
            }
        }
    }

    /// Every declared parameter reaches the scheme: each value (every choice, a
    /// non-default number, both flags) builds, and the result differs from the default
    /// unless the value is the default.
    #[test]
    fn every_declared_parameter_is_read() {
        for def in SCHEMES {
            let default = (def.build)(&Given {
                scheme: def.name,
                values: &ParamValues::default(),
            })
            .unwrap();
            for p in def.params {
                let candidates: Vec<ParamValue> = match p.kind {
                    ParamKind::Number => vec![ParamValue::Number(0.3141)],
                    ParamKind::Flag => vec![ParamValue::Flag(true), ParamValue::Flag(false)],
                    ParamKind::Choice(c) => {
                        c.iter().map(|s| ParamValue::Text(s.to_string())).collect()
                    }
                };
                let mut changed = false;
                for v in candidates {
                    let mut values = ParamValues::default();
                    values.set(p.name, v.clone()).unwrap();
                    let built = values
                        .build(def.name, true)
                        .unwrap_or_else(|e| panic!("{} --{} {v}: {e}", def.name, p.name));
                    changed |= built != default;
                }
                assert!(changed, "{} ignores --{}", def.name, p.name);
            }
        }
    }

    #[test]
    fn a_parameter_the_scheme_does_not_take_is_refused_for_every_scheme() {
        let params = all_params();
        for def in SCHEMES {
            for shared in &params {
                if def.param(shared.name).is_some() {
                    continue;
                }
                let mut values = ParamValues::default();
                let v = match shared.kind {
                    ParamKind::Number => ParamValue::Number(0.5),
                    ParamKind::Flag => ParamValue::Flag(true),
                    ParamKind::Choice(c) => ParamValue::Text(c[0].into()),
                };
                values.set(shared.name, v).unwrap();
                let err = values.build(def.name, true).unwrap_err();
                assert!(
                    err.to_string().contains(&format!(
                        "--{} does not apply to scheme {}",
                        shared.name, def.name
                    )),
                    "{err}"
                );
                assert!(values.build(def.name, false).is_ok());
            }
        }
    }

    #[test]
    fn bad_values_are_refused() {
        let mut v = ParamValues::default();
        assert!(v.set("fan_mode", ParamValue::Number(1.0)).is_err());
        assert!(v.set("no-such", ParamValue::Number(1.0)).is_err());
        v.set("fan-mode", ParamValue::Text("sideways".into()))
            .unwrap();
        let e = v.build("he", true).unwrap_err().to_string();
        assert_eq!(e, "--fan-mode sideways: expected one of fan-in, fan-out");
        let mut v = ParamValues::default();
        v.set("density", ParamValue::Number(1.5)).unwrap();
        assert!(v.build("eoi", true).is_err());
        assert!(
            v.build("random-mask", true)
                .unwrap_err()
                .to_string()
                .contains("random-mask")
        );
    }
}
