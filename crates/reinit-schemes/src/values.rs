//! Scheme parameters as users give them — CLI flags, `--rules` keys, Python keywords,
//! JSON — checked against the scheme table ([`SCHEMES`]) and turned into a [`Scheme`]:
//! the value types, the parameter names the table declares (shared by several schemes
//! with one kind), and [`Given`], what a scheme's builder reads.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::SchemeError;
use crate::params::Density;
use crate::table::{ParamDef, ParamKind, SCHEMES, Scheme, SchemeDef, lookup};

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
    pub(crate) scheme: &'static str,
    pub(crate) values: &'a ParamValues,
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
