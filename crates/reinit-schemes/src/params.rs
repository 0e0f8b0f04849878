//! Typed, validated parameters of the schemes (the [`Scheme`](crate::Scheme) enum and
//! its names live in the scheme table, `table.rs`).

use crate::error::SchemeError;

/// A weight density in `(0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Density(f64);

impl Density {
    pub fn new(d: f64) -> Result<Self, SchemeError> {
        Density::of_scheme("eoi", d)
    }

    /// As [`Density::new`], naming `scheme` in the error.
    pub fn of_scheme(scheme: &'static str, d: f64) -> Result<Self, SchemeError> {
        if d.is_finite() && d > 0.0 && d <= 1.0 {
            Ok(Density(d))
        } else {
            Err(SchemeError::InvalidParam {
                scheme,
                param: "density",
                value: d.to_string(),
                reason: "must be in (0, 1]".into(),
            })
        }
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A multiplicative gain, finite and `> 0`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Gain(f64);

impl Gain {
    pub fn new(g: f64) -> Result<Self, SchemeError> {
        if g.is_finite() && g > 0.0 {
            Ok(Gain(g))
        } else {
            Err(SchemeError::InvalidParam {
                scheme: "gain",
                param: "gain",
                value: g.to_string(),
                reason: "must be finite and > 0".into(),
            })
        }
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

/// Where a gain comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GainChoice {
    /// `calculate_gain` of the following activation.
    FromActivation,
    Fixed(Gain),
}

/// Which fan a variance-scaling scheme divides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    /// Preserves forward variance.
    FanIn,
    /// Preserves backward variance.
    FanOut,
}

/// The sampling law of a variance-scaling scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Normal,
    Uniform,
    /// Normal truncated to ±2σ, rescaled so the std is the target (Keras `lecun_normal`,
    /// `σ/0.8796256610342398`).
    TruncatedNormal,
}

/// What a scheme writes into biases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasInit {
    /// Zeros (the papers' choice).
    Zero,
    /// Leave the model's biases as they are (`LayerInit::bias = None`).
    Keep,
    /// PyTorch module default `U(±1/√fan_in)`.
    TorchDefault,
}

/// He/Kaiming, Glorot/Xavier and LeCun parameters (§1.2–1.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VarianceParams {
    pub distribution: Distribution,
    /// He and LeCun only (Xavier averages both fans).
    pub fan_mode: FanMode,
    pub gain: GainChoice,
    pub bias: BiasInit,
}

/// Orthogonal (Saxe) parameters (§1.6, §0.3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OrthogonalParams {
    pub gain: GainChoice,
    pub bias: BiasInit,
}

/// Delta-orthogonal (Xiao et al. Algorithm 2) parameters (§2.5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaOrthogonalParams {
    /// `σ_w`; default: before tanh-like units (tanh, hard-tanh) the critical point that
    /// `critical` uses (tanh σ_w² = 1.05), otherwise `calculate_gain` of the activation.
    pub gain: GainChoice,
    /// `σ_b` (biases `N(0, σ_b²)`, zeros when 0). With the default gain before a tanh-like
    /// unit, 0 means the critical σ_b (tanh: σ_b² = 2.01e-5).
    pub sigma_b: f64,
}

/// How the critical-line point is chosen (§2.4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CriticalTarget {
    /// tanh → `(σ_w², σ_b²) = (1.05, 2.01e-5)` (Xiao's demo, EOI deep runs);
    /// any other activation → solve at `q* = 1/64`.
    Default,
    /// Solve on the critical line at this fixed point `q*`.
    QStar(f64),
    /// Use these variances as given.
    Explicit { sigma_w2: f64, sigma_b2: f64 },
}

/// How convolutions are treated by the critical scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvMode {
    /// Orthogonal at the delta tap, zeros elsewhere (Xiao et al., default).
    Delta,
    /// Orthogonal on the flattened `(n_out, n_in·Πk)` kernel.
    Flattened,
}

/// Critical-line orthogonal (Pennington et al. / Xiao et al.) parameters (§2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CriticalParams {
    pub target: CriticalTarget,
    pub conv: ConvMode,
    /// Multiply tall (`n_out > n_in`) layers by `√(n_out/n_in)` \[design, off by default\].
    pub variance_matched: bool,
}

/// How per-layer EOI densities are distributed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DensityDistribution {
    /// Every layer gets the global density.
    Uniform,
    /// Erdős–Rényi-kernel (power 1) densities over all weight layers ([`crate::erk_densities`]).
    Erk,
    /// Non-square linear layers and 3-input-channel convs dense, all others uniform.
    UniformSkipFirstLast,
}

/// Which EOI mask is reported (and held fixed by `verify`: `true` = trainable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMode {
    /// No mask.
    None,
    /// The support of the weight (its non-zeros). For a k×k conv that is only the centre
    /// tap, so the layer trains at about `d/k²` of the requested density.
    Support,
    /// The EOI reference's trainable mask (default): the support, topped up for convs with
    /// random zero positions until the mask holds `⌈d·numel⌉` entries (§5.3 step 4,
    /// `weight_preprocesser.py` `unfreeze_zeros`); linear layers: the support.
    Trainable,
}

/// EOI (exact orthogonal initialization) parameters (§5).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EoiParams {
    /// Global target density `D` (per-layer density when `distribution` is uniform).
    pub density: Density,
    pub distribution: DensityDistribution,
    /// `σ_w`; default 1.
    pub sigma_w: Gain,
    /// `σ_b`; default 0.
    pub sigma_b: f64,
    /// Conv centre density `min(d·k², 1, √d)` instead of `d` (§5.3).
    pub more_nonzeros: bool,
    pub mask: MaskMode,
}

/// IDInit placement of the last layer of a residual branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchLast {
    /// `IDIZ_ε` (default).
    Epsilon,
    /// Exact zeros (Fixup/ZerO style).
    Zero,
}

/// IDInit convolution rule (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdConvRule {
    /// Identity-like matrix on the flattened `(C_out, C_in·Πk)` kernel (default).
    PatchMaintain,
    /// Dirac-style: τ at the delta tap for channel pairs `(o, o mod C_in)`.
    ChannelMaintain,
}

/// IDInit index rule of the padded identity \[recalled — UNCONFIRMED\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdIndexRule {
    /// `M[i, j] = τ` iff `j == i mod n_in` (default).
    ModIn,
    /// `M[i, j] = τ` iff `(i − j) mod min(n_out, n_in) == 0`.
    ModMin,
}

/// IDInit treatment of the network's final layer \[UNCONFIRMED\].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassifierRule {
    /// `IDI_τ` like every main-stem layer (default).
    Identity,
    /// Zeros as in Fixup.
    Zero,
}

/// IDInit parameters (§4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdInitParams {
    pub tau: f64,
    pub epsilon: f64,
    pub branch_last: BranchLast,
    pub conv: IdConvRule,
    pub index_rule: IdIndexRule,
    pub classifier: ClassifierRule,
    /// Std of `N(0, s²)` noise added to every entry ("loose" variant); 0 = deterministic.
    pub loose_std: f64,
}

/// relu-share submatrix law (§3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submatrix {
    /// i.i.d. `N(0, 1/fan_in(A))` for the input layer, `N(0, 2/N_{l−1})` otherwise (paper, "GSM").
    Gaussian,
    /// Haar (semi-)orthogonal, gain 1 (looks-linear); delta-orthogonal for convs.
    Orthogonal,
}

/// relu-share handling of odd widths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OddWidth {
    /// The leftover unit gets a zero row (and zero bias) and a zero column next layer (default).
    ZeroUnit,
    /// He normal for the whole layer instead (breaks exact linearity there).
    He,
}

/// Burkholz & Dubatovka mirrored ("relu-share") parameters (§3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReluShareParams {
    pub submatrix: Submatrix,
    /// `c ~ N(0, σ_b²)` in mirrored biases `[c; −c]`; default 0.
    pub sigma_b: f64,
    pub odd_width: OddWidth,
}

/// Fixup parameters (§1.7).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FixupParams {
    /// Fan of the He-normal draws; default fan_out as in the official code.
    pub fan_mode: FanMode,
}

/// What LSUV's variance tolerance applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LsuvTolOn {
    Variance,
    Std,
}

/// LSUV parameters (§1.8). Only the orthonormal pre-init happens here; the forward passes
/// are the trainer's (see [`crate::lsuv_rescale`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LsuvParams {
    pub target_var: f64,
    pub tol: f64,
    pub tol_on: LsuvTolOn,
    pub max_iter: usize,
}

impl Default for VarianceParams {
    fn default() -> Self {
        VarianceParams {
            distribution: Distribution::Normal,
            fan_mode: FanMode::FanIn,
            gain: GainChoice::FromActivation,
            bias: BiasInit::Zero,
        }
    }
}

impl Default for OrthogonalParams {
    fn default() -> Self {
        OrthogonalParams {
            gain: GainChoice::FromActivation,
            bias: BiasInit::Zero,
        }
    }
}

impl Default for DeltaOrthogonalParams {
    fn default() -> Self {
        DeltaOrthogonalParams {
            gain: GainChoice::FromActivation,
            sigma_b: 0.0,
        }
    }
}

impl Default for CriticalParams {
    fn default() -> Self {
        CriticalParams {
            target: CriticalTarget::Default,
            conv: ConvMode::Delta,
            variance_matched: false,
        }
    }
}

impl Default for EoiParams {
    fn default() -> Self {
        EoiParams {
            density: Density(0.05),
            distribution: DensityDistribution::Uniform,
            sigma_w: Gain(1.0),
            sigma_b: 0.0,
            more_nonzeros: false,
            mask: MaskMode::Trainable,
        }
    }
}

impl Default for IdInitParams {
    fn default() -> Self {
        IdInitParams {
            tau: 1.0,
            epsilon: 1e-6,
            branch_last: BranchLast::Epsilon,
            conv: IdConvRule::PatchMaintain,
            index_rule: IdIndexRule::ModIn,
            classifier: ClassifierRule::Identity,
            loose_std: 0.0,
        }
    }
}

impl Default for ReluShareParams {
    fn default() -> Self {
        ReluShareParams {
            submatrix: Submatrix::Gaussian,
            sigma_b: 0.0,
            odd_width: OddWidth::ZeroUnit,
        }
    }
}

impl Default for FixupParams {
    fn default() -> Self {
        FixupParams {
            fan_mode: FanMode::FanOut,
        }
    }
}

impl Default for LsuvParams {
    fn default() -> Self {
        LsuvParams {
            target_var: 1.0,
            tol: 0.1,
            tol_on: LsuvTolOn::Variance,
            max_iter: 10,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scheme;

    #[test]
    fn checked_types() {
        assert!(Density::new(0.0).is_err());
        assert!(Density::new(1.0).is_ok());
        assert!(Density::new(1.5).is_err());
        assert!(Density::new(f64::NAN).is_err());
        assert!(Gain::new(0.0).is_err());
        assert!(Gain::new(-1.0).is_err());
        assert!(Gain::new(2.0).is_ok());
        let s = Scheme::Critical(CriticalParams {
            target: CriticalTarget::QStar(-1.0),
            ..Default::default()
        });
        assert!(s.validate().unwrap_err().to_string().contains("q_star"));
    }
}
