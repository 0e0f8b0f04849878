//! # reinit-candle — run an ONNX graph as a trainable candle network
//!
//! Answers "will this starting point train?" for a user's own exported graph:
//! an [`Executor`] runs the ONNX graph over candle tensors with every float
//! initializer a trainable [`candle_core::Var`]; [`train`] fits it to a task
//! chosen from its inputs; [`probes`] measure signal propagation, gradient
//! norms and Jacobian singular values; [`verify`] does all of it for several
//! initialisations side by side. It knows nothing of init schemes (that is
//! `reinit-schemes`) and does not rewrite files (`reinit-onnx`).
//!
//! ## For the CLI (`reinit verify`)
//! ```no_run
//! use reinit_candle::{VerifyConfig, render_table, verify, write_json};
//! # let he = reinit_onnx::Model::load("model.he.onnx")?;
//! # let orth = reinit_onnx::Model::load("model.orthogonal.onnx")?;
//! let models = vec![("he".to_string(), he), ("orthogonal".to_string(), orth)];
//! let mut config = VerifyConfig::default();          // 100 steps, batch 16, AdamW 3e-3
//! config.plot_dir = Some("plots".into());            // loss, signal, jacobian_sv, grad_norms (.svg, .png)
//! let report = verify(&models, &config)?;            // same seed and data order per run
//! print!("{}", render_table(&report));
//! write_json(&report, "report.json".as_ref())?;      // or serde_json::to_string(&report)
//! # Ok::<(), reinit_candle::ExecError>(())
//! ```
//! The schemes are applied in memory by the caller: build each `Model` with
//! `Model::from_bytes(model.to_bytes(&edits)?, base_dir)`. `--steps/--lr/--batch/
//! --seed` map to `config.train.{steps, lr, batch, seed}`, `--device` to
//! `config.train.device` (`Device::new_cuda(0)` with the `cuda` feature),
//! `--input-shape` to `config.train.shapes` ([`ShapeRequest::parse`]),
//! `--input-q` to `config.train.input_q`, and a sparse scheme's trainable mask to
//! `config.masks[label]` ([`Mask`]: weight name → `true` = free, `false` = held
//! at exactly zero).
//!
//! The optimizer, lr and schedule not given (`config.given`) follow the model
//! ([`recipe`]: SGD 0.1 with momentum and cosine decay for residual nets
//! without normalization, AdamW 3e-3 otherwise).
//!
//! JSON schema (`VerifyReport`): `{steps, lr, batch, seed, optimizer,
//! lr_schedule, optimizer_choice, inputs: [{name, dtype, shape, sources,
//! fill}], task: {name, description, classes_taught, chance, input_q,
//! constant_loss, train_samples, heldout_samples},
//! target_loss, fastest, runs: [{scheme, task, loss: [f32 per step],
//! initial_loss, final_loss, heldout: {metric: "accuracy"|"mse", value,
//! chance}, verdict: "trains"|"stalled"|"diverged", verdict_reason,
//! steps_to_target, q_star, input_matches_q_star, signal: [[layer, q]],
//! signal_detail: {input_q, layers: [{layer, q, mean, spread}], ratio, flag},
//! layer_weights: [weight per signal layer], grad_norms: {weight: norm}, grad_ratio_first_last, jacobian: {mean_sq_sv,
//! var_sq_sv, min_sv, max_sv, method, singular_values} | null, mask_exact,
//! micro_batch, step_seconds, probe_seconds, estimated_bytes, seconds}],
//! peak_rss_bytes}`. Runs estimated not to fit in memory end with
//! [`ExecError::TooLarge`] before they allocate ([`memory`]).
//!
//! Verdict rule ([`Verdict::judge_with_reason`]): `diverged` if a loss is
//! NaN/inf or, after the first update, exceeds [`SPIKE_FACTOR`] × the loss at
//! init (the lower of step 0's and the median of the first twentieth of the
//! steps); `trains` if the loss falls steadily (final = mean of the last tenth
//! ≤ 0.9 × initial = mean of the first twentieth, and ≤ 0.9 × the constant
//! prediction's loss `task.constant_loss`, no quarter of the run averaging
//! above the initial, no step above [`UNSTABLE_FACTOR`] × the loss at init);
//! otherwise `stalled`.
//! The fastest scheme is the one that first reaches the highest final loss
//! among the runs that train ([`steps_to_reach`]).
//!
//! ## Tasks ([`Task::for_model`])
//! Shapes come from [`shapes`]: the model's fixed dims, `--input-shape`, else
//! defaults (batch, sequence 128, image side 224 …), recorded per input. The
//! data input is the first one that is not a mask/position/segment input;
//! attention masks are ones, token type ids zeros, position ids 0..n-1. Float
//! input of per-sample shape `[64]` or `[1, 8, 8]` with 10 classes → the digits
//! set (`fixtures/digits.bin`, or `$REINIT_DIGITS`); other image-like float
//! inputs with a class output → class-dependent patterns (channel offsets and
//! plane waves per class, random phase, noise); other float inputs with a class
//! output → labels of a fixed random tanh teacher; non-class outputs → MSE to
//! the same graph with resampled weights; integer (token) inputs → Markov-chain
//! token sequences over ≤ 256 ids (next-token targets when the output width
//! equals the vocabulary). Class tasks use [`classes_taught`] classes (≤ 10,
//! fewer for a small budget). The samples are capped at [`TASK_DATA_BYTES`].
//! Graphs that fix the batch to 1 (static reshapes) run one sample at a time
//! (`micro_batch`).
//!
//! ## candle 0.11 workarounds (see `stack.md` §2)
//! Conv 1-D runs as conv2d on `[N,C,1,L]`, Conv 3-D as a sum of conv2d over depth
//! taps; inputs are cropped so candle's strided conv2d backward returns the
//! right shape; MaxPool/AveragePool are built from pad/narrow/reshape + max/sum
//! (exact gradients for padded, overlapping, dilated, ceil-mode windows);
//! Softmax and the norms are composed ops; all random tensors come from our
//! seeded ChaCha8 [`Rng`]. Every differentiable op is checked against finite
//! differences in f64 (`ops::gradcheck`).
//!
//! ## CPU kernels
//! On CPU in f32/f64, Conv runs as im2col + matmul ([`ops::im2col`], explicit
//! backward), training-mode BatchNormalization as one fused op with the
//! closed-form backward, and 2-D MaxPool as a window kernel with a recorded
//! argmax; together ≈ 3.6× faster training steps on the tiny ResNet
//! (`docs/candle-notes.md`). Their heavy loops run on rayon and call the
//! `gemm` crate directly with strides ([`ops`]' `host` module: no tensor
//! copies around a product), and AdamW is one fused in-place pass per weight
//! ([`optim`]). `REINIT_CONV=candle`, `REINIT_BN=composed` and
//! `REINIT_POOL=taps` select the composed candle paths again (for
//! comparisons); other devices always use them.
mod data;
mod error;
mod executor;
mod lsuv;
pub mod memory;
pub mod ops;
pub mod optim;
mod plot;
mod prepare;
pub mod probes;
pub mod progress;
pub mod recipe;
pub mod shapes;
mod synth;
mod train;
mod verdict;
mod verify;

pub use data::{
    LossKind, Rng, Split, TASK_DATA_BYTES, Task, TaskInfo, TaskOptions, TaskSize, digits_path,
    load_digits,
};
pub use error::{ExecError, OpError, UnsupportedOp};
pub use executor::{Executor, InputSpec, Layer, Mode, Outputs, Param};
pub use lsuv::{LsuvData, LsuvOutcome, LsuvScale, LsuvSettings, lsuv};
pub use plot::{Figure, PlotKind, render_plots, write_plots};
pub use probes::{JacobianStats, LayerSignal, Signal};
pub use progress::{Progress, ProgressHook};
pub use shapes::{InputShape, ShapeRequest};
pub use synth::{MAX_TAUGHT_CLASSES, classes_taught};
pub use train::{
    Heldout, LrSchedule, Mask, Optimizer, TrainConfig, TrainReport, evaluate, train, train_on,
};
pub use verdict::{SPIKE_FACTOR, STALL_RATIO, UNSTABLE_FACTOR, Verdict, constant_prediction_loss};
pub use verify::{
    RunReport, VerifyConfig, VerifyReport, render_table, steps_to_reach, verify, write_json,
};
