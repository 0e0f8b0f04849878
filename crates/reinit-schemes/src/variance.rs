//! Variance-scaling baselines: He/Kaiming (He et al. 2015, "Delving Deep into Rectifiers"),
//! Glorot/Xavier (Glorot & Bengio 2010), LeCun (LeCun et al. 1998, "Efficient BackProp") and
//! PyTorch's module default — schemes.md §1.2–1.5, formulas as in `torch.nn.init`.
//!
//! * He:     `std = gain/√fan`, uniform bound `gain·√(3/fan)`.
//! * Xavier: `std = gain·√(2/(fan_in+fan_out))`, bound `gain·√(6/(fan_in+fan_out))`.
//! * LeCun:  `std = gain·√(1/fan)` (gain 1 by default), bound `√(3/fan)`; truncated-normal
//!   variant `σ/0.87962566103423978` on ±2σ (Keras `lecun_normal`).
//! * torch-default: `U(±1/√fan_in)` for weights and biases.

use crate::error::SchemeError;
use crate::init::WeightValues;
use crate::layer::LayerSpec;
use crate::params::{BiasInit, Distribution, FanMode, GainChoice, VarianceParams};
use crate::rng::{Law, Stream};

/// Std of a unit normal truncated to (−2, 2).
pub const TRUNCATED_NORMAL_STD: f64 = 0.879_625_661_034_239_8;

/// The three variance-scaling families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    He,
    Xavier,
    Lecun,
}

pub(crate) fn resolve_gain(choice: GainChoice, spec: &LayerSpec, notes: &mut Vec<String>) -> f64 {
    match choice {
        GainChoice::Fixed(g) => g.get(),
        GainChoice::FromActivation => {
            if let Some(n) = spec.activation.gain_note() {
                notes.push(n);
            }
            spec.activation.gain()
        }
    }
}

fn fan(spec: &LayerSpec, mode: FanMode) -> usize {
    match mode {
        FanMode::FanIn => spec.fan_in,
        FanMode::FanOut => spec.fan_out,
    }
}

/// Target std of a family for a layer, or an error for a zero fan.
pub(crate) fn target_std(
    family: Family,
    p: &VarianceParams,
    spec: &LayerSpec,
    gain: f64,
    scheme: &'static str,
) -> Result<f64, SchemeError> {
    let denom = match family {
        Family::He | Family::Lecun => fan(spec, p.fan_mode) as f64,
        Family::Xavier => (spec.fan_in + spec.fan_out) as f64 / 2.0,
    };
    if denom <= 0.0 {
        return Err(SchemeError::Shape {
            scheme,
            shape: format!("{:?}", spec.shape()),
            reason: "fan is 0: variance scaling is undefined".into(),
        });
    }
    Ok(gain / denom.sqrt())
}

/// The law of zero-mean draws of the given std under `dist`.
pub(crate) fn law(std: f64, dist: Distribution) -> Law {
    match dist {
        Distribution::Normal => Law::Normal { std },
        Distribution::Uniform => {
            let b = std * 3f64.sqrt();
            Law::Uniform { lo: -b, hi: b }
        }
        Distribution::TruncatedNormal => Law::TruncatedNormal {
            std: std / TRUNCATED_NORMAL_STD,
        },
    }
}

/// PyTorch's default bias `U(±1/√fan_in)` (zeros for fan_in 0).
pub(crate) fn torch_default_bias(spec: &LayerSpec, rng: &mut Stream) -> Vec<f64> {
    let mut b = vec![0.0; spec.bias_len()];
    if spec.fan_in > 0 {
        let bound = 1.0 / (spec.fan_in as f64).sqrt();
        rng.fill_uniform(&mut b, -bound, bound);
    }
    b
}

pub(crate) fn bias(mode: BiasInit, spec: &LayerSpec, rng: &mut Stream) -> Option<Vec<f64>> {
    if !spec.has_bias {
        return None;
    }
    match mode {
        BiasInit::Zero => Some(vec![0.0; spec.bias_len()]),
        BiasInit::Keep => None,
        BiasInit::TorchDefault => Some(torch_default_bias(spec, rng)),
    }
}

/// He / Xavier / LeCun weights (i.i.d. draws, not yet made) and biases.
pub(crate) fn variance_scaling(
    family: Family,
    p: &VarianceParams,
    spec: &LayerSpec,
    rng: &mut Stream,
    notes: &mut Vec<String>,
    scheme: &'static str,
) -> Result<(WeightValues, Option<Vec<f64>>), SchemeError> {
    let gain = resolve_gain(p.gain, spec, notes);
    let n = spec.numel();
    let w = if n == 0 {
        WeightValues::Zeros(0)
    } else {
        let std = target_std(family, p, spec, gain, scheme)?;
        WeightValues::Iid(rng.iid(law(std, p.distribution), n))
    };
    Ok((w, bias(p.bias, spec, rng)))
}

/// PyTorch `Linear`/`ConvNd` `reset_parameters`: `kaiming_uniform_(a=√5)` = `U(±1/√fan_in)`,
/// bias `U(±1/√fan_in)`.
pub(crate) fn torch_default(
    spec: &LayerSpec,
    rng: &mut Stream,
) -> (WeightValues, Option<Vec<f64>>) {
    let n = spec.numel();
    let w = if spec.fan_in > 0 && n > 0 {
        let bound = 1.0 / (spec.fan_in as f64).sqrt();
        WeightValues::Iid(rng.iid(
            Law::Uniform {
                lo: -bound,
                hi: bound,
            },
            n,
        ))
    } else {
        WeightValues::Zeros(n)
    };
    let b = spec.has_bias.then(|| torch_default_bias(spec, rng));
    (w, b)
}
