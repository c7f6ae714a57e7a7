//! A layer's parameters as the kernels read them: dense and depthwise convolutions,
//! their shape checks, and the activation.

use std::ops::Range;

use super::layout::{rows_read, stores, Plane, RowsOut, LANES};

/// A dense convolution (every output channel sees every input channel), kernel 1x1
/// (padding 0) or 3x3 (padding 1, or 0 at stride 2: dlib's ResNet), with bias and a per-channel activation slope
/// (`max(x, slope * x)`: 1 = none, 0 = ReLU, 0.1 = LeakyReLU(0.1)).
pub(crate) struct Dense<'a> {
    /// `[out block][tap][input channel][LANES]`, tap = ky * kernel + kx.
    pub weights: &'a [f32],
    /// The same weights for the AVX-512 tiles, which hold two neighbouring output
    /// blocks in one register: [`paired_weights`] of `weights`; or empty, and the
    /// AVX2 tiles run instead.
    pub paired: &'a [f32],
    /// `out_blocks * LANES` each.
    pub bias: &'a [f32],
    pub slope: &'a [f32],
    /// Real input channels; the last input block may be partly unused (the RGB input).
    pub in_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    /// Zero pixels added on each side: 1 for 3x3 (except dlib's stride-2 layers: 0),
    /// 0 for 1x1.
    pub padding: usize,
}

impl Dense<'_> {
    pub(crate) fn out_blocks(&self) -> usize {
        self.bias.len() / LANES
    }
    pub(super) fn taps(&self) -> usize {
        self.kernel * self.kernel
    }
    pub(super) fn in_blocks(&self, in_plane: Plane) -> usize {
        self.in_channels.div_ceil(in_plane.lanes)
    }
    /// Offset from an output pixel's input position to its window's top-left, in
    /// bordered coordinates: 0 with padding 1 (the border is the padding), else 1.
    pub(super) fn window_offset(&self) -> usize {
        1 - self.padding
    }
    /// The output plane of this convolution over `in_plane`.
    pub(crate) fn out_plane(&self, in_plane: Plane) -> Plane {
        let size = |n: usize| (n + 2 * self.padding - self.kernel) / self.stride + 1;
        Plane::blocked(size(in_plane.height), size(in_plane.width))
    }
    /// Bordered input rows that output rows `rows` read.
    pub(crate) fn rows_read(&self, rows: &Range<usize>) -> Range<usize> {
        rows_read(rows, self.kernel, self.stride, self.window_offset())
    }
    /// Checks everything the kernels index by, so that their reads and writes stay in
    /// bounds: the output plane is the strided input plane, the input stores every row
    /// the output rows read, slices are long enough.
    pub(super) fn check(&self, input: &[f32], in_plane: Plane, out: &RowsOut, out_block: usize) {
        assert!(
            self.kernel == 1 || self.kernel == 3,
            "kernel {}",
            self.kernel
        );
        assert!(
            self.stride == 1 || self.stride == 2,
            "stride {}",
            self.stride
        );
        assert!(
            self.kernel == 3 || self.stride == 1,
            "1x1 convolutions are stride 1"
        );
        assert!(
            self.padding == self.kernel / 2
                || (self.kernel, self.stride, self.padding) == (3, 2, 0),
            "padding {} for kernel {} stride {}",
            self.padding,
            self.kernel,
            self.stride
        );
        assert!(
            self.padding > 0 || (in_plane.height >= self.kernel && in_plane.width >= self.kernel)
        );
        assert!(self.in_channels > 0 && self.bias.len().is_multiple_of(LANES));
        assert_eq!(self.slope.len(), self.bias.len());
        let per_block = self.taps() * self.in_channels * LANES;
        assert_eq!(self.weights.len(), self.out_blocks() * per_block);
        assert!(
            self.paired.is_empty() || self.paired.len() == self.out_blocks() / 2 * 2 * per_block
        );
        assert!(in_plane.lanes > 0 && in_plane.lanes <= LANES);
        assert!(input.len() >= self.in_blocks(in_plane) * in_plane.len());
        assert!(out.plane.same_shape(self.out_plane(in_plane)));
        assert!(stores(in_plane, &self.rows_read(&out.rows)));
        assert!((out_block + self.out_blocks()) * out.plane.len() <= out.len);
    }
}

/// `weights` of `out_blocks` blocks (`[out block][tap][input channel][LANES]`) with
/// each two neighbouring blocks side by side: `[block pair][tap][input channel][2 *
/// LANES]`, so that one 512-bit load gives a pair's weights for one input channel. A
/// last odd block is left out: it runs on the AVX2 tiles.
pub(crate) fn paired_weights(weights: &[f32], out_blocks: usize) -> Vec<f32> {
    let per_block = weights.len() / out_blocks.max(1);
    let mut paired = Vec::with_capacity(out_blocks / 2 * 2 * per_block);
    for pair in weights.chunks_exact(2 * per_block).take(out_blocks / 2) {
        let (low, high) = pair.split_at(per_block);
        for (l, h) in low.chunks_exact(LANES).zip(high.chunks_exact(LANES)) {
            paired.extend_from_slice(l);
            paired.extend_from_slice(h);
        }
    }
    paired
}

/// A depthwise 3x3 convolution (padding 1): each channel with its own 9 weights.
pub(crate) struct Depthwise<'a> {
    /// `[block][tap][LANES]`.
    pub weights: &'a [f32],
    pub bias: &'a [f32],
    pub slope: &'a [f32],
    pub stride: usize,
}

impl Depthwise<'_> {
    pub(crate) fn blocks(&self) -> usize {
        self.bias.len() / LANES
    }
    /// Bordered input rows that output rows `rows` read.
    pub(crate) fn rows_read(&self, rows: &Range<usize>) -> Range<usize> {
        rows_read(rows, 3, self.stride, 0)
    }
    pub(super) fn check(&self, input: &[f32], in_plane: Plane, out: &RowsOut) {
        assert!(
            self.stride == 1 || self.stride == 2,
            "stride {}",
            self.stride
        );
        assert!(self.bias.len().is_multiple_of(LANES) && self.slope.len() == self.bias.len());
        assert_eq!(self.weights.len(), self.blocks() * 9 * LANES);
        assert_eq!(in_plane.lanes, LANES);
        assert!(input.len() >= self.blocks() * in_plane.len());
        assert!(out.plane.same_shape(in_plane.strided(self.stride)));
        assert!(stores(in_plane, &self.rows_read(&out.rows)));
        assert!(self.blocks() * out.plane.len() <= out.len);
    }
}

/// The activation: `max(x, slope * x)` is LeakyReLU for 0 <= slope <= 1.
#[inline(always)]
pub(super) fn activate(x: f32, slope: f32) -> f32 {
    x.max(x * slope)
}
