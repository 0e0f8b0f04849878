//! The [`SchemeDef`]s of the schemes whose math lives in shared modules (`init.rs`,
//! `variance.rs`, `eoi.rs`, `critical.rs`, `idinit.rs`, `relu_share.rs`): name, paper,
//! parameters and builder of each, and the domain checks of their parameters.
//! A scheme with a module of its own keeps its definition there (`random_mask.rs`).

use crate::error::SchemeError;
use crate::params::{
    CriticalParams, CriticalTarget, DeltaOrthogonalParams, DensityDistribution, Distribution,
    EoiParams, FanMode, FixupParams, Gain, GainChoice, IdInitParams, LsuvParams, MaskMode,
    OrthogonalParams, ReluShareParams, Submatrix, VarianceParams,
};
use crate::table::{Given, ParamDef, ParamKind, Scheme, SchemeDef};

// ---------------------------------------------------------------- shared parameters

const GAIN_FROM_ACTIVATION: ParamDef = ParamDef {
    name: "gain",
    kind: ParamKind::Number,
    default: "gain of the following activation",
    help: "fixed gain (> 0)",
};
const GAIN_ONE: ParamDef = ParamDef {
    default: "1",
    ..GAIN_FROM_ACTIVATION
};
const DISTRIBUTION: ParamDef = ParamDef {
    name: "distribution",
    kind: ParamKind::Choice(&["normal", "uniform", "truncated-normal"]),
    default: "normal",
    help: "sampling law of the weights",
};
const FAN_MODE: ParamDef = ParamDef {
    name: "fan-mode",
    kind: ParamKind::Choice(&["fan-in", "fan-out"]),
    default: "fan-in",
    help: "which fan the variance divides by (fan-in keeps forward, fan-out backward variance)",
};
const SIGMA_B: ParamDef = ParamDef {
    name: "sigma-b",
    kind: ParamKind::Number,
    default: "0",
    help: "bias standard deviation σb (>= 0; zeros when 0)",
};
/// EOI's `--density` (random-mask's says the same).
pub(crate) const DENSITY: ParamDef = ParamDef {
    name: "density",
    kind: ParamKind::Number,
    default: "0.05",
    help: "fraction of non-zero weights, in (0, 1]",
};
/// EOI's `--sparsity-distribution` (random-mask takes the same).
pub(crate) const SPARSITY_DISTRIBUTION: ParamDef = ParamDef {
    name: "sparsity-distribution",
    kind: ParamKind::Choice(&["uniform", "erk", "uniform-skip-first-last"]),
    default: "uniform",
    help: "how the density is spread over layers",
};

/// Maps `--sparsity-distribution`.
pub(crate) fn sparsity_distribution(
    given: &Given<'_>,
) -> Result<Option<DensityDistribution>, SchemeError> {
    given.choice(
        "sparsity-distribution",
        &[
            ("uniform", DensityDistribution::Uniform),
            ("erk", DensityDistribution::Erk),
            (
                "uniform-skip-first-last",
                DensityDistribution::UniformSkipFirstLast,
            ),
        ],
    )
}

fn fan_mode(given: &Given<'_>) -> Result<Option<FanMode>, SchemeError> {
    given.choice(
        "fan-mode",
        &[("fan-in", FanMode::FanIn), ("fan-out", FanMode::FanOut)],
    )
}

fn fixed_gain(given: &Given<'_>) -> Result<Option<GainChoice>, SchemeError> {
    Ok(given.gain("gain")?.map(GainChoice::Fixed))
}

// ---------------------------------------------------------------- variance scaling

fn variance(
    given: &Given<'_>,
    mut p: VarianceParams,
    takes_fan_mode: bool,
) -> Result<VarianceParams, SchemeError> {
    if let Some(g) = fixed_gain(given)? {
        p.gain = g;
    }
    if let Some(d) = given.choice(
        "distribution",
        &[
            ("normal", Distribution::Normal),
            ("uniform", Distribution::Uniform),
            ("truncated-normal", Distribution::TruncatedNormal),
        ],
    )? {
        p.distribution = d;
    }
    if takes_fan_mode && let Some(f) = fan_mode(given)? {
        p.fan_mode = f;
    }
    Ok(p)
}

fn unit_gain() -> VarianceParams {
    VarianceParams {
        gain: GainChoice::Fixed(Gain::new(1.0).expect("1 is a valid gain")),
        ..VarianceParams::default()
    }
}

pub(crate) const HE: SchemeDef = SchemeDef {
    name: "he",
    aliases: &["kaiming"],
    summary: "Gaussian (or uniform) with variance gain²/fan",
    needs: "activation (gain)",
    paper: "He et al., Delving Deep into Rectifiers, ICCV 2015",
    params: &[GAIN_FROM_ACTIVATION, DISTRIBUTION, FAN_MODE],
    draws_iid: true,
    orthogonal: false,
    build: |g| Ok(Scheme::He(variance(g, VarianceParams::default(), true)?)),
};

pub(crate) const XAVIER: SchemeDef = SchemeDef {
    name: "xavier",
    aliases: &["glorot"],
    summary: "variance 2·gain²/(fan_in+fan_out)",
    needs: "—",
    paper: "Glorot & Bengio, AISTATS 2010",
    params: &[GAIN_ONE, DISTRIBUTION],
    draws_iid: true,
    orthogonal: false,
    build: |g| Ok(Scheme::Xavier(variance(g, unit_gain(), false)?)),
};

pub(crate) const LECUN: SchemeDef = SchemeDef {
    name: "lecun",
    aliases: &[],
    summary: "variance gain²/fan_in",
    needs: "—",
    paper: "LeCun et al., Efficient BackProp, 1998",
    params: &[GAIN_ONE, DISTRIBUTION, FAN_MODE],
    draws_iid: true,
    orthogonal: false,
    build: |g| Ok(Scheme::Lecun(variance(g, unit_gain(), true)?)),
};

pub(crate) const TORCH_DEFAULT: SchemeDef = SchemeDef {
    name: "torch-default",
    aliases: &[],
    summary: "what PyTorch Linear/Conv modules start from: U(±1/√fan_in)",
    needs: "—",
    paper: "PyTorch nn.Linear / nn.ConvNd reset_parameters",
    params: &[],
    draws_iid: true,
    orthogonal: false,
    build: |_| Ok(Scheme::TorchDefault),
};

// ---------------------------------------------------------------- orthogonal family

pub(crate) const ORTHOGONAL: SchemeDef = SchemeDef {
    name: "orthogonal",
    aliases: &[],
    summary: "Haar orthogonal (sign-corrected QR of the smaller side) × gain; conv flattened",
    needs: "activation (gain)",
    paper: "Saxe et al., Exact solutions to the nonlinear dynamics of learning, ICLR 2014",
    params: &[GAIN_FROM_ACTIVATION],
    draws_iid: false,
    orthogonal: true,
    build: |g| {
        let mut p = OrthogonalParams::default();
        if let Some(gain) = fixed_gain(g)? {
            p.gain = gain;
        }
        Ok(Scheme::Orthogonal(p))
    },
};

pub(crate) const DELTA_ORTHOGONAL: SchemeDef = SchemeDef {
    name: "delta-orthogonal",
    aliases: &[],
    summary: "orthogonal at the identity tap of a conv kernel, zeros elsewhere; gain: the critical point before tanh/hard-tanh (tanh σw²=1.05, σb²=2.01e-5, as critical), calculate_gain otherwise",
    needs: "pads/strides (delta tap), activation",
    paper: "Xiao et al., Dynamical Isometry and a Mean Field Theory of CNNs, ICML 2018",
    params: &[
        ParamDef {
            default: "before tanh/hard-tanh the critical point (as critical); otherwise the gain of the following activation",
            ..GAIN_FROM_ACTIVATION
        },
        ParamDef {
            default: "0 (before tanh/hard-tanh with the default gain: the critical σb)",
            ..SIGMA_B
        },
    ],
    draws_iid: false,
    orthogonal: true,
    build: |g| {
        let mut p = DeltaOrthogonalParams::default();
        if let Some(gain) = fixed_gain(g)? {
            p.gain = gain;
        }
        if let Some(s) = g.number("sigma-b") {
            p.sigma_b = s;
        }
        Ok(Scheme::DeltaOrthogonal(p))
    },
};

pub(crate) const CRITICAL: SchemeDef = SchemeDef {
    name: "critical",
    aliases: &[],
    summary: "orthogonal × σw with biases N(0, σb²) on the critical line of the following activation (tanh default σw²=1.05, σb²=2.01e-5)",
    needs: "activation",
    paper: "Pennington, Schoenholz & Ganguli, Resurrecting the sigmoid, NeurIPS 2017",
    params: &[ParamDef {
        name: "q-star",
        kind: ParamKind::Number,
        default: "tanh: σw²=1.05, σb²=2.01e-5; others: 1/64",
        help: "target fixed point q* of the pre-activation variance",
    }],
    draws_iid: false,
    orthogonal: true,
    build: |g| {
        let mut p = CriticalParams::default();
        if let Some(q) = g.number("q-star") {
            p.target = CriticalTarget::QStar(q);
        }
        Ok(Scheme::Critical(p))
    },
};

pub(crate) const EOI: SchemeDef = SchemeDef {
    name: "eoi",
    aliases: &[],
    summary: "exact orthogonal sparse matrix from random Givens rotations at a target density; conv via sparse delta",
    needs: "pads/strides for conv",
    paper: "Nowak et al., Sparser, Better, Deeper, Stronger (EOI), ICML 2024",
    params: &[
        DENSITY,
        SPARSITY_DISTRIBUTION,
        ParamDef {
            default: "1",
            help: "σw, the scale of the orthogonal matrix (> 0)",
            ..GAIN_FROM_ACTIVATION
        },
        SIGMA_B,
        ParamDef {
            name: "more-nonzeros",
            kind: ParamKind::Flag,
            default: "false",
            help: "convolutions: centre density min(d·k², 1, √d) instead of d",
        },
        ParamDef {
            name: "mask-mode",
            kind: ParamKind::Choice(&["trainable", "support"]),
            default: "trainable",
            help: "the mask --mask-out writes and verify holds fixed: trainable (the reference's; convs topped up with random zero positions to the density) | support (the non-zeros only; a k×k conv then trains at about density/k²)",
        },
    ],
    draws_iid: false,
    orthogonal: true,
    build: |g| {
        let mut p = EoiParams::default();
        if let Some(d) = g.density()? {
            p.density = d;
        }
        if let Some(d) = sparsity_distribution(g)? {
            p.distribution = d;
        }
        if let Some(s) = g.gain("gain")? {
            p.sigma_w = s;
        }
        if let Some(s) = g.number("sigma-b") {
            p.sigma_b = s;
        }
        if let Some(m) = g.flag("more-nonzeros") {
            p.more_nonzeros = m;
        }
        if let Some(m) = g.choice(
            "mask-mode",
            &[
                ("trainable", MaskMode::Trainable),
                ("support", MaskMode::Support),
            ],
        )? {
            p.mask = m;
        }
        Ok(Scheme::Eoi(p))
    },
};

// ---------------------------------------------------------------- graph-aware schemes

pub(crate) const IDINIT: SchemeDef = SchemeDef {
    name: "idinit",
    aliases: &[],
    summary: "padded identity ×τ; ε on the last layer of each residual branch",
    needs: "residual blocks",
    paper: "Pan et al., IDInit, ICLR 2025",
    params: &[
        ParamDef {
            name: "tau",
            kind: ParamKind::Number,
            default: "1",
            help: "scale τ of the padded identity",
        },
        ParamDef {
            name: "epsilon",
            kind: ParamKind::Number,
            default: "1e-6",
            help: "ε on the last layer of each residual branch",
        },
    ],
    draws_iid: false,
    orthogonal: false,
    build: |g| {
        let mut p = IdInitParams::default();
        if let Some(t) = g.number("tau") {
            p.tau = t;
        }
        if let Some(e) = g.number("epsilon") {
            p.epsilon = e;
        }
        Ok(Scheme::IdInit(p))
    },
};

pub(crate) const RELU_SHARE: SchemeDef = SchemeDef {
    name: "relu-share",
    aliases: &[],
    summary: "mirrored blocks [[A,−A],[−A,A]]: exactly linear at init; the default Gaussian submatrix (the paper's) is not isometric (Var of squared singular values grows with depth), --submatrix orthogonal gives all singular values 1",
    needs: "a plain ReLU chain",
    paper: "Burkholz & Dubatovka, Initialization of ReLUs for Dynamical Isometry, NeurIPS 2019",
    params: &[
        ParamDef {
            name: "submatrix",
            kind: ParamKind::Choice(&["gaussian", "orthogonal"]),
            default: "gaussian",
            help: "law of the shared submatrix A",
        },
        SIGMA_B,
    ],
    draws_iid: false,
    orthogonal: false,
    build: |g| {
        let mut p = ReluShareParams::default();
        if let Some(s) = g.choice(
            "submatrix",
            &[
                ("gaussian", Submatrix::Gaussian),
                ("orthogonal", Submatrix::Orthogonal),
            ],
        )? {
            p.submatrix = s;
        }
        if let Some(s) = g.number("sigma-b") {
            p.sigma_b = s;
        }
        Ok(Scheme::ReluShare(p))
    },
};

pub(crate) const FIXUP: SchemeDef = SchemeDef {
    name: "fixup",
    aliases: &[],
    summary: "zero last branch layer and classifier, He elsewhere scaled by L^(−1/(2m−2)) inside branches",
    needs: "residual blocks (L, m)",
    paper: "Zhang, Dauphin & Ma, Fixup Initialization, ICLR 2019",
    params: &[ParamDef {
        default: "fan-out",
        ..FAN_MODE
    }],
    draws_iid: true,
    orthogonal: false,
    build: |g| {
        let mut p = FixupParams::default();
        if let Some(f) = fan_mode(g)? {
            p.fan_mode = f;
        }
        Ok(Scheme::Fixup(p))
    },
};

pub(crate) const LSUV: SchemeDef = SchemeDef {
    name: "lsuv",
    aliases: &[],
    summary: "orthonormal pre-init, then each layer rescaled until its output variance on a data batch is 1 (forward passes with the candle executor, embedded or external weights alike; the report gives each layer's variance and iterations)",
    needs: "data: --calibration-data FILE (.npy/.npz), else the task `reinit verify` would use",
    paper: "Mishkin & Matas, All you need is a good init, ICLR 2016",
    params: &[],
    draws_iid: false,
    orthogonal: false,
    build: |_| Ok(Scheme::Lsuv(LsuvParams::default())),
};

// ---------------------------------------------------------------- domain checks

fn bad(scheme: &'static str, param: &'static str, value: f64, reason: &str) -> SchemeError {
    SchemeError::InvalidParam {
        scheme,
        param,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

pub(crate) fn nonneg(scheme: &'static str, param: &'static str, v: f64) -> Result<(), SchemeError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(scheme, param, v, "must be finite and >= 0"))
    }
}

pub(crate) fn validate_critical(p: &CriticalParams) -> Result<(), SchemeError> {
    match p.target {
        CriticalTarget::QStar(q) if !(q.is_finite() && q > 0.0) => {
            Err(bad("critical", "q_star", q, "must be finite and > 0"))
        }
        CriticalTarget::Explicit { sigma_w2, sigma_b2 } => {
            if !(sigma_w2.is_finite() && sigma_w2 > 0.0) {
                return Err(bad(
                    "critical",
                    "sigma_w2",
                    sigma_w2,
                    "must be finite and > 0",
                ));
            }
            nonneg("critical", "sigma_b2", sigma_b2)
        }
        _ => Ok(()),
    }
}

pub(crate) fn validate_idinit(p: &IdInitParams) -> Result<(), SchemeError> {
    if !p.tau.is_finite() {
        return Err(bad("idinit", "tau", p.tau, "must be finite"));
    }
    if !p.epsilon.is_finite() {
        return Err(bad("idinit", "epsilon", p.epsilon, "must be finite"));
    }
    nonneg("idinit", "loose_std", p.loose_std)
}

pub(crate) fn validate_lsuv(p: &LsuvParams) -> Result<(), SchemeError> {
    if !(p.target_var.is_finite() && p.target_var > 0.0) {
        return Err(bad(
            "lsuv",
            "target_var",
            p.target_var,
            "must be finite and > 0",
        ));
    }
    if !(p.tol.is_finite() && p.tol > 0.0) {
        return Err(bad("lsuv", "tol", p.tol, "must be finite and > 0"));
    }
    if p.max_iter == 0 {
        return Err(bad("lsuv", "max_iter", 0.0, "must be at least 1"));
    }
    Ok(())
}
