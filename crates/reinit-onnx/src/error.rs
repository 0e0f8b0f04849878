use std::path::PathBuf;

/// Everything that can go wrong reading or writing a model. Every variant names
/// the file and, where there is one, the tensor, so a user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid ONNX model: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: tensor '{tensor}': {reason}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    #[error("{path}: tensor '{tensor}': unsafe external data '{location}': {reason}")]
    UnsafeExternal {
        path: PathBuf,
        tensor: String,
        location: String,
        reason: String,
    },
    #[error("{path}: refusing to write: {reason}")]
    Refused { path: PathBuf, reason: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// True when the input was refused for safety (external-data paths, bounds),
    /// as opposed to being unreadable or malformed. The CLI maps this to its own
    /// exit code.
    pub fn is_unsafe_input(&self) -> bool {
        matches!(self, Error::UnsafeExternal { .. })
    }

    /// True for failures of the file system rather than of the model's content.
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io { .. } | Error::Refused { .. })
    }
}
