//! Scheme parameters as users give them (CLI flags, `--rules` TOML keys, Python keywords,
//! `verify`'s JSON), and their translation into a typed [`Scheme`].
//!
//! Nothing here lists a scheme or a parameter: the flags, their types and help, the
//! accepted keys and the "does not apply" check all come from the scheme table
//! ([`reinit_schemes::SCHEMES`]).

use std::collections::BTreeMap;

use clap::{Arg, ArgMatches, Command};
use reinit_schemes::{ParamKind, ParamValue, ParamValues, Scheme, SharedParam, all_params};
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The set parameters (kebab-case names); an absent one means "the scheme's default".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchemeParams(ParamValues);

impl SchemeParams {
    /// Sets `name` (`_` read as `-`); an unknown name or a value of the wrong type is a
    /// usage error.
    pub fn set(&mut self, name: &str, value: impl Into<ParamValue>) -> Result<(), Error> {
        self.0.set(name, value.into()).map_err(usage)
    }

    /// `self` with `name` set (see [`SchemeParams::set`]).
    pub fn with(mut self, name: &str, value: impl Into<ParamValue>) -> Result<Self, Error> {
        self.set(name, value)?;
        Ok(self)
    }

    pub fn values(&self) -> &ParamValues {
        &self.0
    }

    /// `other`'s set parameters override ours.
    pub fn merged(&self, other: &SchemeParams) -> SchemeParams {
        SchemeParams(self.0.merged(&other.0))
    }

    /// Builds the scheme `name` with these parameters. With `strict`, a parameter the
    /// scheme does not take is a usage error (a typo should not silently do nothing);
    /// `auto`, rules and multi-scheme `verify` pass `strict = false`.
    pub fn scheme(&self, name: &str, strict: bool) -> Result<Scheme, Error> {
        self.0.build(name, strict).map_err(usage)
    }

    /// For callers that build several schemes from one parameter set (`verify`): every set
    /// parameter must apply to at least one of `schemes` (`auto` takes any).
    pub fn check_applies_to_some(&self, schemes: &[String]) -> Result<(), Error> {
        if schemes.iter().any(|s| s == "auto") {
            return Ok(());
        }
        if schemes.is_empty() && !self.0.is_empty() {
            return Err(Error::Usage(
                "scheme parameters need --schemes (the stored weights take none)".into(),
            ));
        }
        let mut unused: Vec<&str> = self.0.names().collect();
        for name in schemes {
            let def = reinit_schemes::lookup(name).map_err(usage)?;
            unused.retain(|p| def.param(p).is_none());
        }
        if unused.is_empty() {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "--{} does not apply to any of {} (see `reinit schemes`)",
                unused.join(", --"),
                schemes.join(", ")
            )))
        }
    }
}

fn usage(e: reinit_schemes::SchemeError) -> Error {
    Error::Usage(e.to_string())
}

// ---------------------------------------------------------------- serde (rules, JSON)

/// A value as TOML or JSON gives it; its type is checked against the table on insertion.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Flag(bool),
    Number(f64),
    Text(String),
}

impl Serialize for SchemeParams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (name, value) in self.0.iter() {
            match value {
                ParamValue::Number(x) => map.serialize_entry(name, x)?,
                ParamValue::Flag(b) => map.serialize_entry(name, b)?,
                ParamValue::Text(t) => map.serialize_entry(name, t)?,
            }
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SchemeParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, RawValue>::deserialize(d)?;
        let mut params = SchemeParams::default();
        for (name, value) in raw {
            let value = match value {
                RawValue::Flag(b) => ParamValue::Flag(b),
                RawValue::Number(x) => ParamValue::Number(x),
                RawValue::Text(t) => ParamValue::Text(t),
            };
            params
                .0
                .set(&name, value)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(params)
    }
}

// ---------------------------------------------------------------- clap (flags)

/// One flag per parameter name of the table, typed by its kind, with help gathered from
/// every scheme that takes it.
impl clap::Args for SchemeParams {
    fn augment_args(cmd: Command) -> Command {
        all_params()
            .iter()
            .fold(cmd, |cmd, shared| cmd.arg(flag(shared)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

fn flag(shared: &SharedParam) -> Arg {
    let arg = Arg::new(shared.name)
        .long(shared.name)
        .help(flag_help(shared))
        .help_heading("Scheme parameters (`reinit schemes` lists them per scheme)");
    match shared.kind {
        ParamKind::Number => arg.value_name("X").value_parser(clap::value_parser!(f64)),
        ParamKind::Flag => arg
            .value_name("true|false")
            .value_parser(clap::value_parser!(bool)),
        ParamKind::Choice(_) => arg.value_name("NAME"),
    }
}

/// `help [schemes]` for each distinct help text, then the defaults, e.g.
/// `fixed gain (> 0) [he, …]. Default: 1 (xavier, lecun), …`.
fn flag_help(shared: &SharedParam) -> String {
    fn grouped<'a>(
        items: impl Iterator<Item = (&'static str, &'a str)>,
    ) -> Vec<(&'a str, Vec<&'static str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
        for (scheme, text) in items {
            match out.iter_mut().find(|(t, _)| *t == text) {
                Some((_, schemes)) => schemes.push(scheme),
                None => out.push((text, vec![scheme])),
            }
        }
        out
    }
    let helps = grouped(shared.schemes.iter().map(|(s, p)| (*s, p.help)));
    let defaults = grouped(shared.schemes.iter().map(|(s, p)| (*s, p.default)));
    let mut text = helps
        .iter()
        .map(|(h, s)| format!("{h} [{}]", s.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    if let ParamKind::Choice(choices) = shared.kind {
        text.push_str(&format!(": {}", choices.join(" | ")));
    }
    let defaults = if defaults.len() == 1 {
        defaults[0].0.to_string()
    } else {
        defaults
            .iter()
            .map(|(d, s)| format!("{d} ({})", s.join(", ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("{text}. Default: {defaults}")
}

impl clap::FromArgMatches for SchemeParams {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut params = SchemeParams::default();
        params.update_from_arg_matches(m)?;
        Ok(params)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for shared in all_params() {
            let value = match shared.kind {
                ParamKind::Number => m
                    .get_one::<f64>(shared.name)
                    .map(|x| ParamValue::Number(*x)),
                ParamKind::Flag => m.get_one::<bool>(shared.name).map(|b| ParamValue::Flag(*b)),
                ParamKind::Choice(_) => m
                    .get_one::<String>(shared.name)
                    .map(|t| ParamValue::Text(t.clone())),
            };
            if let Some(value) = value {
                self.0.set(shared.name, value).map_err(|e| {
                    clap::Error::raw(clap::error::ErrorKind::ValueValidation, e.to_string())
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        params: SchemeParams,
    }

    #[test]
    fn parameters_reach_the_scheme() {
        let p = SchemeParams::default().with("density", 0.2).unwrap();
        match p.scheme("eoi", true).unwrap() {
            Scheme::Eoi(e) => assert_eq!(e.density.get(), 0.2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn misapplied_or_bad_parameters_are_usage_errors() {
        let p = SchemeParams::default().with("density", 0.2).unwrap();
        assert!(matches!(p.scheme("he", true), Err(Error::Usage(m)) if m.contains("--density")));
        assert!(p.scheme("he", false).is_ok());
        let p = SchemeParams::default().with("density", 1.5).unwrap();
        assert!(matches!(p.scheme("eoi", true), Err(Error::Usage(_))));
        assert!(matches!(
            SchemeParams::default().scheme("nope", true),
            Err(Error::Usage(_))
        ));
        // issue 15 item 9: xavier has no fan mode.
        let p = SchemeParams::default().with("fan_mode", "fan-out").unwrap();
        assert!(
            matches!(p.scheme("xavier", true), Err(Error::Usage(m)) if m == "--fan-mode does not apply to scheme xavier (see `reinit schemes`)")
        );
    }

    #[test]
    fn every_table_parameter_is_a_flag() {
        let cli = Cli::try_parse_from([
            "x",
            "--density",
            "0.25",
            "--more-nonzeros",
            "true",
            "--fan-mode",
            "fan-out",
            "--base",
            "orthogonal",
        ])
        .unwrap();
        let names: Vec<_> = cli.params.values().names().collect();
        assert_eq!(names, ["base", "density", "fan-mode", "more-nonzeros"]);
        let cmd = <Cli as clap::CommandFactory>::command();
        for shared in all_params() {
            assert!(
                cmd.get_arguments()
                    .any(|a| a.get_long() == Some(shared.name)),
                "--{}",
                shared.name
            );
        }
        assert!(Cli::try_parse_from(["x", "--density", "dense"]).is_err());
    }

    #[test]
    fn serde_keys_are_the_table_and_round_trip() {
        let p: SchemeParams = toml::from_str("tau = 1\nsubmatrix = 'orthogonal'\n").unwrap();
        assert_eq!(p.values().get("tau"), Some(&ParamValue::Number(1.0)));
        let back: SchemeParams = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        let e = toml::from_str::<SchemeParams>("sigma = 1").unwrap_err();
        assert!(e.to_string().contains("unknown scheme parameter `sigma`"));
        assert!(toml::from_str::<SchemeParams>("tau = 'big'").is_err());
    }

    #[test]
    fn verify_parameters_apply_to_some_scheme() {
        let p = SchemeParams::default().with("density", 0.1).unwrap();
        assert!(
            p.check_applies_to_some(&["eoi".into(), "random-mask".into()])
                .is_ok()
        );
        assert!(p.check_applies_to_some(&["he".into()]).is_err());
    }
}
