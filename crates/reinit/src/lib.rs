//! # reinit — re-initialize the weights of ONNX models
//!
//! The facade over the workspace: [`plan`] decides which weights a scheme
//! touches and why; a [`Session`] refines the plan (LSUV's data pass), draws
//! the weights (deterministically from a seed, in parallel) and ends in
//! [`Session::write`], [`Session::to_bytes`] or [`Session::dry_run`], which
//! change nothing else in the file and return the complete report. Most
//! weights are drawn during the save, as the writer reaches them.
//! [`rewrite_file`] and [`rewrite_directory`] run the whole sequence as the
//! CLI and the Python package do; the `reinit` binary is a thin clap layer
//! over them.
//!
//! ```
//! use reinit::{PlanOptions, Session, plan};
//! use reinit_onnx::{Model, SaveOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let model = Model::load(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/mlp_tanh.onnx"))?;
//! let options = PlanOptions { scheme: "orthogonal".into(), ..Default::default() };
//! let plan = plan(&model, &options)?;
//! let out = dir.path().join("mlp_tanh.orthogonal.onnx");
//! let rewritten = Session::new(&model, &plan, 42)?.write(&out, &SaveOptions::default())?;
//! let weights = &rewritten.report.weights;
//! assert!(!weights.is_empty() && weights.iter().all(|w| w.scheme == "orthogonal"));
//! assert!(Model::load(&out)?.metadata("reinit.seed") == Some("42"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod auto;
mod calibration;
mod catalog;
pub mod error;
mod heap;
#[cfg(feature = "verify")]
mod lsuv;
mod params;
mod plan;
mod report;
mod request;
mod rewrite;
mod rules;
mod session;
mod spec;
mod streamed;
#[cfg(feature = "verify")]
mod verify;
#[cfg(feature = "verify")]
pub mod verify_html;

pub use auto::AUTO_SUMMARY;
pub use calibration::{Calibration, SampleArray, Samples};
pub use catalog::{catalog, catalog_text};
pub use error::Error;
pub use params::SchemeParams;
pub use plan::{Kept, Plan, PlanOptions, PlannedWeight, plan, plan_with};
pub use report::{LsuvLayer, LsuvReport, NormReset, Report, Stats, WeightReport};
pub use request::{Request, UserRequest, default_output, random_seed};
pub use rewrite::{DirectoryOutput, Progress, directory_models, rewrite_directory, rewrite_file};
pub use rules::{Rule, load_rules, parse_rules};
pub use session::{Mask, Rewritten, Session, SessionOptions, write_masks};
#[cfg(feature = "verify")]
pub use verify::{VerifySettings, verify};
