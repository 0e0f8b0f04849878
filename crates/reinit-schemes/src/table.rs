//! The scheme table: the [`Scheme`] enum and [`SCHEMES`], one [`SchemeDef`] per scheme.
//!
//! Everything that lists schemes or their parameters derives from [`SCHEMES`]: name
//! parsing ([`Scheme::from_str`](std::str::FromStr)), parameter checking
//! ([`ParamValues::build`]: a parameter the chosen scheme does not take is an error, for
//! every scheme), and in crate `reinit` the CLI flags, `reinit schemes` (+ `--json`), the
//! `--rules` keys and the Python keywords.
//!
//! Adding a scheme touches three files: a new module with its parameters, its
//! [`SchemeDef`] and its construction (`random_mask.rs` is the worked example); a variant
//! of [`Scheme`], its entry in [`SCHEMES`] and its arms in the matches below (this file);
//! `mod` and `pub use` in `lib.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::builtin;
use crate::eoi::layer_densities;
use crate::error::SchemeError;
use crate::init::{self, WeightValues};
use crate::layer::LayerSpec;
use crate::params::{
    CriticalParams, DeltaOrthogonalParams, Density, DensityDistribution, EoiParams, FixupParams,
    IdInitParams, LsuvParams, OrthogonalParams, ReluShareParams, VarianceParams,
};
use crate::random_mask::{self, RandomMaskParams};
use crate::rng::Stream;

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
            Scheme::He(p) => plain(init::variance_scheme(self, p, spec, rng, notes)?),
            Scheme::Xavier(p) => plain(init::variance_scheme(self, p, spec, rng, notes)?),
            Scheme::Lecun(p) => plain(init::variance_scheme(self, p, spec, rng, notes)?),
            Scheme::TorchDefault => plain(crate::variance::torch_default(spec, rng)),
            Scheme::Orthogonal(p) => plain(init::orthogonal(p, spec, rng, notes)),
            Scheme::DeltaOrthogonal(p) => plain(init::delta_orthogonal(p, spec, rng, notes)?),
            Scheme::Critical(p) => plain(init::with_dense(init::critical(p, spec, rng, notes)?)),
            Scheme::Eoi(p) => {
                let d = layer_densities(std::slice::from_ref(spec), p)[0];
                let (w, b, m) = init::eoi_layer(p, d, spec, rng, notes)?;
                (WeightValues::Dense(w), b, m)
            }
            Scheme::IdInit(p) => {
                plain(init::with_dense(crate::idinit::idinit(p, spec, rng, notes)))
            }
            Scheme::ReluShare(p) => plain(init::with_dense(crate::relu_share::relu_share(
                p, spec, rng, notes,
            )?)),
            Scheme::Fixup(p) => plain(init::fixup(p, spec, rng, notes)?),
            Scheme::Lsuv(_) => plain(init::lsuv_pre_init(spec, rng, notes)),
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

/// A parameter value as a user gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Number(f64),
    Flag(bool),
    Text(String),
}

impl From<f64> for ParamValue {
    fn from(x: f64) -> Self {
        ParamValue::Number(x)
    }
}

impl From<bool> for ParamValue {
    fn from(b: bool) -> Self {
        ParamValue::Flag(b)
    }
}

impl From<&str> for ParamValue {
    fn from(t: &str) -> Self {
        ParamValue::Text(t.to_string())
    }
}

impl From<String> for ParamValue {
    fn from(t: String) -> Self {
        ParamValue::Text(t)
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Number(x) => write!(f, "{x}"),
            ParamValue::Flag(b) => write!(f, "{b}"),
            ParamValue::Text(s) => f.write_str(s),
        }
    }
}

/// A parameter name taken by one or more schemes, with the definitions that share it.
pub struct SharedParam {
    pub name: &'static str,
    pub kind: ParamKind,
    /// `(scheme, its definition of the parameter)`, in table order.
    pub schemes: Vec<(&'static str, &'static ParamDef)>,
}

/// Every parameter name of the table, in first-appearance order.
pub fn all_params() -> Vec<SharedParam> {
    let mut out: Vec<SharedParam> = Vec::new();
    for def in SCHEMES {
        for p in def.params {
            match out.iter_mut().find(|s| s.name == p.name) {
                Some(shared) => shared.schemes.push((def.name, p)),
                None => out.push(SharedParam {
                    name: p.name,
                    kind: p.kind,
                    schemes: vec![(def.name, p)],
                }),
            }
        }
    }
    out
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

/// Scheme parameters as users give them (kebab-case names), not yet tied to a scheme.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParamValues {
    values: BTreeMap<&'static str, ParamValue>,
}

impl ParamValues {
    /// Sets `name` (any scheme's parameter; `_` read as `-`), checking the value's type.
    pub fn set(&mut self, name: &str, value: ParamValue) -> Result<(), SchemeError> {
        let folded = name.replace('_', "-");
        let params = all_params();
        let Some(shared) = params.iter().find(|p| p.name == folded) else {
            return Err(SchemeError::UnknownParam {
                name: name.to_string(),
                known: params.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
            });
        };
        let value = match (shared.kind, value) {
            (ParamKind::Number, v @ ParamValue::Number(_))
            | (ParamKind::Flag, v @ ParamValue::Flag(_))
            | (ParamKind::Choice(_), v @ ParamValue::Text(_)) => v,
            (kind, v) => {
                return Err(SchemeError::ParamType {
                    param: shared.name,
                    value: v.to_string(),
                    expected: match kind {
                        ParamKind::Number => "a number",
                        ParamKind::Flag => "true or false",
                        ParamKind::Choice(_) => "a name",
                    },
                });
            }
        };
        self.values.insert(shared.name, value);
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&ParamValue> {
        self.values.get(name)
    }

    /// The names of the parameters that are set, sorted.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.values.keys().copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &ParamValue)> {
        self.values.iter().map(|(k, v)| (*k, v))
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `other`'s set parameters override ours.
    pub fn merged(&self, other: &ParamValues) -> ParamValues {
        let mut values = self.values.clone();
        values.extend(other.values.iter().map(|(k, v)| (*k, v.clone())));
        ParamValues { values }
    }

    /// Parameters among ours that `scheme` does not take.
    pub fn not_taken_by(&self, def: &SchemeDef) -> Vec<&'static str> {
        self.names().filter(|n| def.param(n).is_none()).collect()
    }

    /// Builds scheme `name` with these parameters, then validates it. With `strict`, a set
    /// parameter the scheme does not take is an error (a typo or a misapplied flag should
    /// not silently do nothing); `auto` and multi-scheme callers pass `strict = false` and
    /// the scheme takes what applies to it.
    pub fn build(&self, name: &str, strict: bool) -> Result<Scheme, SchemeError> {
        let def = lookup(name)?;
        let unused = self.not_taken_by(def);
        if strict && !unused.is_empty() {
            return Err(SchemeError::NotApplicable {
                scheme: def.name,
                params: unused.iter().map(|s| s.to_string()).collect(),
            });
        }
        for p in def.params {
            if let (ParamKind::Choice(options), Some(ParamValue::Text(v))) =
                (p.kind, self.values.get(p.name))
                && !options.contains(&v.as_str())
            {
                return Err(SchemeError::BadChoice {
                    param: p.name,
                    value: v.clone(),
                    choices: options.join(", "),
                });
            }
        }
        let scheme = (def.build)(&Given {
            scheme: def.name,
            values: self,
        })?;
        scheme.validate()?;
        Ok(scheme)
    }
}

/// What a [`SchemeDef::build`] reads: the parameters given for one scheme.
pub struct Given<'a> {
    scheme: &'static str,
    values: &'a ParamValues,
}

impl Given<'_> {
    pub fn number(&self, name: &str) -> Option<f64> {
        match self.values.get(name) {
            Some(ParamValue::Number(x)) => Some(*x),
            _ => None,
        }
    }

    pub fn flag(&self, name: &str) -> Option<bool> {
        match self.values.get(name) {
            Some(ParamValue::Flag(b)) => Some(*b),
            _ => None,
        }
    }

    /// The value of choice parameter `name`, mapped through `options`.
    pub fn choice<T: Copy>(
        &self,
        name: &'static str,
        options: &[(&str, T)],
    ) -> Result<Option<T>, SchemeError> {
        let Some(ParamValue::Text(v)) = self.values.get(name) else {
            return Ok(None);
        };
        options
            .iter()
            .find(|(n, _)| n == v)
            .map(|(_, t)| Some(*t))
            .ok_or_else(|| SchemeError::BadChoice {
                param: name,
                value: v.clone(),
                choices: options
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A gain (`> 0`, finite).
    pub fn gain(&self, name: &str) -> Result<Option<crate::Gain>, SchemeError> {
        self.number(name).map(crate::Gain::new).transpose()
    }

    /// `--density` checked as a [`Density`] of this scheme.
    pub fn density(&self) -> Result<Option<Density>, SchemeError> {
        self.number("density")
            .map(|d| Density::of_scheme(self.scheme, d))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
