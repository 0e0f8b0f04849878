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
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Rules { .. } => exit::USAGE,
            Error::Load(e) if e.is_unsafe_input() => exit::UNSAFE_INPUT,
            Error::Load(_) => exit::INVALID_INPUT,
            Error::Save(_) => exit::IO,
            Error::Scheme { .. } => exit::INVALID_INPUT,
            Error::Io { .. } => exit::IO,
            Error::Unsupported(_) => exit::UNSUPPORTED,
        }
    }
}
