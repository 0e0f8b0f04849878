//! reinit-candle
mod error;
mod executor;
pub mod ops;

pub use error::{ExecError, OpError, UnsupportedOp};
pub use executor::{Executor, InputSpec, Layer, Mode, Outputs, Param};
