//! AVX2 + FMA kernels. Every function here is `unsafe` for two reasons that its
//! callers in the parent module establish: the CPU has AVX2 and FMA (`Isa::detect`),
//! and the shapes passed the layer's `check`, so every pointer formed below stays
//! inside `input`, the weights, or a row the `RowsOut` owns.

use std::arch::x86_64::*;

use super::layers::{Dense, Depthwise};
use super::layout::{Plane, RowsOut, Tiles, LANES};

/// Output pixels per tile with two output blocks: 12 accumulators, 2 weight
/// registers and a broadcast fit the 16 YMM registers.
const PIXELS_2: usize = 6;
/// Output pixels per tile with one output block.
const PIXELS_1: usize = 12;

/// Per-call constants of one dense layer.
struct DenseArgs {
    input: *const f32,
    in_plane_len: usize,
    /// The input's first stored bordered row.
    in_first_row: usize,
    in_row: usize,
    in_blocks: usize,
    /// Floats from one input pixel to the next (channels per input block).
    in_lanes: usize,
    in_channels: usize,
    kernel: usize,
    stride: usize,
    weights: *const f32,
    /// Floats from one output block's weights to the next.
    w_block: usize,
}

impl DenseArgs {
    fn new(conv: &Dense, input: &[f32], in_plane: Plane) -> Self {
        DenseArgs {
            input: input.as_ptr(),
            in_plane_len: in_plane.len(),
            in_first_row: in_plane.first_row,
            in_row: in_plane.row_len(),
            in_blocks: conv.in_blocks(in_plane),
            in_lanes: in_plane.lanes,
            in_channels: conv.in_channels,
            kernel: conv.kernel,
            stride: conv.stride,
            weights: conv.weights.as_ptr(),
            w_block: conv.taps() * conv.in_channels * LANES,
        }
    }
}

/// The dense kernel; `wide` runs its tiles of two or more output blocks on
/// AVX-512 ([`avx512`]), for which the caller also establishes AVX-512 F + DQ.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dense(
    conv: &Dense,
    input: &[f32],
    in_plane: Plane,
    out: &RowsOut,
    out_block: usize,
    wide: bool,
) {
    let args = DenseArgs::new(conv, input, in_plane);
    let (off, s) = (conv.window_offset(), conv.stride);
    let width = out.plane.width;
    let out_blocks = conv.out_blocks();
    // The tile's pixels are LANES floats apart (stride 1 over whole blocks): a
    // constant the tiles fold into their addressing.
    let unit = s * args.in_lanes == LANES;
    for y in out.rows.clone() {
        let mut ob = 0;
        while ob < out_blocks {
            // Output blocks per tile, and pixels per tile.
            let (blocks, step) = match out_blocks - ob {
                n if wide && n >= 4 => (4, avx512::PIXELS),
                n if wide && n >= 2 => (2, avx512::PIXELS),
                n if n >= 2 => (2, PIXELS_2),
                _ => (1, PIXELS_1),
            };
            let mut x = 0;
            while x < width {
                let n = step.min(width - x);
                // SAFETY: (y * s + off, x * s + off) is the top-left of pixel x's
                // window in bordered input coordinates; `check` guarantees that
                // window and those of the next n - 1 pixels are inside the plane
                // and its rows stored (from `in_first_row` on).
                let src = args.input.add(
                    (y * s + off - args.in_first_row) * args.in_row + (x * s + off) * args.in_lanes,
                );
                let tile = Tile {
                    src,
                    weights: args.weights.add(ob * args.w_block),
                    // Blocks ob.. as pairs; ob is even here, and the pair exists
                    // where the tile is wide (`check` sized `paired`).
                    paired: if wide && blocks >= 2 {
                        conv.paired.as_ptr().add(ob * args.w_block)
                    } else {
                        std::ptr::null()
                    },
                    bias: conv.bias.as_ptr().add(ob * LANES),
                    slope: conv.slope.as_ptr().add(ob * LANES),
                    dst: out.pixel(out_block + ob, y, x),
                    dst_block: out.plane.len(),
                };
                match (wide, blocks, unit) {
                    (true, 4, true) => avx512::dispatch4::<true>(&args, &tile, n),
                    (true, 4, false) => avx512::dispatch4::<false>(&args, &tile, n),
                    (true, 2, true) => avx512::dispatch2::<true>(&args, &tile, n),
                    (true, 2, false) => avx512::dispatch2::<false>(&args, &tile, n),
                    (_, 2, true) => dispatch2::<true>(&args, &tile, n),
                    (_, 2, false) => dispatch2::<false>(&args, &tile, n),
                    (_, _, true) => dispatch1::<true>(&args, &tile, n),
                    _ => dispatch1::<false>(&args, &tile, n),
                }
                x += n;
            }
            ob += blocks;
        }
    }
    // The last pixel written by each tile must lie in our rows: `out.pixel` checked
    // the first; the tile's others are in the same row, x < width.
}

impl DenseArgs {
    /// Floats from one pixel's input to the next, a constant where `UNIT`.
    #[inline(always)]
    fn step<const UNIT: bool>(&self) -> usize {
        if UNIT {
            LANES
        } else {
            self.stride * self.in_lanes
        }
    }
}

/// Calls `channel(src, w)` for every tap and input channel of a tile, in the order
/// the tiles' FMAs follow: `src` is that channel's input at the tile's first pixel
/// (the tile's window starts at `tile_src`), `w` its weights, `w_step` floats after
/// the previous channel's, from `weights`.
#[inline(always)]
unsafe fn each_channel(
    args: &DenseArgs,
    tile_src: *const f32,
    weights: *const f32,
    w_step: usize,
    mut channel: impl FnMut(*const f32, *const f32),
) {
    let mut w = weights;
    for ky in 0..args.kernel {
        for kx in 0..args.kernel {
            let tap_src = tile_src.add(ky * args.in_row + kx * args.in_lanes);
            for ib in 0..args.in_blocks {
                let src = tap_src.add(ib * args.in_plane_len);
                let lanes = (args.in_channels - ib * args.in_lanes).min(args.in_lanes);
                // A constant count where the block is whole, so it unrolls.
                if lanes == LANES {
                    for c in 0..LANES {
                        channel(src.add(c), w);
                        w = w.add(w_step);
                    }
                } else {
                    for c in 0..lanes {
                        channel(src.add(c), w);
                        w = w.add(w_step);
                    }
                }
            }
        }
    }
}

/// One tile's pointers: input window of its first pixel, its output block's
/// weights (and paired weights, for the AVX-512 tiles), bias, slope, and the output pixel.
struct Tile {
    src: *const f32,
    weights: *const f32,
    paired: *const f32,
    bias: *const f32,
    slope: *const f32,
    dst: *mut f32,
    dst_block: usize,
}

/// `$name::<UNIT>(args, tile, pixels)`: the `dense_tile` in scope for `pixels`
/// pixels and `$ob` registers of output blocks; `UNIT`: pixels LANES floats apart.
macro_rules! dispatch {
    ($vis:vis $name:ident, $ob:literal, [$($p:literal)*]) => {
        #[target_feature(enable = "avx2,fma")]
        $vis unsafe fn $name<const UNIT: bool>(args: &DenseArgs, tile: &Tile, pixels: usize) {
            match pixels {
                $($p => dense_tile::<$p, $ob, UNIT>(args, tile),)*
                _ => unreachable!("tile of {pixels} pixels"),
            }
        }
    };
}
dispatch!(dispatch2, 2, [1 2 3 4 5 6]);
dispatch!(dispatch1, 1, [1 2 3 4 5 6 7 8 9 10 11 12]);

/// `P` output pixels of one row times `OB` output blocks, accumulated in registers
/// over every tap and input channel, then bias-added, activated and stored. `UNIT`:
/// the pixels' inputs are LANES floats apart (stride 1, whole input blocks).
#[target_feature(enable = "avx2,fma")]
unsafe fn dense_tile<const P: usize, const OB: usize, const UNIT: bool>(
    args: &DenseArgs,
    tile: &Tile,
) {
    let mut acc = [[_mm256_setzero_ps(); OB]; P];
    for (j, lane) in acc[0].iter_mut().enumerate() {
        *lane = _mm256_loadu_ps(tile.bias.add(j * LANES));
    }
    for p in 1..P {
        acc[p] = acc[0];
    }
    let step = args.step::<UNIT>();
    each_channel(args, tile.src, tile.weights, LANES, |src, w| {
        fma_channel::<P, OB>(&mut acc, src, w, args.w_block, step)
    });
    for j in 0..OB {
        let slope = _mm256_loadu_ps(tile.slope.add(j * LANES));
        for (p, pixel) in acc.iter().enumerate() {
            let v = pixel[j];
            let v = _mm256_max_ps(v, _mm256_mul_ps(v, slope));
            _mm256_storeu_ps(tile.dst.add(j * tile.dst_block + p * LANES), v);
        }
    }
}

/// One input channel's contribution: its value at each of the P pixels times the
/// weight vectors of the OB output blocks.
#[inline(always)]
unsafe fn fma_channel<const P: usize, const OB: usize>(
    acc: &mut [[__m256; OB]; P],
    src: *const f32,
    w: *const f32,
    w_block: usize,
    step: usize,
) {
    let mut wv = [_mm256_setzero_ps(); OB];
    for (j, v) in wv.iter_mut().enumerate() {
        *v = _mm256_loadu_ps(w.add(j * w_block));
    }
    for (p, pixel) in acc.iter_mut().enumerate() {
        let x = _mm256_broadcast_ss(&*src.add(p * step));
        for j in 0..OB {
            pixel[j] = _mm256_fmadd_ps(x, wv[j], pixel[j]);
        }
    }
}

pub(super) mod avx512 {
    //! Kernels on 512-bit registers. The dense kernel's tiles (its row and tile loop
    //! is the parent's `dense`, with `wide`): one register holds two neighbouring
    //! output channel blocks (16 channels), so a tile of 12 pixels x 4 blocks keeps
    //! 24 accumulators, 2 weight registers and a broadcast in the 32 ZMM registers.
    //! Also depthwise rows at stride 1 (`depthwise_row`) and the first layer
    //! (`stem_row`). Each output float gets the same FMAs in the same order as in the
    //! AVX2 kernels, so the two give equal results. Safety as for the parent module,
    //! plus: the CPU has AVX-512 F and DQ (an `Isa` of kind `Avx512`).

    use std::arch::x86_64::*;

    use super::super::layers::Dense;
    use super::super::layout::LANES;
    use super::{each_channel, DenseArgs, Tile};

    /// Output pixels per tile: 12 x 2 accumulators + 2 weights + a broadcast <= 32.
    pub(super) const PIXELS: usize = 12;

    dispatch!(pub(super) dispatch4, 2, [1 2 3 4 5 6 7 8 9 10 11 12]);
    dispatch!(pub(super) dispatch2, 1, [1 2 3 4 5 6 7 8 9 10 11 12]);

    /// `P` output pixels of one row times `OB` registers (2 `OB` output blocks),
    /// their weights from `tile.paired`. `UNIT` as for the AVX2 tile.
    #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
    unsafe fn dense_tile<const P: usize, const OB: usize, const UNIT: bool>(
        args: &DenseArgs,
        tile: &Tile,
    ) {
        let mut acc = [[_mm512_setzero_ps(); OB]; P];
        for (j, lane) in acc[0].iter_mut().enumerate() {
            // Blocks 2j and 2j + 1: 16 neighbouring floats.
            *lane = _mm512_loadu_ps(tile.bias.add(2 * j * LANES));
        }
        for p in 1..P {
            acc[p] = acc[0];
        }
        let step = args.step::<UNIT>();
        // Paired weights: a pair's 16 floats per input channel.
        each_channel(args, tile.src, tile.paired, 2 * LANES, |src, w| {
            fma_channel(&mut acc, src, w, args.w_block, step)
        });
        for j in 0..OB {
            let slope = _mm512_loadu_ps(tile.slope.add(2 * j * LANES));
            for (p, pixel) in acc.iter().enumerate() {
                let v = pixel[j];
                let v = _mm512_max_ps(v, _mm512_mul_ps(v, slope));
                let low = tile.dst.add(2 * j * tile.dst_block + p * LANES);
                let high = tile.dst.add((2 * j + 1) * tile.dst_block + p * LANES);
                _mm256_storeu_ps(low, _mm512_castps512_ps256(v));
                _mm256_storeu_ps(high, _mm512_extractf32x8_ps::<1>(v));
            }
        }
    }

    /// One input channel's contribution: its value at each of the P pixels times
    /// the weights of the 2 `OB` output blocks (paired, pairs `2 w_block` apart).
    #[inline(always)]
    unsafe fn fma_channel<const P: usize, const OB: usize>(
        acc: &mut [[__m512; OB]; P],
        src: *const f32,
        w: *const f32,
        w_block: usize,
        step: usize,
    ) {
        let mut wv = [_mm512_setzero_ps(); OB];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(w.add(j * 2 * w_block));
        }
        for (p, pixel) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*src.add(p * step));
            for j in 0..OB {
                pixel[j] = _mm512_fmadd_ps(x, wv[j], pixel[j]);
            }
        }
    }

    /// Pixel pairs per pass of [`depthwise_row`].
    const DEPTHWISE_PAIRS: usize = 4;

    /// The leading pixels of one output row of a stride-1 depthwise layer, two per
    /// register: in this layout pixels x and x + 1 of a block are 16 neighbouring
    /// floats, and so are their windows' taps. Returns how many pixels it wrote
    /// (a multiple of eight, the rest is the caller's). Each lane gets the AVX2 kernel's
    /// FMAs in its order. `top`: the window row of pixel 0; `weights`: the block's 9
    /// taps; `dst`: output pixel 0. Safety as for the parent's `depthwise`.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(in super::super) unsafe fn depthwise_row(
        top: *const f32,
        row: usize,
        weights: *const f32,
        bias: __m256,
        slope: __m256,
        dst: *mut f32,
        width: usize,
    ) -> usize {
        let double = |v: __m256| {
            let v = _mm512_castps256_ps512(v);
            _mm512_shuffle_f32x4::<0x44>(v, v)
        };
        let w: [__m512; 9] =
            std::array::from_fn(|tap| double(_mm256_loadu_ps(weights.add(tap * LANES))));
        let (bias, slope) = (double(bias), double(slope));
        let step = 2 * DEPTHWISE_PAIRS;
        let mut x = 0;
        while x + step <= width {
            let mut acc = [bias; DEPTHWISE_PAIRS];
            for ky in 0..3 {
                for kx in 0..3 {
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let src = top.add((x + 2 * i + kx) * LANES + ky * row);
                        *acc = _mm512_fmadd_ps(_mm512_loadu_ps(src), w[ky * 3 + kx], *acc);
                    }
                }
            }
            for (i, acc) in acc.into_iter().enumerate() {
                let v = _mm512_max_ps(acc, _mm512_mul_ps(acc, slope));
                _mm512_storeu_ps(dst.add((x + 2 * i) * LANES), v);
            }
            x += step;
        }
        x
    }

    /// The leading pixels of one output row of the first layer (see the parent's
    /// `stem`), 16 per pass, one register per output channel; returns how many it
    /// wrote (a multiple of 16). `rows`: the three split input rows of the row's
    /// windows; `dst`: output pixel 0 of the row, `width` pixels. Safety as for the
    /// parent module, plus AVX-512 F.
    #[target_feature(enable = "avx512f,avx2,fma")]
    pub(in super::super) unsafe fn stem_row(
        rows: [&[f32]; 3],
        half: usize,
        conv: &Dense,
        dst: *mut f32,
        width: usize,
    ) -> usize {
        let weights = conv.weights.as_ptr();
        let mut x = 0;
        while x + 16 <= width {
            let mut acc: [__m512; LANES] = std::array::from_fn(|oc| _mm512_set1_ps(conv.bias[oc]));
            for (ky, row) in rows.iter().enumerate() {
                for kx in 0..3 {
                    for c in 0..3 {
                        // SAFETY: bordered column 2x' + kx of pixels x' < x + 16 is
                        // index x' + kx / 2 <= width = half - 1 of its array.
                        let v =
                            _mm512_loadu_ps(row.as_ptr().add((2 * c + kx % 2) * half + x + kx / 2));
                        let w = weights.add(((ky * 3 + kx) * 3 + c) * LANES);
                        for (oc, acc) in acc.iter_mut().enumerate() {
                            *acc = _mm512_fmadd_ps(v, _mm512_set1_ps(*w.add(oc)), *acc);
                        }
                    }
                }
            }
            for (oc, acc) in acc.iter_mut().enumerate() {
                let slope = _mm512_set1_ps(conv.slope[oc]);
                *acc = _mm512_max_ps(*acc, _mm512_mul_ps(*acc, slope));
            }
            store_transposed(&acc, dst.add(x * LANES));
            x += 16;
        }
        x
    }

    /// Stores 8 registers of 16 pixels each (one per channel) as 16 pixels of 8
    /// channels from `dst`. Within each 128-bit lane (pixels 4L..4L + 4) a 4x4
    /// transpose of channels 0-3 and 4-7; then lanes are paired into pixels 2m, 2m + 1.
    #[inline(always)]
    unsafe fn store_transposed(a: &[__m512; LANES], dst: *mut f32) {
        let t: [__m512; 8] = std::array::from_fn(|i| {
            let (x, y) = (a[(i / 2) * 2], a[(i / 2) * 2 + 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(x, y)
            } else {
                _mm512_unpackhi_ps(x, y)
            }
        });
        // u[k]: channels 0-3 of pixel 4L + k in lane L; u[4 + k]: channels 4-7.
        let u: [__m512; 8] = std::array::from_fn(|i| {
            let (half, k) = (i / 4, i % 4);
            let (x, y) = (t[4 * half + k / 2], t[4 * half + 2 + k / 2]);
            if k % 2 == 0 {
                _mm512_shuffle_ps::<0x44>(x, y)
            } else {
                _mm512_shuffle_ps::<0xEE>(x, y)
            }
        });
        for k in [0, 2] {
            // Pixels 4L + k and 4L + k + 1 for each lane L.
            let (lo, hi) = ((u[k], u[4 + k]), (u[k + 1], u[4 + k + 1]));
            let p01 = _mm512_shuffle_f32x4::<0b01_00_01_00>(lo.0, lo.1);
            let q01 = _mm512_shuffle_f32x4::<0b01_00_01_00>(hi.0, hi.1);
            let p23 = _mm512_shuffle_f32x4::<0b11_10_11_10>(lo.0, lo.1);
            let q23 = _mm512_shuffle_f32x4::<0b11_10_11_10>(hi.0, hi.1);
            let pairs = [
                _mm512_shuffle_f32x4::<0b10_00_10_00>(p01, q01),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(p01, q01),
                _mm512_shuffle_f32x4::<0b10_00_10_00>(p23, q23),
                _mm512_shuffle_f32x4::<0b11_01_11_01>(p23, q23),
            ];
            for (lane, pair) in pairs.into_iter().enumerate() {
                _mm512_storeu_ps(dst.add((4 * lane + k) * LANES), pair);
            }
        }
    }

    /// 12 independent 512-bit FMA chains.
    #[target_feature(enable = "avx512f")]
    pub(in super::super) unsafe fn fma_loop(iterations: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); 12];
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        for _ in 0..iterations {
            for v in acc.iter_mut() {
                *v = _mm512_fmadd_ps(*v, a, b);
            }
        }
        let mut total = _mm512_setzero_ps();
        for v in acc {
            total = _mm512_add_ps(total, v);
        }
        _mm512_reduce_add_ps(total)
    }
}

/// 12 independent FMA chains, enough to hide the FMA latency on two units.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fma_loop(iterations: u64) -> f32 {
    let mut acc = [_mm256_set1_ps(0.0); 12];
    let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
    for _ in 0..iterations {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut total = _mm256_setzero_ps();
    for v in acc {
        total = _mm256_add_ps(total, v);
    }
    let mut out = [0f32; LANES];
    _mm256_storeu_ps(out.as_mut_ptr(), total);
    out.iter().sum()
}

/// Pixels of one output row per pass of the depthwise kernel: independent FMA
/// chains (each pixel's 9 taps are one chain, in the scalar twin's order).
const DEPTHWISE_PIXELS: usize = 4;

/// The depthwise kernel; `wide` runs stride-1 layers on AVX-512 ([`avx512`]), for
/// which the caller also establishes AVX-512 F.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn depthwise(
    conv: &Depthwise,
    input: &[f32],
    in_plane: Plane,
    out: &RowsOut,
    wide: bool,
) {
    let s = conv.stride;
    let row = in_plane.row_len();
    let width = out.plane.width;
    for b in 0..conv.blocks() {
        let weights = conv.weights.as_ptr().add(b * 9 * LANES);
        let w: [__m256; 9] = std::array::from_fn(|tap| _mm256_loadu_ps(weights.add(tap * LANES)));
        let bias = _mm256_loadu_ps(conv.bias.as_ptr().add(b * LANES));
        let slope = _mm256_loadu_ps(conv.slope.as_ptr().add(b * LANES));
        let plane = input.as_ptr().add(b * in_plane.len());
        for y in out.rows.clone() {
            let dst = out.pixel(b, y, 0);
            // SAFETY: the rows y*s..y*s+2 and columns x*s..x*s+2 (bordered) of an
            // output pixel's window are inside the input plane, its rows stored
            // from `first_row` on (`check`); pixels x < width are in the output row.
            let top = plane.add((y * s - in_plane.first_row) * row);
            let mut x = 0;
            if wide && s == 1 {
                x = avx512::depthwise_row(top, row, weights, bias, slope, dst, width);
            }
            while x + DEPTHWISE_PIXELS <= width {
                let mut acc = [bias; DEPTHWISE_PIXELS];
                for ky in 0..3 {
                    for kx in 0..3 {
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let src = top.add(((x + i) * s + kx) * LANES + ky * row);
                            *acc = _mm256_fmadd_ps(_mm256_loadu_ps(src), w[ky * 3 + kx], *acc);
                        }
                    }
                }
                for (i, acc) in acc.into_iter().enumerate() {
                    let v = _mm256_max_ps(acc, _mm256_mul_ps(acc, slope));
                    _mm256_storeu_ps(dst.add((x + i) * LANES), v);
                }
                x += DEPTHWISE_PIXELS;
            }
            for x in x..width {
                let src = top.add(x * s * LANES);
                let mut acc = bias;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let v = _mm256_loadu_ps(src.add(ky * row + kx * LANES));
                        acc = _mm256_fmadd_ps(v, w[ky * 3 + kx], acc);
                    }
                }
                let acc = _mm256_max_ps(acc, _mm256_mul_ps(acc, slope));
                _mm256_storeu_ps(dst.add(x * LANES), acc);
            }
        }
    }
}

/// The whole groups of eight pixels of `bgr_row_scalar`; returns how many bytes
/// (= floats) it converted.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn bgr_row(rgb: &[u8], mean: [f32; 3], out: &mut [f32]) -> usize {
    // Eight pixels are 24 bytes in and 24 floats (three registers) out. Register r
    // takes floats 8r..8r+8, whose source bytes lie within the 16 bytes from 4r:
    // float i of the group is byte 3 (i / 3) + 2 - i % 3 (BGR from RGB).
    let source = |i: usize| (3 * (i / 3) + 2 - i % 3) as i8;
    let shuffles: [__m128i; 3] = std::array::from_fn(|r| {
        let bytes: [i8; 16] = std::array::from_fn(|k| {
            if k < 8 {
                source(8 * r + k) - 4 * r as i8
            } else {
                -1
            }
        });
        _mm_loadu_si128(bytes.as_ptr().cast())
    });
    let means: [__m256; 3] = std::array::from_fn(|r| {
        let lanes: [f32; LANES] = std::array::from_fn(|k| mean[(8 * r + k) % 3]);
        _mm256_loadu_ps(lanes.as_ptr())
    });
    let groups = rgb.len() / 24;
    for g in 0..groups {
        // SAFETY: group g's bytes are 24g..24g+24 and the loads read 24g+4r..+16
        // (r <= 2), inside `rgb`; its floats 24g..24g+24 are inside `out` (same length).
        let src = rgb.as_ptr().add(24 * g);
        let dst = out.as_mut_ptr().add(24 * g);
        for r in 0..3 {
            let bytes = _mm_loadu_si128(src.add(4 * r).cast());
            let bgr = _mm_shuffle_epi8(bytes, shuffles[r]);
            let floats = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bgr));
            _mm256_storeu_ps(dst.add(8 * r), _mm256_sub_ps(floats, means[r]));
        }
    }
    24 * groups
}

/// The whole groups of 16 pixels of `split_row_scalar` (from column 0); returns
/// how many pixels it converted.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn split_row(rgb: &[u8], mean: [f32; 3], out: &mut [f32], half: usize) -> usize {
    // 16 pixels are 48 bytes, read as three 16-byte chunks. Output (c, parity) takes
    // 8 of them: parity 1 (bordered columns 2i + 1) the even image columns 2k, at
    // byte 6k + 2 - c of the group, parity 0 the odd ones, 3 bytes further.
    let masks: [[__m128i; 3]; 6] = std::array::from_fn(|cq| {
        let (c, parity) = (cq / 2, cq % 2);
        std::array::from_fn(|chunk| {
            let bytes: [i8; 16] = std::array::from_fn(|k| {
                let at = 6 * k + 3 * (1 - parity) + 2 - c;
                if k < 8 && (16 * chunk..16 * chunk + 16).contains(&at) {
                    (at - 16 * chunk) as i8
                } else {
                    -1
                }
            });
            _mm_loadu_si128(bytes.as_ptr().cast())
        })
    });
    let groups = rgb.len() / 48;
    for g in 0..groups {
        // SAFETY: group g reads bytes 48g..48g+48 of `rgb` (16g + 16 <= pixels); it writes
        // floats 8g..8g+8 (parity 1) and 8g+1..8g+9 (parity 0) of arrays of `half`
        // floats, and 8g + 9 <= pixels / 2 + 1 <= half (the caller asserts pixels <=
        // 2 (half - 1) and `out` = 6 `half` floats).
        let src = rgb.as_ptr().add(48 * g);
        let chunks: [__m128i; 3] = std::array::from_fn(|j| _mm_loadu_si128(src.add(16 * j).cast()));
        for (cq, mask) in masks.iter().enumerate() {
            let (c, parity) = (cq / 2, cq % 2);
            let bytes = _mm_or_si128(
                _mm_or_si128(
                    _mm_shuffle_epi8(chunks[0], mask[0]),
                    _mm_shuffle_epi8(chunks[1], mask[1]),
                ),
                _mm_shuffle_epi8(chunks[2], mask[2]),
            );
            let floats = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(bytes));
            let at = cq * half + 8 * g + (1 - parity);
            _mm256_storeu_ps(
                out.as_mut_ptr().add(at),
                _mm256_sub_ps(floats, _mm256_set1_ps(mean[c])),
            );
        }
    }
    16 * groups
}

/// The AVX2 twin of `winograd_input_scalar`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn winograd_input(
    input: &[f32],
    in_plane: Plane,
    blocks: usize,
    first_tile_row: usize,
    v: &mut [f32],
    tiles: Tiles,
) {
    let row = in_plane.row_len();
    let out = v.as_mut_ptr();
    let (add, sub) = (|a, b| _mm256_add_ps(a, b), |a, b| _mm256_sub_ps(a, b));
    for b in 0..blocks {
        let plane = input.as_ptr().add(b * in_plane.len());
        for ty in 0..tiles.rows {
            // SAFETY: tile row ty reads bordered input rows 2t..2t+4 (t its row in
            // the whole plane), which `winograd` checked are stored.
            let top = plane.add((2 * (first_tile_row + ty) - in_plane.first_row) * row);
            for tx in 0..tiles.cols {
                let src = top.add(2 * tx * LANES);
                let d: [[__m256; 4]; 4] = std::array::from_fn(|i| {
                    std::array::from_fn(|j| _mm256_loadu_ps(src.add(i * row + j * LANES)))
                });
                let t: [[__m256; 4]; 4] = [
                    std::array::from_fn(|j| sub(d[0][j], d[2][j])),
                    std::array::from_fn(|j| add(d[1][j], d[2][j])),
                    std::array::from_fn(|j| sub(d[2][j], d[1][j])),
                    std::array::from_fn(|j| sub(d[1][j], d[3][j])),
                ];
                let at = tiles.at(ty, tx);
                for (i, t) in t.iter().enumerate() {
                    let values = [
                        sub(t[0], t[2]),
                        add(t[1], t[2]),
                        sub(t[2], t[1]),
                        sub(t[1], t[3]),
                    ];
                    for (j, value) in values.into_iter().enumerate() {
                        // SAFETY: `winograd` sized `v` for 16 points x `blocks` x tiles.
                        _mm256_storeu_ps(
                            out.add(((i * 4 + j) * blocks + b) * tiles.len() + at),
                            value,
                        );
                    }
                }
            }
        }
    }
}

/// The AVX2 twin of `winograd_output_scalar`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn winograd_output(
    m: &[f32],
    tiles: Tiles,
    blocks: usize,
    bias: &[f32],
    slope: &[f32],
    out: &RowsOut,
    out_block: usize,
) {
    let first_tile_row = out.rows.start / 2;
    let (add, sub) = (|a, b| _mm256_add_ps(a, b), |a, b| _mm256_sub_ps(a, b));
    let products = m.as_ptr();
    for k in 0..blocks {
        let b = _mm256_loadu_ps(bias.as_ptr().add(k * LANES));
        let sl = _mm256_loadu_ps(slope.as_ptr().add(k * LANES));
        let activate = |x: __m256| _mm256_max_ps(x, _mm256_mul_ps(x, sl));
        for ty in 0..tiles.rows {
            for tx in 0..tiles.cols {
                let at = tiles.at(ty, tx);
                // SAFETY: `winograd` sized `m` for 16 points x `blocks` x tiles.
                let mv = |i: usize, j: usize| {
                    _mm256_loadu_ps(products.add(((i * 4 + j) * blocks + k) * tiles.len() + at))
                };
                let mm: [[__m256; 4]; 4] =
                    std::array::from_fn(|i| std::array::from_fn(|j| mv(i, j)));
                let s: [[__m256; 4]; 2] = [
                    std::array::from_fn(|j| add(add(mm[0][j], mm[1][j]), mm[2][j])),
                    std::array::from_fn(|j| sub(sub(mm[1][j], mm[2][j]), mm[3][j])),
                ];
                for (r, s) in s.iter().enumerate() {
                    let y0 = activate(add(add(add(s[0], s[1]), s[2]), b));
                    let y1 = activate(add(sub(sub(s[1], s[2]), s[3]), b));
                    // SAFETY: `pixel` checks the row is ours and column 2tx is in the
                    // plane; 2tx + 1 is too (the width is even).
                    let dst = out.pixel(out_block + k, 2 * (first_tile_row + ty) + r, 2 * tx);
                    _mm256_storeu_ps(dst, y0);
                    _mm256_storeu_ps(dst.add(LANES), y1);
                }
            }
        }
    }
}
