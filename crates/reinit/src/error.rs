//! The facade's error type and the CLI exit code each kind maps to.

use std::path::PathBuf;

/// Process exit codes (documented in README.md, "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    /// An unexpected internal failure (a bug).
    pub const INTERNAL: i32 = 1;
    /// Bad command line: unknown scheme, bad parameter, conflicting flags.
    pub const USAGE: i32 = 2;
    /// The input could not be read or is not a valid ONNX model.
    pub const INVALID_INPUT: i32 = 3;
    /// The input was refused as unsafe (external-data paths, declared sizes).
    pub const UNSAFE_INPUT: i32 = 4;
    /// Writing the output failed, or it would overwrite a file without permission.
    pub const IO: i32 = 5;
    /// The model uses something this command cannot handle (unsupported ops in verify).
    pub const UNSUPPORTED: i32 = 6;
    /// The model failed while the candle executor ran it (`verify`): an op failed
    /// at run time. The message names the node.
    pub const RUNTIME: i32 = 7;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    /// Reading or decoding an input model.
    #[error(transparent)]
    Load(reinit_onnx::Error),
    /// Writing an output model.
    #[error(transparent)]
    Save(reinit_onnx::Error),
    #[error("{path}: {reason}")]
    Rules { path: PathBuf, reason: String },
    #[error("weight '{tensor}' ({scheme}): {source}")]
    Scheme {
        tensor: String,
        scheme: String,
        #[source]
        source: Box<reinit_schemes::SchemeError>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
    /// The candle executor or trainer failed (`verify`); the exit code says
    /// whether it refused the model or failed while running it.
    #[cfg(feature = "verify")]
    #[error("{}", exec_message(.0))]
    Exec(#[from] reinit_candle::ExecError),
    /// A broken invariant: a bug, never the input's fault.
    #[error("internal error (a bug, please report it): {0}")]
    Internal(String),
}

#[cfg(feature = "verify")]
fn exec_message(e: &reinit_candle::ExecError) -> String {
    match e {
        reinit_candle::ExecError::Unsupported(_) => e.to_string(),
        other => format!("verify: {other}"),
    }
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Rules { .. } => exit::USAGE,
            Error::Load(e) if e.is_unsafe_input() => exit::UNSAFE_INPUT,
            Error::Load(_) => exit::INVALID_INPUT,
            Error::Save(_) => exit::IO,
            Error::Scheme { source, .. } => match **source {
                // A linear-algebra failure on drawn values is ours, not the input's.
                reinit_schemes::SchemeError::Numerical { .. } => exit::INTERNAL,
                _ => exit::INVALID_INPUT,
            },
            Error::Io { .. } => exit::IO,
            Error::Unsupported(_) => exit::UNSUPPORTED,
            #[cfg(feature = "verify")]
            Error::Exec(e) => {
                use reinit_candle::ExecError as E;
                match e {
                    // Ops without a kernel, or a model the trainer cannot set a
                    // task for (dynamic sample shape, token input without classes).
                    E::Unsupported(_) | E::Invalid(_) => exit::UNSUPPORTED,
                    // A setting that does not fit the model (--input-shape, --input-q).
                    E::Usage(_) => exit::USAGE,
                    // A run estimated not to fit the memory it may use.
                    E::TooLarge(_) => exit::UNSUPPORTED,
                    E::Onnx(e) if e.is_unsafe_input() => exit::UNSAFE_INPUT,
                    E::Onnx(_) => exit::INVALID_INPUT,
                    E::Io(_) => exit::IO,
                    E::Node { .. } | E::Candle(_) | E::MissingInput(_) | E::MissingValue(_) => {
                        exit::RUNTIME
                    }
                }
            }
            Error::Internal(_) => exit::INTERNAL,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bugs_exit_1_and_refusals_2_to_6() {
        let numerical = Error::Scheme {
            tensor: "w".into(),
            scheme: "orthogonal".into(),
            source: Box::new(reinit_schemes::SchemeError::Numerical {
                scheme: "orthogonal",
                reason: "QR failed".into(),
            }),
        };
        assert_eq!(numerical.exit_code(), exit::INTERNAL);
        let bad_param = Error::Scheme {
            tensor: "w".into(),
            scheme: "eoi".into(),
            source: Box::new(reinit_schemes::SchemeError::InvalidParam {
                scheme: "eoi",
                param: "density",
                value: "0".into(),
                reason: "must be in (0, 1]".into(),
            }),
        };
        assert_eq!(bad_param.exit_code(), exit::INVALID_INPUT);
        assert_eq!(Error::Internal("x".into()).exit_code(), exit::INTERNAL);
    }

    #[cfg(feature = "verify")]
    #[test]
    fn executor_refusals_exit_6_and_run_time_failures_7() {
        use reinit_candle::ExecError;
        let unsupported = Error::Exec(ExecError::Unsupported(Vec::new()));
        assert_eq!(unsupported.exit_code(), exit::UNSUPPORTED);
        let failed = Error::Exec(ExecError::Node {
            node: "n".into(),
            op: "Conv".into(),
            message: "shape mismatch".into(),
        });
        assert_eq!(failed.exit_code(), exit::RUNTIME);
        assert!(failed.to_string().starts_with("verify: node `n`"));
        assert_eq!(
            Error::Exec(ExecError::Invalid("dynamic dim".into())).exit_code(),
            exit::UNSUPPORTED
        );
    }
}
