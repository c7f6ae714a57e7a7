//! The buffers one inference runs in, sized from the plan: feature maps reused from
//! pass to pass, the bands the first layers run in, and the helpers that frame and
//! fill them.

use super::isa::Isa;
use super::kernels::{self, Plane, WinogradScratch, LANES, WINOGRAD_POINTS};
use super::layers::DenseLayer;
use super::plan::{At, Plan, Slot};
use crate::model::MEAN_BGR;

/// Every buffer one inference needs, sized for one padded input shape. Resizing
/// keeps the allocations, so an arena stops growing once it has seen its largest
/// shape.
#[derive(Default)]
pub(super) struct Arena {
    pub(super) shape: (usize, usize),
    /// Each map's plane (the plan's maps, by index) for this shape; the image's holds
    /// three floats per pixel (BGR, means removed; packed, or split by column parity
    /// for the AVX-512 first layer), and only bands of it are ever filled.
    pub(super) planes: Vec<Plane>,
    /// The plan's buffers, each as long as the largest map it holds. The interiors
    /// keep stale values: every step writes the whole interior of its output before
    /// it is read, and zeroes its border.
    pub(super) buffers: Vec<Vec<f32>>,
    /// Per thread of the first layers, a scratch per banded step's input.
    pub(super) bands: Vec<Vec<Vec<f32>>>,
    /// One Winograd scratch per thread.
    pub(super) winograd: Vec<WinogradScratch>,
}

impl Arena {
    /// Sizes every buffer for a `height` x `width` input (both multiples of 32) and
    /// `threads`, unless it already is.
    pub(super) fn prepare(&mut self, plan: &Plan, threads: usize, height: usize, width: usize) {
        if self.shape == (height, width) {
            return;
        }
        self.shape = (height, width);
        self.planes = (plan.maps.iter().enumerate())
            .map(|(id, map)| map.plane(id, height, width))
            .collect();
        let mut sizes = vec![0; plan.buffers];
        for (map, plane) in plan.maps.iter().zip(&self.planes) {
            if let Slot::Buffer(b) = map.slot {
                sizes[b] = sizes[b].max(map.blocks * plane.len());
            }
        }
        self.buffers.resize_with(plan.buffers, Vec::new);
        for (buffer, size) in self.buffers.iter_mut().zip(sizes) {
            buffer.resize(size, 0.0);
        }
        // One band scratch per thread, each sized for the largest band.
        let rows = self.planes[plan.banded_output()].height;
        let mut sizes = vec![0; plan.banded];
        for start in 0..rows {
            let band = plan.band(&self.planes, &(start..(start + BAND_ROWS).min(rows)));
            for (step, (size, window)) in sizes.iter_mut().zip(band).enumerate() {
                let blocks = plan.maps[plan.steps[step].input.map].blocks;
                *size = (*size).max(blocks * window.len());
            }
        }
        self.bands.resize_with(threads, Vec::new);
        for band in &mut self.bands {
            band.resize_with(plan.banded, Vec::new);
            for (buffer, &size) in band.iter_mut().zip(&sizes) {
                buffer.resize(size, 0.0);
            }
        }
        // Winograd's scratch grows with its first bands.
        self.winograd.resize_with(threads, WinogradScratch::default);
    }

    /// Map `map`'s floats, from block `block` on.
    pub(super) fn map(&self, plan: &Plan, at: At) -> &[f32] {
        let Slot::Buffer(b) = plan.maps[at.map].slot else {
            unreachable!("the plan checks that no band is read after the bands")
        };
        &self.buffers[b][at.block * self.planes[at.map].len()..]
    }
}

/// The first layers run band by band: this many rows of the banded steps' output per
/// band. Their maps are the network's largest (at stride 2, up to 16 channels: 30 MB
/// for a 1024x1856 photo whole); a band of them stays within a core's L2 at 1024 px,
/// and recomputing the rows two bands share costs a few percent of these cheap layers.
pub(super) const BAND_ROWS: usize = 8;

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

/// `fine += nearest 2x upsampling of coarse` over the interior of `blocks` blocks.
pub(super) fn add_upsampled(fine: &mut [f32], fp: Plane, coarse: &[f32], cp: Plane, blocks: usize) {
    debug_assert!(fp.height == cp.height * 2 && fp.width == cp.width * 2);
    for b in 0..blocks {
        for y in 0..fp.height {
            let dst = &mut fine[fp.at(b, y, 0)..][..fp.width * LANES];
            let src = &coarse[cp.at(b, y / 2, 0)..][..cp.width * LANES];
            for (x, pixel) in dst.chunks_exact_mut(LANES).enumerate() {
                for (d, s) in pixel.iter_mut().zip(&src[(x / 2) * LANES..][..LANES]) {
                    *d += s;
                }
            }
        }
    }
}
