//! What a profiled pass reports: time and multiply-accumulates per layer kind.

use std::time::Duration;

/// The layer kinds of the network, for profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The 3x3 stride-2 convolution of the 3-channel input.
    FirstLayer,
    /// Dense 3x3 convolutions (FPN merge, SSH).
    Full3x3,
    /// 1x1 convolutions (backbone pointwise, FPN laterals, heads).
    Pointwise,
    /// Depthwise 3x3 convolutions of the backbone.
    Depthwise,
    /// Everything else: input conversion, upsample + add, borders, head outputs.
    Other,
}

impl LayerKind {
    pub const ALL: [LayerKind; 5] = [
        LayerKind::FirstLayer,
        LayerKind::Full3x3,
        LayerKind::Pointwise,
        LayerKind::Depthwise,
        LayerKind::Other,
    ];
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::FirstLayer => "first layer",
            LayerKind::Full3x3 => "full 3x3",
            LayerKind::Pointwise => "pointwise 1x1",
            LayerKind::Depthwise => "depthwise 3x3",
            LayerKind::Other => "other",
        }
    }
}

/// Time and multiply-accumulates of one layer kind in one inference.
#[derive(Debug, Clone, Copy)]
pub struct LayerTime {
    pub kind: LayerKind,
    pub macs: u64,
    pub time: Duration,
}
