//! reinit-candle
mod data;
mod error;
mod executor;
pub mod ops;
mod plot;
pub mod probes;
mod train;
mod verify;

pub use data::{LossKind, Rng, Split, Task, TaskSize, digits_path, load_digits};
pub use error::{ExecError, OpError, UnsupportedOp};
pub use executor::{Executor, InputSpec, Layer, Mode, Outputs, Param};
pub use plot::write_plots;
pub use probes::{JacobianStats, LayerSignal, Signal};
pub use train::{
    Heldout, Mask, Optimizer, STALL_RATIO, TrainConfig, TrainReport, Verdict, evaluate, train,
    train_on,
};
pub use verify::{RunReport, VerifyConfig, VerifyReport, render_table, verify, write_json};
