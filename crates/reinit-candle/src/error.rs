//! Errors of the executor, the trainer and the report writers.

use std::fmt;

/// One op the executor cannot run, with every node that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    pub op_type: String,
    pub domain: String,
    pub nodes: Vec<String>,
    /// Why it cannot run, where that is more than "not implemented"
    /// (integer-only quantized arithmetic).
    pub reason: Option<String>,
}

impl fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = if self.domain.is_empty() {
            String::new()
        } else {
            format!("{}::", self.domain)
        };
        let shown: Vec<&str> = self.nodes.iter().take(3).map(String::as_str).collect();
        let more = self.nodes.len().saturating_sub(3);
        write!(f, "{domain}{} (nodes: {}", self.op_type, shown.join(", "))?;
        if more > 0 {
            write!(f, " and {more} more")?;
        }
        write!(f, ")")?;
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Raised by [`crate::Executor::new`] before anything runs: every op of the
    /// graph (subgraphs included) that has no implementation, listed at once.
    #[error("the graph uses {} unsupported op(s): {}", .0.len(), list(.0))]
    Unsupported(Vec<UnsupportedOp>),
    #[error("node `{node}` ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    #[error("graph input `{0}` was not supplied")]
    MissingInput(String),
    #[error("value `{0}` is not produced by the graph")]
    MissingValue(String),
    #[error("model: {0}")]
    Onnx(#[from] reinit_onnx::Error),
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
    /// A setting the caller gave does not fit the model (`--input-shape`,
    /// `--input-q`): a usage error, not a model problem.
    #[error("{0}")]
    Usage(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The run would need more memory than the process may use (estimated
    /// before allocating; see `memory`).
    #[error("out of memory budget: {0}")]
    TooLarge(String),
}

fn list(ops: &[UnsupportedOp]) -> String {
    ops.iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error an op function returns; the executor adds the node name and op.
#[derive(Debug)]
pub struct OpError(pub String);

impl From<candle_core::Error> for OpError {
    fn from(e: candle_core::Error) -> Self {
        OpError(e.to_string())
    }
}

impl From<String> for OpError {
    fn from(s: String) -> Self {
        OpError(s)
    }
}

impl From<&str> for OpError {
    fn from(s: &str) -> Self {
        OpError(s.to_string())
    }
}
