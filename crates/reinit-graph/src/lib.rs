//! # reinit-graph — what each weight of an ONNX model is
//!
//! [`analyze`] turns a loaded [`reinit_onnx::Model`] into an [`Analysis`]: the
//! weight layers (Gemm, MatMul, Conv 1-3D incl. grouped/depthwise, ConvTranspose)
//! with their canonical forward-matrix view, PyTorch-convention fans and delta
//! tap; the first nonlinearity after each layer; residual blocks with branch and
//! shortcut layers; norms, embeddings, shared weights; and what was skipped.
//!
//! It never changes a weight and never chooses a scheme (that is the `reinit`
//! facade and `reinit-schemes`); it never fails on an odd graph — what it does
//! not understand is listed in [`Analysis::unknown_ops`], [`Analysis::skipped`]
//! and [`Analysis::warnings`].
//!
//! ```no_run
//! let model = reinit_onnx::Model::load("model.onnx")?;
//! let analysis = reinit_graph::analyze(&model);
//! println!("{}", analysis.render_table());
//! # Ok::<(), reinit_onnx::Error>(())
//! ```

mod analyze;
mod graph;
mod layout;
pub mod ops;
mod report;
mod types;

pub use analyze::analyze;
pub use layout::delta_tap;
pub use ops::{Domain, LayerOp, Op, OpClass, StopReason};
pub use types::*;
