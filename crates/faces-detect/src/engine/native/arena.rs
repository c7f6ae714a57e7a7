//! The buffers one inference runs in: feature maps reused from pass to pass,
//! the bands the first layers run in, and the helpers that frame and fill them.

use super::isa::Isa;
use super::kernels::{self, Plane, WinogradScratch, LANES, WINOGRAD_POINTS};
use super::layers::DenseLayer;
use crate::model::MEAN_BGR;

/// Moves `from`'s buffer (at least as long as `to` needs) to `to`, framed for `plane`.
pub(super) fn lend(from: &mut FixedMap, to: &mut FixedMap, plane: Plane) {
    to.data = std::mem::take(&mut from.data);
    to.plane = plane;
    let blocks = to.data.len() / plane.len();
    zero_border(&mut to.data, plane, blocks);
}

/// A feature map whose plane is known once the arena is prepared.
#[derive(Default)]
pub(super) struct FixedMap {
    pub(super) plane: Plane,
    pub(super) data: Vec<f32>,
}

impl FixedMap {
    /// Sizes the map for `blocks` planes with zero borders. The interior keeps stale
    /// values: every layer writes the whole interior of its output before it is read.
    pub(super) fn resize(&mut self, plane: Plane, blocks: usize) {
        self.plane = plane;
        self.data.resize(blocks * plane.len(), 0.0);
        zero_border(&mut self.data, plane, blocks);
    }
}

/// The rows of each banded map one band needs (see `NativeNetwork::band`).
pub(super) struct Band {
    pub(super) input: Plane,
    pub(super) stem: Plane,
    pub(super) dw0: Plane,
    pub(super) pw0: Plane,
}

/// One thread's buffers for the banded maps, reused band after band.
#[derive(Default)]
pub(super) struct BandScratch {
    pub(super) input: Vec<f32>,
    pub(super) stem_out: Vec<f32>,
    pub(super) dw0_out: Vec<f32>,
    pub(super) pw0_out: Vec<f32>,
}

#[derive(Default)]
pub(super) struct SshScratch {
    /// conv7X7_2's output.
    pub(super) t2: FixedMap,
    /// The module's map (see [`Ssh`]).
    pub(super) out: FixedMap,
}

/// Every buffer one inference needs, sized for one padded input shape. Resizing
/// keeps the allocations, so an arena stops growing once it has seen its largest
/// shape.
#[derive(Default)]
pub(super) struct Arena {
    pub(super) shape: (usize, usize),
    /// The padded input's plane, three floats per pixel (BGR, means removed; packed,
    /// or split by column parity for the AVX-512 first layer); only bands of it are
    /// ever filled.
    pub(super) image: Plane,
    /// One band scratch per thread of the first layers.
    pub(super) bands: Vec<BandScratch>,
    /// One Winograd scratch per thread.
    pub(super) winograd: Vec<WinogradScratch>,
    pub(super) ping: FixedMap,
    pub(super) pong: FixedMap,
    pub(super) levels: [FixedMap; 3],
    pub(super) lateral: [FixedMap; 3],
    pub(super) merged: [FixedMap; 2],
    pub(super) ssh: [SshScratch; 3],
    pub(super) heads: [FixedMap; 3],
}

/// Tile rows per Winograd band: as many as keep the band's transformed input and
/// products near 512 KiB (within a core's L2), at least one.
pub(super) fn winograd_band_tiles(layer: &DenseLayer, plane: Plane) -> usize {
    const BAND_FLOATS: usize = 128 * 1024;
    let blocks = layer.in_channels / LANES + layer.out_blocks();
    let per_tile_row = WINOGRAD_POINTS * blocks * (plane.width / 2 + 2) * LANES;
    (BAND_FLOATS / per_tile_row).max(1)
}

/// Zeroes the one-pixel border of `blocks` planes, as far as `plane` stores it: a
/// scratch map reused at another size or for another band holds stale values where
/// the border now lies.
pub(super) fn zero_border(data: &mut [f32], plane: Plane, blocks: usize) {
    let (row, lanes) = (plane.row_len(), plane.lanes);
    for b in 0..blocks {
        let block = &mut data[b * plane.len()..][..plane.len()];
        for (r, stored) in plane.bordered_rows().zip(block.chunks_exact_mut(row)) {
            if r == 0 || r == plane.height + 1 {
                stored.fill(0.0);
            } else if lanes == LANES {
                // A constant length: two stores instead of two calls to memset.
                stored[..LANES].copy_from_slice(&[0.0; LANES]);
                stored[row - LANES..].copy_from_slice(&[0.0; LANES]);
            } else {
                stored[..lanes].fill(0.0);
                stored[row - lanes..].fill(0.0);
            }
        }
    }
}

/// Writes the rows that `window` stores into `data` (one block of three floats per
/// pixel): the image's BGR, means removed, zeros in the border and right of and below
/// the image; `split` in the layout [`kernels::stem`] reads, else packed.
pub(super) fn fill_input(
    isa: Isa,
    split: bool,
    rgb: &[u8],
    (width, height): (usize, usize),
    window: Plane,
    data: &mut [f32],
) {
    let row_len = window.row_len();
    for (r, row) in window.bordered_rows().zip(data.chunks_exact_mut(row_len)) {
        // Bordered row r is image row r - 1.
        if r == 0 || r > height {
            row.fill(0.0);
            continue;
        }
        let source = &rgb[(r - 1) * width * 3..][..width * 3];
        if split {
            kernels::split_row(isa, source, MEAN_BGR, row);
        } else {
            let (border, pixels) = row.split_at_mut(3);
            let (image, right) = pixels.split_at_mut(width * 3);
            border.fill(0.0);
            kernels::bgr_row(isa, source, MEAN_BGR, image);
            right.fill(0.0);
        }
    }
}

/// `fine += nearest 2x upsampling of coarse` over the interior.
pub(super) fn add_upsampled(fine: &mut FixedMap, coarse: &FixedMap) {
    let (fp, cp) = (fine.plane, coarse.plane);
    debug_assert!(fp.height == cp.height * 2 && fp.width == cp.width * 2);
    // `fine` may be a lent, longer buffer; `coarse` is sized exactly.
    let blocks = coarse.data.len() / cp.len();
    for b in 0..blocks {
        for y in 0..fp.height {
            let dst = &mut fine.data[fp.at(b, y, 0)..][..fp.width * LANES];
            let src = &coarse.data[cp.at(b, y / 2, 0)..][..cp.width * LANES];
            for (x, pixel) in dst.chunks_exact_mut(LANES).enumerate() {
                for (d, s) in pixel.iter_mut().zip(&src[(x / 2) * LANES..][..LANES]) {
                    *d += s;
                }
            }
        }
    }
}
