//! What a pass's activations weigh: the counting behind
//! [`Executor::activation_profile`](super::Executor::activation_profile), the
//! basis of `verify`'s memory estimate (`crate::memory`). Which outputs count
//! (not views, shapes or weight transposes) and which are spatial (the ops that
//! make a convolutional net's backward need more beside its activations).

use crate::ops::Op;

/// Whether `op`'s output shares its input's storage, reads only a shape, or
/// is the graph's own constant: such outputs are not counted by
/// [`Executor::activation_bytes`](super::Executor::activation_bytes) (`ConstantOfShape` and `Range` allocate, and
/// are).
pub(super) fn is_view(op: Op) -> bool {
    use reinit_graph::OpClass;
    op.class() == OpClass::Shape
        || matches!(
            op,
            Op::Constant | Op::Reshape | Op::Flatten | Op::Squeeze | Op::Unsqueeze | Op::Identity
        )
}

/// Whether `op` works on feature maps (convolution, pooling, batch
/// statistics, LRN): the ops behind a convolutional net's activations, whose
/// training step needs more beside them than an attention or MLP graph's
/// ([`crate::memory::Estimate`]).
pub(super) fn is_spatial(op: Op) -> bool {
    matches!(
        op,
        Op::Conv
            | Op::ConvTranspose
            | Op::FusedConv
            | Op::BatchNormalization
            | Op::MaxPool
            | Op::AveragePool
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::LRN
    )
}

/// The activation bytes of one pass ([`Executor::activation_profile`](super::Executor::activation_profile)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActivationProfile {
    /// Every float value computed (views, shapes and weight transposes not counted).
    pub bytes: u64,
    /// The part of `bytes` from spatial ops (convolutions, pooling, BN, LRN).
    pub spatial_bytes: u64,
}

/// The running sums behind an [`ActivationProfile`], added to as a pass runs.
#[derive(Default)]
pub(super) struct ActivationCount {
    all: std::cell::Cell<u64>,
    spatial: std::cell::Cell<u64>,
}

impl ActivationCount {
    pub(super) fn add(&self, bytes: u64, spatial: bool) {
        self.all.set(self.all.get() + bytes);
        if spatial {
            self.spatial.set(self.spatial.get() + bytes);
        }
    }

    pub(super) fn profile(&self) -> ActivationProfile {
        ActivationProfile {
            bytes: self.all.get(),
            spatial_bytes: self.spatial.get(),
        }
    }
}
