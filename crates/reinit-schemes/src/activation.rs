//! Activations that follow a layer, and their gains (`torch.nn.init.calculate_gain`).

use std::fmt;

/// The nonlinearity applied to a layer's output (looked through bias adds, norms, reshapes
/// and pooling by the caller). `Linear` means "none".
#[derive(Debug, Clone, PartialEq)]
pub enum Activation {
    /// No nonlinearity (identity).
    Linear,
    Relu,
    LeakyRelu {
        alpha: f64,
    },
    /// Learned slope; its PyTorch default initial value is 0.25.
    PRelu,
    Elu {
        alpha: f64,
    },
    Selu,
    Sigmoid,
    HardSigmoid,
    Tanh,
    Softplus,
    Gelu,
    Silu,
    HardSwish,
    Relu6,
    /// `Clip(-1, 1)`.
    HardTanh,
    Softmax,
    /// An op the caller does not map; gain 1 with a note.
    Other(String),
}

/// Initial negative slope of a PyTorch `PReLU`.
pub const PRELU_INIT_SLOPE: f64 = 0.25;

impl Activation {
    /// Gain per `torch.nn.init.calculate_gain` (schemes.md §1.1). Activations PyTorch has no
    /// gain for are mapped by \[design\] choices; [`Activation::gain_note`] says which.
    pub fn gain(&self) -> f64 {
        match self {
            Activation::Linear | Activation::Sigmoid | Activation::Softmax => 1.0,
            Activation::Tanh => 5.0 / 3.0,
            Activation::Relu => 2f64.sqrt(),
            Activation::LeakyRelu { alpha } => (2.0 / (1.0 + alpha * alpha)).sqrt(),
            Activation::PRelu => (2.0 / (1.0 + PRELU_INIT_SLOPE * PRELU_INIT_SLOPE)).sqrt(),
            Activation::Selu => 0.75,
            // [design] ReLU-like units get the ReLU gain.
            Activation::Elu { .. }
            | Activation::Softplus
            | Activation::Gelu
            | Activation::Silu
            | Activation::HardSwish
            | Activation::Relu6 => 2f64.sqrt(),
            // [design] slope 1 around 0 (hard-tanh) / bounded sigmoid-like: gain 1.
            Activation::HardTanh | Activation::HardSigmoid | Activation::Other(_) => 1.0,
        }
    }

    /// A line for the report when [`Activation::gain`] is a \[design\] choice rather than
    /// PyTorch's own table; `None` when PyTorch defines the gain.
    pub fn gain_note(&self) -> Option<String> {
        match self {
            Activation::Linear
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::Relu
            | Activation::LeakyRelu { .. }
            | Activation::Selu => None,
            Activation::PRelu => Some(format!(
                "gain: prelu treated as leaky_relu with its initial slope {PRELU_INIT_SLOPE} [design]"
            )),
            Activation::Elu { .. }
            | Activation::Softplus
            | Activation::Gelu
            | Activation::Silu
            | Activation::HardSwish
            | Activation::Relu6 => Some(format!(
                "gain: PyTorch has no gain for {self}; using the relu gain sqrt(2) [design]"
            )),
            Activation::HardTanh | Activation::HardSigmoid | Activation::Softmax => Some(format!(
                "gain: PyTorch has no gain for {self}; using 1 [design]"
            )),
            Activation::Other(name) => Some(format!(
                "gain: unknown activation `{name}`; using 1 [design]"
            )),
        }
    }

    /// True for the units whose positive part is the identity and negative part 0.
    pub fn is_relu(&self) -> bool {
        matches!(self, Activation::Relu)
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Activation::Linear => write!(f, "linear"),
            Activation::Relu => write!(f, "relu"),
            Activation::LeakyRelu { alpha } => write!(f, "leaky_relu({alpha})"),
            Activation::PRelu => write!(f, "prelu"),
            Activation::Elu { alpha } => write!(f, "elu({alpha})"),
            Activation::Selu => write!(f, "selu"),
            Activation::Sigmoid => write!(f, "sigmoid"),
            Activation::HardSigmoid => write!(f, "hard_sigmoid"),
            Activation::Tanh => write!(f, "tanh"),
            Activation::Softplus => write!(f, "softplus"),
            Activation::Gelu => write!(f, "gelu"),
            Activation::Silu => write!(f, "silu"),
            Activation::HardSwish => write!(f, "hard_swish"),
            Activation::Relu6 => write!(f, "relu6"),
            Activation::HardTanh => write!(f, "hard_tanh"),
            Activation::Softmax => write!(f, "softmax"),
            Activation::Other(name) => write!(f, "{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gains_match_pytorch_calculate_gain() {
        assert_eq!(Activation::Linear.gain(), 1.0);
        assert_eq!(Activation::Sigmoid.gain(), 1.0);
        assert!((Activation::Tanh.gain() - 5.0 / 3.0).abs() < 1e-15);
        assert!((Activation::Relu.gain() - std::f64::consts::SQRT_2).abs() < 1e-15);
        // torch: calculate_gain('leaky_relu', 0.2) = sqrt(2 / 1.04)
        let g = Activation::LeakyRelu { alpha: 0.2 }.gain();
        assert!((g - (2.0f64 / 1.04).sqrt()).abs() < 1e-15);
        // default slope 0.01
        let g = Activation::LeakyRelu { alpha: 0.01 }.gain();
        assert!((g - 1.4141428569978354).abs() < 1e-12);
        assert_eq!(Activation::Selu.gain(), 0.75);
        assert!(Activation::Tanh.gain_note().is_none());
        assert!(Activation::Gelu.gain_note().unwrap().contains("design"));
    }
}
