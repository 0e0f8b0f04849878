//! # reinit-onnx — byte-faithful ONNX model I/O
//!
//! This crate owns reading and writing ONNX files: the protobuf types (generated
//! from the vendored proto2 `onnx-ml.proto`, IR 14), the tensor codec for
//! f32/f64/f16/bf16 in every storage field, external data behind safe paths and a
//! memory map, and atomic saves that change nothing but the tensors you edited.
//!
//! It never decides *which* weights change — that is `reinit-graph` and the
//! `reinit` facade. It never re-encodes a whole model: [`Model::save`] splices new
//! tensor payloads into the original bytes (see `ARCHITECTURE.md`, "Fidelity"), so
//! fields unknown to our schema survive and an unedited model saves byte-identically.
//!
//! ```no_run
//! use reinit_onnx::{Model, Edits, SaveOptions};
//! let model = Model::load("model.onnx")?;
//! let id = model.find_tensor("fc.weight").expect("no such tensor");
//! let mut values = model.read_f64(id)?;
//! values.iter_mut().for_each(|v| *v *= 0.5);
//! let mut edits = Edits::default();
//! edits.set(id, values);
//! model.save("model.half.onnx", &edits, &SaveOptions::default())?;
//! # Ok::<(), reinit_onnx::Error>(())
//! ```

mod atomic;
mod codec;
#[cfg(target_os = "linux")]
mod direct;
mod error;
mod external;
mod index;
mod model;
pub mod proto;
mod save;
mod wire;

pub use codec::{DType, Storage};
pub use error::Error;
pub use external::ExternalRef;
pub use model::{Model, TensorEntry, TensorId, TensorOrigin};
pub use save::{DeferredValues, Edits, Payload, SaveOptions, SaveReport, ValueSink};
