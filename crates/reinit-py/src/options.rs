//! Python keyword arguments → [`PlanOptions`], built exactly as the CLI builds
//! them from its flags (`crates/reinit/src/cli/apply.rs`, `plan_options`), so
//! the same seed and parameters give byte-identical files and the same error
//! messages (which name the CLI flags, e.g. `--density`).

use std::path::PathBuf;

use regex::Regex;
use reinit::{Calibration, Error, PlanOptions, SchemeParams};
use reinit_schemes::NormOptions;

use crate::Source;

/// The Python `apply` arguments (the CLI's `ApplyArgs` less its output knobs).
#[derive(Debug, Clone, Default)]
pub struct ApplyArgs {
    pub scheme: String,
    pub seed: Option<u64>,
    pub output: Option<PathBuf>,
    pub params: SchemeParams,
    /// `--rules FILE`.
    pub rules: Option<PathBuf>,
    /// Rules given inline (TOML text, the same format as the file).
    pub rules_toml: Option<String>,
    pub only: Option<String>,
    pub exclude: Option<String>,
    /// `keep` or a scheme name.
    pub fallback: String,
    pub zero_init_last_gamma: bool,
    /// `--reset-norms`.
    pub reset_norms: bool,
    /// `--calibration-data`, as arrays.
    pub calibration: Calibration,
    pub force: bool,
    pub in_place: bool,
    pub dry_run: bool,
    pub mask_out: Option<PathBuf>,
}

impl ApplyArgs {
    /// The CLI's `plan_options`, line for line.
    pub fn plan_options(&self) -> Result<PlanOptions, Error> {
        let scheme = self.scheme.as_str();
        let regex = |flag: &str, pattern: &Option<String>| {
            pattern
                .as_deref()
                .map(|p| Regex::new(p).map_err(|e| Error::Usage(format!("--{flag} '{p}': {e}"))))
                .transpose()
        };
        let fallback = match self.fallback.as_str() {
            "keep" => None,
            other => {
                self.params.scheme(other, false)?;
                Some(other.to_string())
            }
        };
        let has_rules = self.rules.is_some() || self.rules_toml.is_some();
        if scheme != "auto" {
            self.params.scheme(scheme, !has_rules)?;
        }
        let rules = match (&self.rules, &self.rules_toml) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "give rules as a file or as TOML text, not both".into(),
                ));
            }
            (Some(path), None) => reinit::load_rules(path)?,
            (None, Some(text)) => reinit::parse_rules(text).map_err(|reason| Error::Rules {
                path: PathBuf::from("<rules>"),
                reason,
            })?,
            (None, None) => Vec::new(),
        };
        Ok(PlanOptions {
            scheme: scheme.to_string(),
            params: self.params.clone(),
            rules,
            only: regex("only", &self.only)?,
            exclude: regex("exclude", &self.exclude)?,
            fallback,
            norms: NormOptions {
                zero_init_last_gamma: self.zero_init_last_gamma,
                reset: self.reset_norms,
            },
            calibration: self.calibration.clone(),
        })
    }

    /// Where a directory's files are written (the library's directory mode,
    /// as the CLI chooses it): `output`, over the inputs with `in_place`,
    /// nowhere for a dry run, else `<dir>.<scheme>` beside it.
    pub fn directory_output(
        &self,
        dir: &std::path::Path,
    ) -> Result<reinit::DirectoryOutput, Error> {
        use reinit::DirectoryOutput;
        if self.in_place && self.output.is_some() {
            return Err(Error::Usage(
                "--in-place and --output exclude each other".into(),
            ));
        }
        Ok(match (&self.output, self.in_place, self.dry_run) {
            (_, _, true) => DirectoryOutput::DryRun,
            (_, true, false) => DirectoryOutput::InPlace,
            (Some(out), false, false) => DirectoryOutput::Into(out.clone()),
            (None, false, false) => DirectoryOutput::beside(dir, &self.scheme),
        })
    }

    /// Where the model is written: `output`, or the input itself with
    /// `in_place`; nothing for a dry run or when neither is given (the Python
    /// API then returns the rewritten model instead of choosing a file name).
    pub fn output_path(&self, src: &Source) -> Result<Option<PathBuf>, Error> {
        if self.in_place && self.output.is_some() {
            return Err(Error::Usage(
                "--in-place and --output exclude each other".into(),
            ));
        }
        if self.dry_run {
            return Ok(None);
        }
        if self.in_place {
            return match src {
                Source::Path(p) => Ok(Some(p.clone())),
                Source::Bytes(_) => Err(Error::Usage(
                    "in_place needs a model given as a path".into(),
                )),
            };
        }
        if let Some(output) = &self.output {
            if output.is_dir() {
                return Err(Error::Usage(format!(
                    "{}: output is a directory; give a file name",
                    output.display()
                )));
            }
            return Ok(Some(output.clone()));
        }
        if let Source::Path(p) = src
            && p.is_dir()
        {
            return Err(Error::Usage(format!(
                "{}: is a directory; directory mode (`run_directory`) rewrites its files, one report each{}",
                p.display(),
                ""
            )));
        }
        Ok(None)
    }
}

/// A seed from the clock and process id, as the CLI draws it; recorded in the
/// report and the file so the run can be repeated.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_007
}
