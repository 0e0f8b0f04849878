//! A rewrite as a user asks for it — the CLI's flags, the Python package's
//! keywords — turned into what the library runs: [`UserRequest`] →
//! [`Request::from_user`] → plan options, seed, save options and targets.
//! Both callers build their request here, so the same arguments give the
//! same checks, the same error messages (naming the CLI flags, e.g.
//! `--density`) and byte-identical files.

use std::path::{Path, PathBuf};

use regex::Regex;
use reinit_onnx::SaveOptions;
use reinit_schemes::{NormOptions, StreamVersion};

use crate::calibration::Calibration;
use crate::error::Error;
use crate::params::SchemeParams;
use crate::plan::PlanOptions;
use crate::rewrite::DirectoryOutput;

/// The arguments of `reinit apply` (and of Python's `reinit.apply`) as given.
#[derive(Debug, Clone)]
pub struct UserRequest {
    /// A scheme name or `auto`.
    pub scheme: String,
    /// `None`: drawn by [`random_seed`] (and recorded).
    pub seed: Option<u64>,
    /// `--stream`: `v1` or `v2`; `None` is the default stream (v2).
    pub stream: Option<String>,
    pub params: SchemeParams,
    /// `--rules FILE`.
    pub rules_file: Option<PathBuf>,
    /// Rules given inline (TOML text, the format of the file).
    pub rules_toml: Option<String>,
    pub only: Option<String>,
    pub exclude: Option<String>,
    /// `keep` or a scheme name.
    pub fallback: String,
    pub zero_init_last_gamma: bool,
    pub reset_norms: bool,
    /// `--calibration-data FILE` (.npy / .npz).
    pub calibration_file: Option<PathBuf>,
    /// Calibration samples given as arrays (Python).
    pub calibration: Calibration,
    pub output: Option<PathBuf>,
    pub in_place: bool,
    pub force: bool,
    pub dry_run: bool,
    pub mask_out: Option<PathBuf>,
}

impl Default for UserRequest {
    fn default() -> Self {
        UserRequest {
            scheme: String::new(),
            seed: None,
            stream: None,
            params: SchemeParams::default(),
            rules_file: None,
            rules_toml: None,
            only: None,
            exclude: None,
            fallback: "keep".into(),
            zero_init_last_gamma: false,
            reset_norms: false,
            calibration_file: None,
            calibration: Calibration::Task,
            output: None,
            in_place: false,
            force: false,
            dry_run: false,
            mask_out: None,
        }
    }
}

/// A checked request: what to plan, with which seed, and how to save.
#[derive(Debug, Clone)]
pub struct Request {
    pub options: PlanOptions,
    pub seed: u64,
    pub save: SaveOptions,
    /// `-o` / `output`.
    pub output: Option<PathBuf>,
    pub in_place: bool,
    pub dry_run: bool,
    pub mask_out: Option<PathBuf>,
}

impl Request {
    /// Checks `user` (scheme and parameters against the scheme table, the
    /// fallback, rules, regexes, calibration data, exclusive options) and
    /// builds the request; every failure is a usage error naming the flag.
    pub fn from_user(user: &UserRequest) -> Result<Request, Error> {
        if user.scheme.is_empty() {
            return Err(Error::Usage("--scheme is required".into()));
        }
        if user.in_place && user.output.is_some() {
            return Err(Error::Usage(
                "--in-place and --output exclude each other".into(),
            ));
        }
        let regex = |flag: &str, pattern: &Option<String>| {
            pattern
                .as_deref()
                .map(|p| Regex::new(p).map_err(|e| Error::Usage(format!("--{flag} '{p}': {e}"))))
                .transpose()
        };
        let fallback = match user.fallback.as_str() {
            "keep" => None,
            other => {
                user.params.scheme(other, false)?;
                Some(other.to_string())
            }
        };
        let has_rules = user.rules_file.is_some() || user.rules_toml.is_some();
        if user.scheme != "auto" {
            // A parameter the scheme does not take is a usage error, unless
            // rules may give it to another scheme.
            user.params.scheme(&user.scheme, !has_rules)?;
        }
        let rules = match (&user.rules_file, &user.rules_toml) {
            (Some(_), Some(_)) => {
                return Err(Error::Usage(
                    "give rules as a file or as TOML text, not both".into(),
                ));
            }
            (Some(path), None) => crate::load_rules(path)?,
            (None, Some(text)) => crate::parse_rules(text).map_err(|reason| Error::Rules {
                path: PathBuf::from("<rules>"),
                reason,
            })?,
            (None, None) => Vec::new(),
        };
        let calibration = match (&user.calibration_file, &user.calibration) {
            (Some(_), Calibration::Samples(_)) => {
                return Err(Error::Usage(
                    "give calibration data as a file or as arrays, not both".into(),
                ));
            }
            (Some(path), _) => Calibration::load(path)?,
            (None, given) => given.clone(),
        };
        Ok(Request {
            options: PlanOptions {
                scheme: user.scheme.clone(),
                params: user.params.clone(),
                rules,
                only: regex("only", &user.only)?,
                exclude: regex("exclude", &user.exclude)?,
                fallback,
                norms: NormOptions {
                    zero_init_last_gamma: user.zero_init_last_gamma,
                    reset: user.reset_norms,
                },
                calibration,
                stream: match &user.stream {
                    None => StreamVersion::default(),
                    Some(s) => s
                        .parse()
                        .map_err(|e: String| Error::Usage(format!("--stream: {e}")))?,
                },
            },
            seed: user.seed.unwrap_or_else(random_seed),
            save: SaveOptions {
                overwrite: user.force,
                in_place: user.in_place,
                data_file: None,
            },
            output: user.output.clone(),
            in_place: user.in_place,
            dry_run: user.dry_run,
            mask_out: user.mask_out.clone(),
        })
    }

    /// Where the model at `input` is written, when the request says: nowhere
    /// for a dry run, over the input with `--in-place`, else `--output`;
    /// `None` when it does not say (the CLI then picks
    /// [`default_output`], Python returns the bytes).
    pub fn output_for(&self, input: &Path) -> Option<PathBuf> {
        if self.dry_run {
            None
        } else if self.in_place {
            Some(input.to_path_buf())
        } else {
            self.output.clone()
        }
    }

    /// Where the files of directory `dir` are written: nowhere for a dry
    /// run, over the inputs with `--in-place`, into `--output`, else into
    /// `<dir>.<scheme>` beside it.
    pub fn directory_output(&self, dir: &Path) -> DirectoryOutput {
        match (&self.output, self.in_place, self.dry_run) {
            (_, _, true) => DirectoryOutput::DryRun,
            (_, true, false) => DirectoryOutput::InPlace,
            (Some(out), false, false) => DirectoryOutput::Into(out.clone()),
            (None, false, false) => DirectoryOutput::beside(dir, &self.options.scheme),
        }
    }
}

/// The CLI's default output: `<stem>.<scheme>.onnx` beside the input.
pub fn default_output(input: &Path, scheme: &str) -> Result<PathBuf, Error> {
    let stem = input
        .file_stem()
        .ok_or_else(|| Error::Usage(format!("{}: not a file name", input.display())))?
        .to_string_lossy();
    Ok(input.with_file_name(format!("{stem}.{scheme}.onnx")))
}

/// A seed from the clock and process id; recorded in the report and the
/// file, so the run can be repeated.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) % 1_000_000_007
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(scheme: &str) -> UserRequest {
        UserRequest {
            scheme: scheme.into(),
            seed: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn a_parameter_the_scheme_does_not_take_is_a_usage_error() {
        let mut u = user("xavier");
        u.params.set("fan-mode", "fan_out").unwrap();
        let err = Request::from_user(&u).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err}");
        assert!(err.to_string().contains("fan-mode"), "{err}");
        // With rules, another scheme may take it.
        u.rules_toml = Some("[[rule]]\npattern = \"x\"\nscheme = \"he\"\n".into());
        assert!(Request::from_user(&u).is_ok());
    }

    #[test]
    fn exclusive_options_and_bad_regexes_are_usage_errors() {
        let mut u = user("he");
        u.in_place = true;
        u.output = Some("o.onnx".into());
        assert!(matches!(Request::from_user(&u), Err(Error::Usage(_))));
        let mut u = user("he");
        u.only = Some("(".into());
        let err = Request::from_user(&u).unwrap_err();
        assert!(err.to_string().contains("--only"), "{err}");
        let mut u = user("he");
        u.fallback = "no-such-scheme".into();
        assert!(matches!(Request::from_user(&u), Err(Error::Usage(_))));
    }

    #[test]
    fn outputs_follow_the_flags() {
        let mut u = user("he");
        let r = Request::from_user(&u).unwrap();
        assert_eq!(r.output_for(Path::new("m.onnx")), None);
        assert_eq!(
            r.directory_output(Path::new("/x/d")),
            DirectoryOutput::Into("/x/d.he".into())
        );
        u.in_place = true;
        let r = Request::from_user(&u).unwrap();
        assert_eq!(r.output_for(Path::new("m.onnx")), Some("m.onnx".into()));
        assert_eq!(r.directory_output(Path::new("d")), DirectoryOutput::InPlace);
        u.dry_run = true;
        let r = Request::from_user(&u).unwrap();
        assert_eq!(r.output_for(Path::new("m.onnx")), None);
        assert_eq!(r.directory_output(Path::new("d")), DirectoryOutput::DryRun);
        assert_eq!(
            default_output(Path::new("a/m.onnx"), "he").unwrap(),
            PathBuf::from("a/m.he.onnx")
        );
    }
}
