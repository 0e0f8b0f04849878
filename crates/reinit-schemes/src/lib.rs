//! Weight-initialization schemes from the literature, as pure math.
//!
//! This crate fills a shaped buffer given a canonical layer description ([`LayerSpec`]:
//! out × in per group, kernel dims, groups, delta tap, following activation, residual role)
//! and a seeded random [`Stream`]. It knows nothing of ONNX: the caller maps initializers to
//! the canonical view and back. It is usable on its own, e.g. to initialize a candle model.
//!
//! The math follows `shared/design/schemes.md`; each scheme's module documents its formula,
//! paper and the \[design\] / \[recalled — UNCONFIRMED\] choices, which are named options here.
//!
//! Output contract: weights in the canonical layout `[groups·n_out][n_in][k1]…[kd]`
//! row-major, as `f64` (cast by the caller with round-to-nearest-even); biases of length
//! `groups·n_out` or `None` (leave as is).

mod activation;
mod banded;
mod builtin;
mod critical;
mod eoi;
mod error;
mod idinit;
mod init;
mod layer;
mod linalg;
mod params;
mod quadrature;
mod random_mask;
mod relu_share;
mod rng;
mod structured;
mod table;
mod values;
mod variance;

pub use activation::{Activation, PRELU_INIT_SLOPE};
pub use banded::{HaarBands, OrthogonalityCheck};
pub use critical::{
    CriticalPoint, critical_point, fixed_point_of, length_map, mu, phi_square_mean,
};
pub use eoi::{
    SparseOrthogonal, erk_densities, expected_density, expected_rotations, layer_densities,
    sparse_orthogonal,
};
pub use error::SchemeError;
pub use init::{
    LayerInit, LazyLayerInit, NormInit, SparseWeight, WeightValues, init_layer, init_layer_lazy,
    init_many, init_norm, lsuv_rescale,
};
pub use layer::{
    BranchPosition, ChainPosition, LayerKind, LayerSpec, NormOptions, NormSpec, ResidualRole,
    torch_fans_conv, torch_fans_conv_transpose, torch_fans_linear,
};
pub use linalg::{
    CastFormat, density, haar_orthogonal, orthogonality_error, orthogonality_error_after_cast,
};
pub use params::{
    BiasInit, BranchLast, ClassifierRule, ConvMode, CriticalParams, CriticalTarget,
    DeltaOrthogonalParams, Density, DensityDistribution, Distribution, EoiParams, FanMode,
    FixupParams, Gain, GainChoice, IdConvRule, IdIndexRule, IdInitParams, LsuvParams, LsuvTolOn,
    MaskMode, OddWidth, OrthogonalParams, ReluShareParams, Submatrix, VarianceParams,
};
pub use quadrature::{GaussHermite, gauss_hermite};
pub use random_mask::{MaskBase, RandomMaskParams};
pub use rng::{IidFill, Law, STREAM_VERSION, Stream, StreamVersion, box_muller, philox4x32_10};
pub use table::{ParamDef, ParamKind, SCHEMES, Scheme, SchemeDef, lookup, scheme_names};
pub use values::{Given, ParamValue, ParamValues, SharedParam, all_params};
