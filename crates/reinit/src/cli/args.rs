//! Command-line arguments (clap derive). `reinit MODEL --scheme X` is the
//! short form of `reinit apply MODEL --scheme X`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use reinit::SchemeParams;

#[derive(Debug, Parser)]
#[command(
    name = "reinit",
    version,
    about = "Re-initialize the weights of ONNX models with schemes from recent research",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  reinit model.onnx --scheme eoi --density 0.1\n  reinit inspect model.onnx\n  reinit verify model.onnx --schemes he,orthogonal,idinit\n  reinit schemes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub apply: ApplyArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rewrite the weights of MODEL (a file, or a directory of .onnx files).
    Apply(ApplyArgs),
    /// Show the layers, activations and residual blocks reinit finds.
    Inspect(InspectArgs),
    /// List the schemes, their parameters and papers.
    Schemes(SchemesArgs),
    /// Train MODEL briefly with several schemes side by side and report trainability.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The model file, or a directory whose .onnx files are rewritten together.
    #[arg(required = true)]
    pub model: Option<PathBuf>,
    /// Scheme name (`reinit schemes` lists them), or `auto` to choose per layer.
    #[arg(long, short = 's', required = true)]
    pub scheme: Option<String>,
    /// Output file (directory for a directory input). Default: <stem>.<scheme>.onnx beside the input.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
    /// Rewrite the input file itself.
    #[arg(long, conflicts_with = "output")]
    pub in_place: bool,
    /// Random seed; one seed gives byte-identical output. Default: drawn at random, printed and recorded.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Random stream: `v2` (Philox + Box–Muller, the default) or `v1` (ChaCha8 + ziggurat:
    /// the values of releases before v2, for earlier seeds). docs/stream.md specifies them.
    #[arg(long, value_name = "v1|v2")]
    pub stream: Option<String>,
    #[command(flatten)]
    pub params: SchemeParams,
    /// Only touch weights whose tensor or node name matches this regex.
    #[arg(long, value_name = "REGEX")]
    pub only: Option<String>,
    /// Leave weights whose tensor or node name matches this regex.
    #[arg(long, value_name = "REGEX")]
    pub exclude: Option<String>,
    /// TOML rules: name pattern → scheme and parameters, for per-layer control.
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// For layers the scheme does not cover: `keep` them, or use another scheme.
    #[arg(long, default_value = "keep", value_name = "keep|SCHEME")]
    pub fallback: String,
    /// Set γ = 0 on norm layers that end a residual branch (zero-init-last).
    #[arg(long)]
    pub zero_init_last_gamma: bool,
    /// Reset every normalization layer (Batch/Layer/Group/InstanceNormalization)
    /// to γ = 1, β = 0, running mean 0, running variance 1; `auto` does it by default.
    #[arg(long)]
    pub reset_norms: bool,
    /// LSUV calibrates on these samples: .npy (float array, first axis =
    /// samples, the first input) or .npz (arrays keyed by input name).
    /// Default: the task `reinit verify` would use.
    #[arg(long, value_name = "FILE")]
    pub calibration_data: Option<PathBuf>,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON report on stdout (logs stay on stderr).
    #[arg(long)]
    pub json: bool,
    /// Write the sparsity masks (eoi, random-mask) as safetensors, keyed by initializer name.
    #[arg(long, value_name = "FILE")]
    pub mask_out: Option<PathBuf>,
    /// Print nothing on stderr but errors.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub model: PathBuf,
    /// One JSON document on stdout (schema in README).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SchemesArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    pub model: PathBuf,
    /// Comma-separated schemes to compare; without it the stored weights are verified.
    #[arg(long, value_delimiter = ',')]
    pub schemes: Vec<String>,
    #[command(flatten)]
    pub params: SchemeParams,
    /// Training steps per scheme.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Learning rate. Default: 0.1 for the SGD recipe of residual nets without
    /// normalization, 3e-3 otherwise (and with an explicit --optimizer).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Batch size.
    #[arg(long)]
    pub batch: Option<usize>,
    /// Optimizer: sgd (momentum 0.9) | adamw. Default: sgd for a residual network
    /// without normalization layers, adamw otherwise (the report says which and why).
    #[arg(long)]
    pub optimizer: Option<String>,
    /// Learning-rate schedule: constant | cosine (decay to 0 over the steps) |
    /// warmup-cosine (linear warm-up over the first 5 % of the steps, then cosine).
    /// Default: cosine for the SGD recipe, constant otherwise.
    #[arg(long, value_name = "NAME")]
    pub lr_schedule: Option<String>,
    /// Seed for the schemes, the data and its order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, or cuda (needs the `cuda` build feature).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Input sizes: 3x224x224 (per sample), 2x3x224x224 (with the batch), or
    /// input_ids:2x128,pixel_values:2x3x224x224. Dynamic dims not given get defaults
    /// (sequence 128, image side 224), printed and recorded in the report.
    #[arg(long, value_name = "DIMS")]
    pub input_shape: Option<String>,
    /// Scale every probe/training input to this second moment (e.g. q* for `critical`).
    #[arg(long, value_name = "Q")]
    pub input_q: Option<f64>,
    /// One JSON document on stdout (schema in README).
    #[arg(long)]
    pub json: bool,
    /// Write the plots (loss, signal propagation, Jacobian singular values,
    /// gradient norms) into DIR, each as SVG and PNG.
    #[arg(long, value_name = "DIR")]
    pub plot: Option<PathBuf>,
    /// Write one self-contained HTML page of the run (verdicts, table,
    /// settings, plots, model summary) to FILE.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    #[arg(long, short = 'q')]
    pub quiet: bool,
}
