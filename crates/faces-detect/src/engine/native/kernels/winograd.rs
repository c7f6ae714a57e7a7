//! Winograd F(2x2, 3x3) for the 3x3 stride-1 dense layers: the transforms here,
//! the products on the dense kernel.

use super::super::isa::{Isa, IsaKind};
#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::conv::dense;
use super::layers::{activate, paired_weights, Dense};
use super::layout::{rows_of, stores, Plane, RowsOut, Tiles, LANES};

/// Winograd F(2x2, 3x3) for 3x3 stride-1 dense convolutions: each 2x2 output tile
/// from its 4x4 input patch, transformed (`V = Bt d B`), multiplied point by point
/// with the transformed weights (`U = G g Gt`; 16 pointwise convolutions over the
/// tiles, on the dense kernel) and transformed back (`Y = At M A`): 16 multiplies per
/// 4 outputs and channel pair instead of 36. The transforms' coefficients are 0, 1
/// and 1/2, so the results differ from the direct sums only by float rounding.
pub(crate) const WINOGRAD_POINTS: usize = 16;

/// A 3x3 convolution's weights, transformed for Winograd F(2x2, 3x3).
pub(crate) struct Winograd {
    /// Per point: a 1x1 convolution's weights, `[out block][in channel][LANES]`.
    pub(super) points: Vec<f32>,
    /// Per point: the same, paired ([`paired_weights`]).
    pub(super) paired: Vec<f32>,
    pub(super) in_channels: usize,
    pub(super) out_blocks: usize,
    /// Bias and slope of the pointwise products: none (the layer's come after).
    pub(super) zeros: Vec<f32>,
    pub(super) ones: Vec<f32>,
}

impl Winograd {
    /// The transformed weights of `conv`, if it is a 3x3 stride-1 convolution over
    /// whole channel blocks.
    pub(crate) fn new(conv: &Dense) -> Option<Self> {
        if conv.kernel != 3 || conv.stride != 1 || !conv.in_channels.is_multiple_of(LANES) {
            return None;
        }
        const G: [[f32; 3]; 4] = [
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ];
        let (ic_count, out_blocks) = (conv.in_channels, conv.out_blocks());
        let set = out_blocks * ic_count * LANES;
        let mut points = vec![0f32; WINOGRAD_POINTS * set];
        for ob in 0..out_blocks {
            for ic in 0..ic_count {
                for lane in 0..LANES {
                    let g = |ky: usize, kx: usize| {
                        conv.weights[((ob * 9 + ky * 3 + kx) * ic_count + ic) * LANES + lane]
                    };
                    for i in 0..4 {
                        // Row i of G g (4 x 3), then times Gt.
                        let row: [f32; 3] =
                            std::array::from_fn(|kx| (0..3).map(|ky| G[i][ky] * g(ky, kx)).sum());
                        for j in 0..4 {
                            let u: f32 = (0..3).map(|kx| row[kx] * G[j][kx]).sum();
                            points[(i * 4 + j) * set + (ob * ic_count + ic) * LANES + lane] = u;
                        }
                    }
                }
            }
        }
        let paired = points
            .chunks_exact(set)
            .flat_map(|point| paired_weights(point, out_blocks))
            .collect();
        Some(Self {
            points,
            paired,
            in_channels: ic_count,
            out_blocks,
            zeros: vec![0.0; out_blocks * LANES],
            ones: vec![1.0; out_blocks * LANES],
        })
    }

    pub(super) fn point(&self, p: usize) -> Dense<'_> {
        let set = self.out_blocks * self.in_channels * LANES;
        let paired_set = self.out_blocks / 2 * 2 * self.in_channels * LANES;
        Dense {
            weights: &self.points[p * set..][..set],
            paired: &self.paired[p * paired_set..][..paired_set],
            bias: &self.zeros,
            slope: &self.ones,
            in_channels: self.in_channels,
            kernel: 1,
            stride: 1,
            padding: 0,
        }
    }
}

/// One thread's transformed tiles, reused from band to band.
#[derive(Default)]
pub(crate) struct WinogradScratch {
    pub(super) v: Vec<f32>,
    pub(super) m: Vec<f32>,
}

/// Whether `conv` may run by [`winograd`] on `plane`: whole 2x2 tiles.
pub(crate) fn winograd_fits(plane: Plane) -> bool {
    plane.height.is_multiple_of(2) && plane.width.is_multiple_of(2) && plane.lanes == LANES
}

/// The output rows `out` owns (an even start and count) of the 3x3 stride-1
/// convolution `conv` (its Winograd weights `wino`), into blocks `out_block..`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn winograd(
    isa: Isa,
    conv: &Dense,
    wino: &Winograd,
    input: &[f32],
    in_plane: Plane,
    out: &RowsOut,
    out_block: usize,
    scratch: &mut WinogradScratch,
) {
    let rows = out.rows();
    assert!(winograd_fits(in_plane) && out.plane.same_shape(in_plane));
    assert!(rows.start.is_multiple_of(2) && rows.len().is_multiple_of(2));
    assert!(conv.kernel == 3 && conv.stride == 1);
    assert_eq!(
        (wino.in_channels, wino.out_blocks),
        (conv.in_channels, conv.out_blocks())
    );
    assert_eq!(conv.bias.len(), conv.slope.len());
    let (in_blocks, out_blocks) = (conv.in_channels / LANES, conv.out_blocks());
    assert!(input.len() >= in_blocks * in_plane.len());
    // Tile row t reads bordered input rows 2t..2t+4.
    assert!(stores(in_plane, &(rows.start..rows.end + 2)));
    assert!((out_block + out_blocks) * out.plane.len() <= out.len);
    if rows.is_empty() {
        return;
    }
    let tiles = Tiles::new(rows.len() / 2, in_plane.width / 2);
    let WinogradScratch { v, m } = scratch;
    v.resize(WINOGRAD_POINTS * in_blocks * tiles.len(), 0.0);
    m.resize(WINOGRAD_POINTS * out_blocks * tiles.len(), 0.0);
    let first_tile_row = rows.start / 2;
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA as for `dense`; the input rows and `v`'s length checked above.
        IsaKind::Avx2Fma | IsaKind::Avx512 => unsafe {
            avx2::winograd_input(input, in_plane, in_blocks, first_tile_row, v, tiles)
        },
        _ => winograd_input_scalar(input, in_plane, in_blocks, first_tile_row, v, tiles),
    }
    let (v_set, m_set) = (in_blocks * tiles.len(), out_blocks * tiles.len());
    for p in 0..WINOGRAD_POINTS {
        let v = &v[p * v_set..][..v_set];
        rows_of(&mut m[p * m_set..][..m_set], tiles.flat, 0..1, |o| {
            dense(isa, &wino.point(p), v, tiles.flat, o, 0)
        });
    }
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2/FMA as above; `m`'s length set above; writes go through `out`.
        IsaKind::Avx2Fma | IsaKind::Avx512 => unsafe {
            avx2::winograd_output(m, tiles, out_blocks, conv.bias, conv.slope, out, out_block)
        },
        _ => winograd_output_scalar(m, tiles, out_blocks, conv.bias, conv.slope, out, out_block),
    }
}

/// `V = Bt d B` of every tile's 4x4 input patch, point p of block b at
/// `(p * blocks + b) * tiles.len()` + the tile's pixel offset in `tiles`.
pub(super) fn winograd_input_scalar(
    input: &[f32],
    in_plane: Plane,
    blocks: usize,
    first_tile_row: usize,
    v: &mut [f32],
    tiles: Tiles,
) {
    let row = in_plane.row_len();
    for b in 0..blocks {
        for ty in 0..tiles.rows {
            let top = b * in_plane.len() + (2 * (first_tile_row + ty) - in_plane.first_row) * row;
            for tx in 0..tiles.cols {
                let at = tiles.at(ty, tx);
                for lane in 0..LANES {
                    let d = |i: usize, j: usize| input[top + i * row + (2 * tx + j) * LANES + lane];
                    // The rows of Bt d, then each times B.
                    let t: [[f32; 4]; 4] = [
                        std::array::from_fn(|j| d(0, j) - d(2, j)),
                        std::array::from_fn(|j| d(1, j) + d(2, j)),
                        std::array::from_fn(|j| d(2, j) - d(1, j)),
                        std::array::from_fn(|j| d(1, j) - d(3, j)),
                    ];
                    for (i, t) in t.iter().enumerate() {
                        let out = [t[0] - t[2], t[1] + t[2], t[2] - t[1], t[1] - t[3]];
                        for (j, value) in out.into_iter().enumerate() {
                            v[((i * 4 + j) * blocks + b) * tiles.len() + at + lane] = value;
                        }
                    }
                }
            }
        }
    }
}

/// `Y = At M A` of every tile's 16 products, plus bias, activated, into the 2x2
/// output pixels.
pub(super) fn winograd_output_scalar(
    m: &[f32],
    tiles: Tiles,
    blocks: usize,
    bias: &[f32],
    slope: &[f32],
    out: &RowsOut,
    out_block: usize,
) {
    let first_tile_row = out.rows.start / 2;
    for k in 0..blocks {
        for ty in 0..tiles.rows {
            for tx in 0..tiles.cols {
                let at = tiles.at(ty, tx);
                let mut y = [[[0f32; LANES]; 2]; 2];
                for lane in 0..LANES {
                    let mv = |i: usize, j: usize| {
                        m[((i * 4 + j) * blocks + k) * tiles.len() + at + lane]
                    };
                    let s: [[f32; 4]; 2] = [
                        std::array::from_fn(|j| mv(0, j) + mv(1, j) + mv(2, j)),
                        std::array::from_fn(|j| mv(1, j) - mv(2, j) - mv(3, j)),
                    ];
                    let (b, sl) = (bias[k * LANES + lane], slope[k * LANES + lane]);
                    for r in 0..2 {
                        y[r][0][lane] = activate(s[r][0] + s[r][1] + s[r][2] + b, sl);
                        y[r][1][lane] = activate(s[r][1] - s[r][2] - s[r][3] + b, sl);
                    }
                }
                for (r, pixels) in y.iter().enumerate() {
                    for (c, values) in pixels.iter().enumerate() {
                        out.store(
                            out_block + k,
                            2 * (first_tile_row + ty) + r,
                            2 * tx + c,
                            values,
                        );
                    }
                }
            }
        }
    }
}
