//! The native engine's convolution kernels, in the channel-blocked layout, with a
//! plain scalar twin for each. This is the only module of the crate with `unsafe`.
//!
//! Layout of a feature map ([`Plane`]): `[channel block][row][column][LANES]`, every
//! block's plane framed by a one-pixel zero border, so a 3x3 window (padding 1)
//! never needs a bounds check. Kernels write only the interior; the border stays
//! zero from allocation on.
//!
//! Layers split their output rows across threads with [`parallel_rows`] (or
//! [`parallel_groups`], one range and scratch per thread), which hand each thread a
//! [`RowsOut`] that may write only its own rows. A plane may store only a window of
//! its rows, for layers run band by band.
//!
//! Kernels: dense (1x1 and 3x3, stride 1 or 2), depthwise 3x3, [`winograd`] for the
//! 3x3 stride-1 dense layers (its transforms here, its products on the dense kernel),
//! the input conversion ([`bgr_row`], or [`split_row`] for [`stem`], the first layer
//! on AVX-512).

use std::marker::PhantomData;
use std::ops::Range;

use rayon::prelude::*;
use rayon::ThreadPool;

pub(crate) use super::isa::{Isa, IsaKind};

/// Channels per block: one AVX2 register of f32.
pub(crate) const LANES: usize = 8;

/// The interior size of one channel block's plane (the full plane is two larger
/// each way) and its channels per pixel: [`LANES`] for feature maps, 3 for the
/// packed RGB input, which only the first layer reads.
///
/// A plane may hold only a window of its rows: bordered rows `first_row..` (row 0 is
/// the top border, `height + 1` the bottom one), `stored_rows` of them per block. The
/// first layers run in such bands so that their large maps never exist whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Plane {
    pub height: usize,
    pub width: usize,
    pub lanes: usize,
    pub first_row: usize,
    pub stored_rows: usize,
}

impl Plane {
    /// A whole plane with `lanes` channels per pixel.
    pub(crate) fn packed(height: usize, width: usize, lanes: usize) -> Self {
        Self {
            height,
            width,
            lanes,
            first_row: 0,
            stored_rows: height + 2,
        }
    }
    /// A whole feature map's plane.
    pub(crate) fn blocked(height: usize, width: usize) -> Self {
        Self::packed(height, width, LANES)
    }
    /// This plane's (whole) size after a convolution of `stride`.
    pub(crate) fn strided(self, stride: usize) -> Self {
        Self::blocked(self.height.div_ceil(stride), self.width.div_ceil(stride))
    }
    /// The same plane holding only the bordered rows `rows`.
    pub(crate) fn window(self, rows: Range<usize>) -> Self {
        assert!(rows.start <= rows.end && rows.end <= self.height + 2);
        Self {
            first_row: rows.start,
            stored_rows: rows.len(),
            ..self
        }
    }
    /// The bordered rows stored.
    pub(crate) fn bordered_rows(self) -> Range<usize> {
        self.first_row..self.first_row + self.stored_rows
    }
    /// The interior rows stored.
    pub(crate) fn interior_rows(self) -> Range<usize> {
        let rows = self.bordered_rows();
        let start = rows.start.max(1) - 1;
        start..(rows.end.min(self.height + 1).max(1) - 1).max(start)
    }
    /// Same height, width and lanes (whatever rows each holds).
    fn same_shape(self, other: Plane) -> bool {
        (self.height, self.width, self.lanes) == (other.height, other.width, other.lanes)
    }
    /// Floats from one row to the next.
    pub(crate) fn row_len(self) -> usize {
        (self.width + 2) * self.lanes
    }
    /// Floats from one channel block to the next.
    pub(crate) fn len(self) -> usize {
        self.stored_rows * self.row_len()
    }
    /// Offset of interior pixel (y, x) of block `block`; row y must be stored.
    pub(crate) fn at(self, block: usize, y: usize, x: usize) -> usize {
        let row = y + 1 - self.first_row;
        debug_assert!(row < self.stored_rows);
        block * self.len() + row * self.row_len() + (x + 1) * self.lanes
    }
    /// Whether interior rows `rows` are all stored.
    fn holds(self, rows: &Range<usize>) -> bool {
        stores(self, &(rows.start + 1..rows.end + 1))
    }
}

/// Bordered input rows that output rows `rows` read with this kernel and stride,
/// where `offset` is the window's top-left in bordered input coordinates.
fn rows_read(rows: &Range<usize>, kernel: usize, stride: usize, offset: usize) -> Range<usize> {
    if rows.is_empty() {
        return 0..0;
    }
    rows.start * stride + offset..(rows.end - 1) * stride + offset + kernel
}

/// Whether `input` stores every bordered row in `rows`.
fn stores(input: Plane, rows: &Range<usize>) -> bool {
    rows.is_empty()
        || (rows.start >= input.first_row && rows.end <= input.first_row + input.stored_rows)
}

/// A dense convolution (every output channel sees every input channel), kernel 1x1
/// (padding 0) or 3x3 (padding 1), with bias and a per-channel activation slope
/// (`max(x, slope * x)`: 1 = none, 0 = ReLU, 0.1 = LeakyReLU(0.1)).
pub(crate) struct Dense<'a> {
    /// `[out block][tap][input channel][LANES]`, tap = ky * kernel + kx.
    pub weights: &'a [f32],
    /// The same weights for the AVX-512 tiles, which hold two neighbouring output
    /// blocks in one register: [`paired_weights`] of `weights`.
    pub paired: &'a [f32],
    /// `out_blocks * LANES` each.
    pub bias: &'a [f32],
    pub slope: &'a [f32],
    /// Real input channels; the last input block may be partly unused (the RGB input).
    pub in_channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl Dense<'_> {
    pub(crate) fn out_blocks(&self) -> usize {
        self.bias.len() / LANES
    }
    fn taps(&self) -> usize {
        self.kernel * self.kernel
    }
    fn in_blocks(&self, in_plane: Plane) -> usize {
        self.in_channels.div_ceil(in_plane.lanes)
    }
    /// Offset from an output pixel's input position to its window's top-left, in
    /// bordered coordinates: 0 for 3x3 (padding 1, the border is the padding), 1 for 1x1.
    fn window_offset(&self) -> usize {
        if self.kernel == 3 {
            0
        } else {
            1
        }
    }
    /// Bordered input rows that output rows `rows` read.
    pub(crate) fn rows_read(&self, rows: &Range<usize>) -> Range<usize> {
        rows_read(rows, self.kernel, self.stride, self.window_offset())
    }
    /// Checks everything the kernels index by, so that their reads and writes stay in
    /// bounds: the output plane is the strided input plane, the input stores every row
    /// the output rows read, slices are long enough.
    fn check(&self, input: &[f32], in_plane: Plane, out: &RowsOut, out_block: usize) {
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
        assert!(self.in_channels > 0 && self.bias.len().is_multiple_of(LANES));
        assert_eq!(self.slope.len(), self.bias.len());
        let per_block = self.taps() * self.in_channels * LANES;
        assert_eq!(self.weights.len(), self.out_blocks() * per_block);
        assert_eq!(self.paired.len(), self.out_blocks() / 2 * 2 * per_block);
        assert!(in_plane.lanes > 0 && in_plane.lanes <= LANES);
        assert!(input.len() >= self.in_blocks(in_plane) * in_plane.len());
        assert!(out.plane.same_shape(in_plane.strided(self.stride)));
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
    fn check(&self, input: &[f32], in_plane: Plane, out: &RowsOut) {
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

/// The rows of one output map that one thread may write. Made whole from a `&mut`
/// slice, then only cut by consuming it ([`RowsOut::split`]) or borrowing it
/// exclusively ([`RowsOut::narrow`]): two holders alive at once never share a row.
pub(crate) struct RowsOut<'a> {
    ptr: *mut f32,
    len: usize,
    plane: Plane,
    rows: Range<usize>,
    _output: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `RowsOut` only writes rows in `rows`. The first holds a `&mut` slice;
// `split` consumes its holder into disjoint ranges, and `narrow` borrows its holder
// mutably for a subset of its rows, so the holders alive at one time have disjoint
// rows: no two threads write the same float, and nobody reads the slice until the
// borrow of it ends. It is `Send` but not `Sync`: each holder is moved to one
// thread, never shared.
unsafe impl Send for RowsOut<'_> {}

impl<'a> RowsOut<'a> {
    fn new(output: &'a mut [f32], plane: Plane, rows: Range<usize>) -> Self {
        Self {
            ptr: output.as_mut_ptr(),
            len: output.len(),
            plane,
            rows,
            _output: PhantomData,
        }
    }

    /// This holder cut into consecutive holders of `per` rows (the last may be
    /// shorter; one empty holder where there are no rows). Consumed, so the parts
    /// are the only writers left.
    pub(crate) fn split(self, per: usize) -> Vec<RowsOut<'a>> {
        if self.rows.is_empty() {
            return vec![self];
        }
        let per = per.max(1);
        self.rows
            .clone()
            .step_by(per)
            .map(|start| RowsOut {
                ptr: self.ptr,
                len: self.len,
                plane: self.plane,
                rows: start..(start + per).min(self.rows.end),
                _output: PhantomData,
            })
            .collect()
    }

    /// The same output, writing only `rows` (a subset of this holder's rows), while
    /// this holder is borrowed.
    pub(crate) fn narrow(&mut self, rows: Range<usize>) -> RowsOut<'_> {
        assert!(rows.is_empty() || (rows.start >= self.rows.start && rows.end <= self.rows.end));
        RowsOut {
            ptr: self.ptr,
            len: self.len,
            plane: self.plane,
            rows,
            _output: PhantomData,
        }
    }

    /// The interior rows this holder writes.
    pub(crate) fn rows(&self) -> Range<usize> {
        self.rows.clone()
    }

    /// Pointer to pixel (y, x) of `block`; checks that this holder owns row `y`.
    fn pixel(&self, block: usize, y: usize, x: usize) -> *mut f32 {
        assert!(self.rows.contains(&y) && x < self.plane.width);
        assert!(self.plane.holds(&(y..y + 1)));
        let offset = self.plane.at(block, y, x);
        assert!(offset + LANES <= self.len);
        // SAFETY: in bounds of the slice, just checked.
        unsafe { self.ptr.add(offset) }
    }

    fn store(&self, block: usize, y: usize, x: usize, values: &[f32; LANES]) {
        let p = self.pixel(block, y, x);
        // SAFETY: `pixel` checked the LANES floats from p are in the slice and in our rows.
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), p, LANES) }
    }
}

/// Runs `work` on this thread over the interior rows `rows` of `output`.
pub(crate) fn rows_of(
    output: &mut [f32],
    plane: Plane,
    rows: Range<usize>,
    work: impl FnOnce(&mut RowsOut),
) {
    work(&mut RowsOut::new(output, plane, rows))
}

/// Runs `work` over the stored interior rows of `output`, split into contiguous
/// ranges on the pool's threads (or all on this thread without a pool).
pub(crate) fn parallel_rows<F>(pool: Option<&ThreadPool>, output: &mut [f32], plane: Plane, work: F)
where
    F: Fn(&mut RowsOut) + Sync,
{
    let rows = plane.interior_rows();
    let mut whole = RowsOut::new(output, plane, rows.clone());
    let pool = pool.filter(|p| p.current_num_threads() > 1 && rows.len() > 1);
    let Some(pool) = pool else {
        return work(&mut whole);
    };
    // A few ranges per thread even out rows of unequal cost.
    let chunks = (pool.current_num_threads() * 3).min(rows.len());
    let per = rows.len().div_ceil(chunks);
    let outs = whole.split(per);
    pool.install(|| outs.into_par_iter().for_each(|mut out| work(&mut out)));
}

/// Runs `work` over the stored interior rows of `output` in one contiguous range per
/// scratch value, side by side on the pool's threads, each range with its own scratch;
/// every range but the last starts and ends on a multiple of `align` rows.
pub(crate) fn parallel_groups<S, F>(
    pool: Option<&ThreadPool>,
    output: &mut [f32],
    plane: Plane,
    scratch: &mut [S],
    align: usize,
    work: F,
) where
    S: Send,
    F: Fn(&mut RowsOut, &mut S) + Sync,
{
    let rows = plane.interior_rows();
    let whole = RowsOut::new(output, plane, rows.clone());
    let groups = scratch.len().min(rows.len()).max(1);
    let align = align.max(1);
    let per = rows.len().div_ceil(groups).div_ceil(align) * align;
    // At most `groups` parts: only trailing groups could be empty, and they write nothing.
    let outs = whole.split(per);
    match pool {
        Some(pool) if groups > 1 => pool.install(|| {
            outs.into_par_iter()
                .zip(scratch.par_iter_mut())
                .for_each(|(mut out, s)| work(&mut out, s))
        }),
        _ => outs
            .into_iter()
            .zip(scratch.iter_mut())
            .for_each(|(mut out, s)| work(&mut out, s)),
    }
}

/// Single-precision FMA throughput of one core, GFLOP/s: independent FMA chains on
/// registers only, so neither memory nor latency limits it.
pub(crate) fn fma_peak_gflops(isa: Isa) -> Option<f64> {
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind `Avx2Fma` is only made where the CPU has AVX2 and FMA.
        IsaKind::Avx2Fma | IsaKind::Avx512 => {
            let iterations = 20_000_000u64;
            let wide = isa.kind() == IsaKind::Avx512;
            let start = std::time::Instant::now();
            // SAFETY: an `Isa` of kind `Avx512` is only made where the CPU has AVX-512 F.
            let sink = unsafe {
                if wide {
                    avx2::avx512::fma_loop(iterations)
                } else {
                    avx2::fma_loop(iterations)
                }
            };
            let seconds = start.elapsed().as_secs_f64();
            std::hint::black_box(sink);
            // 12 chains x 8 (16) lanes x 2 flops per iteration.
            let lanes = if wide { 2 * LANES } else { LANES } as u64;
            Some((iterations * 12 * lanes * 2) as f64 / seconds / 1e9)
        }
        _ => None,
    }
}

/// The activation: `max(x, slope * x)` is LeakyReLU for 0 <= slope <= 1.
#[inline(always)]
fn activate(x: f32, slope: f32) -> f32 {
    x.max(x * slope)
}

/// One row of RGB pixels into the network's input floats: BGR order, `mean` (per BGR
/// channel) subtracted. `out` holds exactly three floats per pixel of `rgb`.
pub(crate) fn bgr_row(isa: Isa, rgb: &[u8], mean: [f32; 3], out: &mut [f32]) {
    assert_eq!(rgb.len(), out.len());
    assert!(rgb.len().is_multiple_of(3));
    let done = match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind `Avx2Fma` or `Avx512` is only made where the CPU has AVX2;
        // lengths checked above.
        IsaKind::Avx2Fma | IsaKind::Avx512 => unsafe { avx2::bgr_row(rgb, mean, out) },
        _ => 0,
    };
    bgr_row_scalar(&rgb[done..], mean, &mut out[done..]);
}

fn bgr_row_scalar(rgb: &[u8], mean: [f32; 3], out: &mut [f32]) {
    for (out, px) in out.chunks_exact_mut(3).zip(rgb.chunks_exact(3)) {
        out[0] = f32::from(px[2]) - mean[0];
        out[1] = f32::from(px[1]) - mean[1];
        out[2] = f32::from(px[0]) - mean[2];
    }
}

/// One image row of RGB bytes into one row of the first layer's *split* input, which
/// [`stem`] reads: the row of a packed RGB plane (even width) rearranged as six
/// arrays of `half = width / 2 + 1` floats, `[channel (BGR)][parity][i]` holding
/// bordered column `2i + parity`, `mean` removed, zeros in the border and right of the
/// image. `out` is the row (`6 * half` floats, as long as the packed row).
pub(crate) fn split_row(isa: Isa, rgb: &[u8], mean: [f32; 3], out: &mut [f32]) {
    assert!(rgb.len().is_multiple_of(3) && out.len().is_multiple_of(6));
    let half = out.len() / 6;
    // The image's columns are bordered columns 1..=width, inside the plane's interior.
    assert!(
        rgb.len() / 3 <= 2 * (half - 1),
        "{} pixels in a row of {half} pairs",
        rgb.len() / 3
    );
    out.fill(0.0);
    let done = match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 as for `bgr_row`; lengths checked above.
        IsaKind::Avx2Fma | IsaKind::Avx512 => unsafe { avx2::split_row(rgb, mean, out, half) },
        _ => 0,
    };
    split_row_scalar(&rgb[3 * done..], done, mean, out, half);
}

/// `split_row` from image column `first` on.
fn split_row_scalar(rgb: &[u8], first: usize, mean: [f32; 3], out: &mut [f32], half: usize) {
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let bordered = first + i + 1;
        let (parity, at) = (bordered % 2, bordered / 2);
        for c in 0..3 {
            out[(2 * c + parity) * half + at] = f32::from(px[2 - c]) - mean[c];
        }
    }
}

/// The first layer (3x3, stride 2, three input channels, one output block) over the
/// split input of `in_plane` (a packed RGB plane, see [`split_row`]), into the rows
/// `out` owns: pixels along the AVX-512 registers, then transposed into the blocked
/// layout. Each output float gets the FMAs of the [`dense`] kernel on the packed input,
/// in the same order as the AVX2 [`dense`] kernel. Other ISAs run the scalar twin (the
/// network runs [`dense`] there); its `mul_add` is slow without FMA at compile time, but
/// on AVX-512 it only finishes rows whose width is not a multiple of 16, which the
/// network's padded sizes never have.
pub(crate) fn stem(isa: Isa, conv: &Dense, input: &[f32], in_plane: Plane, out: &RowsOut) {
    assert!(conv.kernel == 3 && conv.stride == 2 && conv.in_channels == 3);
    assert_eq!(conv.weights.len(), 9 * 3 * LANES);
    assert!(conv.bias.len() == LANES && conv.slope.len() == LANES);
    assert!(in_plane.lanes == 3 && in_plane.width.is_multiple_of(2));
    assert!(input.len() >= in_plane.len());
    assert!(out.plane.same_shape(in_plane.strided(2)));
    assert!(out.plane.len() <= out.len, "the output holds one block");
    assert!(stores(in_plane, &conv.rows_read(&out.rows)));
    let (row_len, half) = (in_plane.row_len(), in_plane.width / 2 + 1);
    for y in out.rows.clone() {
        let rows: [&[f32]; 3] = std::array::from_fn(|ky| {
            &input[(2 * y + ky - in_plane.first_row) * row_len..][..row_len]
        });
        let dst = out.pixel(0, y, 0);
        let done = match isa.kind() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: an `Isa` of kind `Avx512` is only made where the CPU has AVX-512 F; the three
            // rows are `row_len` = 6 `half` floats long (sliced above), and the output
            // row's `out.plane.width` pixels from `dst` are in the slice (`pixel` checked
            // the row is ours and stored, and the block fits `out.len`, asserted above).
            IsaKind::Avx512 => unsafe {
                avx2::avx512::stem_row(rows, half, conv, dst, out.plane.width)
            },
            _ => 0,
        };
        for x in done..out.plane.width {
            out.store(0, y, x, &stem_pixel_scalar(conv, rows, half, x));
        }
    }
}

/// The scalar twin of `stem`, one output pixel.
fn stem_pixel_scalar(conv: &Dense, rows: [&[f32]; 3], half: usize, x: usize) -> [f32; LANES] {
    let mut acc = [0f32; LANES];
    acc.copy_from_slice(conv.bias);
    for (ky, row) in rows.iter().enumerate() {
        for kx in 0..3 {
            // Bordered column 2x + kx: parity kx % 2, index x + kx / 2.
            for c in 0..3 {
                let v = row[(2 * c + kx % 2) * half + x + kx / 2];
                let w = &conv.weights[((ky * 3 + kx) * 3 + c) * LANES..][..LANES];
                for (a, w) in acc.iter_mut().zip(w) {
                    // Fused, as the vector kernels: the AVX-512 path leaves a row's last
                    // pixels (under 16) to this twin and must give the same bits.
                    *a = v.mul_add(*w, *a);
                }
            }
        }
    }
    for (a, slope) in acc.iter_mut().zip(conv.slope) {
        *a = activate(*a, *slope);
    }
    acc
}

/// Dense convolution of `input` into blocks `out_block..` of the output rows `out` owns.
pub(crate) fn dense(
    isa: Isa,
    conv: &Dense,
    input: &[f32],
    in_plane: Plane,
    out: &RowsOut,
    out_block: usize,
) {
    conv.check(input, in_plane, out, out_block);
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: an `Isa` of kind `Avx2Fma` is only made where the CPU has AVX2 and FMA, of kind `Avx512`
        // where it also has AVX-512 F + DQ; sizes checked above.
        IsaKind::Avx2Fma | IsaKind::Avx512 => unsafe {
            avx2::dense(
                conv,
                input,
                in_plane,
                out,
                out_block,
                isa.kind() == IsaKind::Avx512,
            )
        },
        _ => dense_scalar(conv, input, in_plane, out, out_block),
    }
}

/// Depthwise convolution of `input` into the output rows `out` owns.
pub(crate) fn depthwise(isa: Isa, conv: &Depthwise, input: &[f32], in_plane: Plane, out: &RowsOut) {
    conv.check(input, in_plane, out);
    match isa.kind() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as for `dense`.
        IsaKind::Avx2Fma | IsaKind::Avx512 => unsafe {
            avx2::depthwise(conv, input, in_plane, out, isa.kind() == IsaKind::Avx512)
        },
        _ => depthwise_scalar(conv, input, in_plane, out),
    }
}

/// The scalar twin of the dense kernel: the same sums, one float at a time.
fn dense_scalar(conv: &Dense, input: &[f32], in_plane: Plane, out: &RowsOut, out_block: usize) {
    let (k, s, off) = (conv.kernel, conv.stride, conv.window_offset());
    let (row, pitch) = (in_plane.row_len(), in_plane.lanes);
    for y in out.rows.clone() {
        for x in 0..out.plane.width {
            for ob in 0..conv.out_blocks() {
                let mut acc = [0f32; LANES];
                acc.copy_from_slice(&conv.bias[ob * LANES..][..LANES]);
                for ky in 0..k {
                    for kx in 0..k {
                        let tap = ky * k + kx;
                        let base = (y * s + ky + off - in_plane.first_row) * row
                            + (x * s + kx + off) * pitch;
                        for ic in 0..conv.in_channels {
                            let v = input[(ic / pitch) * in_plane.len() + base + ic % pitch];
                            let w = &conv.weights
                                [((ob * conv.taps() + tap) * conv.in_channels + ic) * LANES..]
                                [..LANES];
                            for (a, w) in acc.iter_mut().zip(w) {
                                *a += v * w;
                            }
                        }
                    }
                }
                for (lane, a) in acc.iter_mut().enumerate() {
                    *a = activate(*a, conv.slope[ob * LANES + lane]);
                }
                out.store(out_block + ob, y, x, &acc);
            }
        }
    }
}

/// The scalar twin of the depthwise kernel.
fn depthwise_scalar(conv: &Depthwise, input: &[f32], in_plane: Plane, out: &RowsOut) {
    let s = conv.stride;
    let row = in_plane.row_len();
    for y in out.rows.clone() {
        for x in 0..out.plane.width {
            for b in 0..conv.blocks() {
                let mut acc = [0f32; LANES];
                acc.copy_from_slice(&conv.bias[b * LANES..][..LANES]);
                for ky in 0..3 {
                    for kx in 0..3 {
                        let at = b * in_plane.len()
                            + (y * s + ky - in_plane.first_row) * row
                            + (x * s + kx) * LANES;
                        let w = &conv.weights[(b * 9 + ky * 3 + kx) * LANES..][..LANES];
                        for lane in 0..LANES {
                            acc[lane] += input[at + lane] * w[lane];
                        }
                    }
                }
                for (lane, a) in acc.iter_mut().enumerate() {
                    *a = activate(*a, conv.slope[b * LANES + lane]);
                }
                out.store(b, y, x, &acc);
            }
        }
    }
}

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
    points: Vec<f32>,
    /// Per point: the same, paired ([`paired_weights`]).
    paired: Vec<f32>,
    in_channels: usize,
    out_blocks: usize,
    /// Bias and slope of the pointwise products: none (the layer's come after).
    zeros: Vec<f32>,
    ones: Vec<f32>,
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

    fn point(&self, p: usize) -> Dense<'_> {
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
        }
    }
}

/// One thread's transformed tiles, reused from band to band.
#[derive(Default)]
pub(crate) struct WinogradScratch {
    v: Vec<f32>,
    m: Vec<f32>,
}

/// One band's Winograd tiles: a grid of `rows` x `cols` tiles, stored as the one row
/// of `flat`, so that the products run over whole dense-kernel tiles (12 pixels)
/// instead of a short one at the end of every tile row.
#[derive(Debug, Clone, Copy)]
struct Tiles {
    rows: usize,
    cols: usize,
    flat: Plane,
}

impl Tiles {
    fn new(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            // The one interior row; its border rows are never read.
            flat: Plane::blocked(1, rows * cols).window(1..2),
        }
    }
    /// Offset of tile (ty, tx) in one block of the stored tiles.
    fn at(self, ty: usize, tx: usize) -> usize {
        self.flat.at(0, 0, ty * self.cols + tx)
    }
    /// Floats per block of the stored tiles.
    fn len(self) -> usize {
        self.flat.len()
    }
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
fn winograd_input_scalar(
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
fn winograd_output_scalar(
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    //! AVX2 + FMA kernels. Every function here is `unsafe` for two reasons that its
    //! callers in the parent module establish: the CPU has AVX2 and FMA (`Isa::detect`),
    //! and the shapes passed the layer's `check`, so every pointer formed below stays
    //! inside `input`, the weights, or a row the `RowsOut` owns.

    use std::arch::x86_64::*;

    use super::{Dense, Depthwise, Plane, RowsOut, Tiles, LANES};

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
                        (y * s + off - args.in_first_row) * args.in_row
                            + (x * s + off) * args.in_lanes,
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

        use super::super::{Dense, LANES};
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
                let mut acc: [__m512; LANES] =
                    std::array::from_fn(|oc| _mm512_set1_ps(conv.bias[oc]));
                for (ky, row) in rows.iter().enumerate() {
                    for kx in 0..3 {
                        for c in 0..3 {
                            // SAFETY: bordered column 2x' + kx of pixels x' < x + 16 is
                            // index x' + kx / 2 <= width = half - 1 of its array.
                            let v = _mm512_loadu_ps(
                                row.as_ptr().add((2 * c + kx % 2) * half + x + kx / 2),
                            );
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
            let w: [__m256; 9] =
                std::array::from_fn(|tap| _mm256_loadu_ps(weights.add(tap * LANES)));
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
    pub(super) unsafe fn split_row(
        rgb: &[u8],
        mean: [f32; 3],
        out: &mut [f32],
        half: usize,
    ) -> usize {
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
            let chunks: [__m128i; 3] =
                std::array::from_fn(|j| _mm_loadu_si128(src.add(16 * j).cast()));
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
}

#[cfg(test)]
mod tests {
    //! Each kernel against its scalar twin, and the scalar dense kernel against a naive
    //! NCHW convolution, over random shapes, strides and channel counts.

    use super::*;
    use proptest::prelude::*;

    fn blocked(channels: usize, plane: Plane, values: &[f32]) -> Vec<f32> {
        let mut data = vec![0f32; channels.div_ceil(plane.lanes) * plane.len()];
        for c in 0..channels {
            for y in 0..plane.height {
                for x in 0..plane.width {
                    data[plane.at(c / plane.lanes, y, x) + c % plane.lanes] =
                        values[(c * plane.height + y) * plane.width + x];
                }
            }
        }
        data
    }

    fn run(
        plane: Plane,
        blocks: usize,
        threads: usize,
        f: impl Fn(&mut RowsOut) + Sync,
    ) -> Vec<f32> {
        let mut out = vec![0f32; blocks * plane.len()];
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        parallel_rows(Some(&pool), &mut out, plane, f);
        out
    }

    proptest! {
        /// The input conversion equals its scalar twin (exactly: one subtraction per float).
        #[test]
        fn bgr_row_matches_scalar(pixels in 0usize..70, seed in any::<u64>()) {
            let rgb: Vec<u8> = values(3 * pixels, seed).iter().map(|v| ((v + 1.0) * 127.9) as u8).collect();
            let mean = [104.0, 117.0, 123.0];
            let mut expected = vec![0f32; rgb.len()];
            bgr_row_scalar(&rgb, mean, &mut expected);
            for pixel in expected.chunks_exact(3).zip(rgb.chunks_exact(3)) {
                prop_assert_eq!(pixel.0[0], f32::from(pixel.1[2]) - 104.0);
            }
            for isa in Isa::available() {
                let mut out = vec![f32::NAN; rgb.len()];
                bgr_row(isa, &rgb, mean, &mut out);
                prop_assert_eq!(&out, &expected, "{:?}", isa);
            }
        }
    }

    proptest! {
        /// The split input holds the packed input's values (bordered column 2i + parity
        /// at index i), and the stem over it equals the dense kernel over the packed
        /// input: AVX-512 bit for bit with AVX2, the scalar twin up to rounding.
        #[test]
        fn stem_on_split_rows_matches_dense_on_packed_input(
            half_width in 1usize..40,
            height in 1usize..10,
            narrower in 0usize..5,
            threads in 1usize..3,
            seed in any::<u64>(),
        ) {
            let plane = Plane::packed(height, 2 * half_width, 3);
            // The image may be narrower than the plane (padding right of it).
            let image_width = plane.width.saturating_sub(narrower).max(1);
            let rgb: Vec<u8> = values(image_width * height * 3, seed)
                .iter()
                .map(|v| ((v + 1.0) * 127.9) as u8)
                .collect();
            let mean = [104.0, 117.0, 123.0];
            let row_len = plane.row_len();
            let mut packed = vec![0f32; plane.len()];
            for y in 0..height {
                let row = &mut packed[(y + 1) * row_len + 3..][..image_width * 3];
                bgr_row_scalar(&rgb[y * image_width * 3..][..image_width * 3], mean, row);
            }
            let half = plane.width / 2 + 1;
            let mut splits = Vec::new();
            for isa in Isa::available() {
                let mut split = vec![f32::NAN; plane.len()];
                for (r, row) in split.chunks_exact_mut(row_len).enumerate() {
                    if r == 0 || r > height {
                        row.fill(0.0);
                    } else {
                        split_row(isa, &rgb[(r - 1) * image_width * 3..][..image_width * 3], mean, row);
                    }
                }
                for r in 0..height + 2 {
                    for column in 0..plane.width + 2 {
                        for c in 0..3 {
                            prop_assert_eq!(
                                split[r * row_len + (2 * c + column % 2) * half + column / 2],
                                packed[r * row_len + column * 3 + c],
                                "{:?} row {} column {} channel {}", isa, r, column, c
                            );
                        }
                    }
                }
                splits.push(split);
            }
            let weights = values(9 * 3 * LANES, seed ^ 1);
            let bias = values(LANES, seed ^ 2);
            let slope: Vec<f32> = (0..LANES).map(|c| [0.0, 0.1, 1.0][c % 3]).collect();
            let paired = paired_weights(&weights, 1);
            let conv = Dense { weights: &weights, paired: &paired, bias: &bias, slope: &slope, in_channels: 3, kernel: 3, stride: 2 };
            let out_plane = plane.strided(2);
            let scalar = run(out_plane, 1, 1, |o| dense(Isa::scalar(), &conv, &packed, plane, o, 0));
            let available = Isa::available();
            let avx2 = Isa::of_kind(IsaKind::Avx2Fma)
                .map(|avx2| run(out_plane, 1, 1, |o| dense(avx2, &conv, &packed, plane, o, 0)));
            for (isa, split) in available.into_iter().zip(&splits) {
                let stemmed = run(out_plane, 1, threads, |o| stem(isa, &conv, split, plane, o));
                close(&stemmed, &scalar)?;
                if let (IsaKind::Avx512, Some(avx2)) = (isa.kind(), &avx2) {
                    prop_assert!(&stemmed == avx2, "the AVX-512 stem differs from the AVX2 dense kernel");
                }
            }
        }
    }

    fn close(a: &[f32], b: &[f32]) -> Result<(), TestCaseError> {
        prop_assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            prop_assert!(
                (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                "at {}: {} vs {}",
                i,
                x,
                y
            );
        }
        Ok(())
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        // A small LCG: reproducible values in [-1, 1) without another dependency.
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn dense_matches_scalar_and_naive(
            in_channels in 1usize..40,
            out_blocks in 1usize..8,
            height in 1usize..12,
            width in 1usize..30,
            kernel in prop::sample::select(vec![1usize, 3]),
            stride2 in any::<bool>(),
            packed in any::<bool>(),
            threads in 1usize..4,
            seed in any::<u64>(),
        ) {
            let stride = if kernel == 3 && stride2 { 2 } else { 1 };
            // `packed`: three channels per pixel, as the RGB input is stored.
            let in_plane = Plane::packed(height, width, if packed { 3 } else { LANES });
            let out_plane = in_plane.strided(stride);
            let out_channels = out_blocks * LANES;
            let pixels = values(in_channels * height * width, seed);
            let nchw_w = values(out_channels * in_channels * kernel * kernel, seed ^ 1);
            let bias = values(out_channels, seed ^ 2);
            let slope: Vec<f32> = (0..out_channels).map(|c| [0.0, 0.1, 1.0][c % 3]).collect();
            // Pack [oc][ic][ky][kx] into [ob][tap][ic][lane].
            let taps = kernel * kernel;
            let mut packed = vec![0f32; nchw_w.len()];
            for oc in 0..out_channels {
                for ic in 0..in_channels {
                    for tap in 0..taps {
                        packed[(((oc / LANES) * taps + tap) * in_channels + ic) * LANES + oc % LANES] =
                            nchw_w[(oc * in_channels + ic) * taps + tap];
                    }
                }
            }
            let paired = paired_weights(&packed, out_blocks);
            let conv = Dense { weights: &packed, paired: &paired, bias: &bias, slope: &slope, in_channels, kernel, stride };
            let input = blocked(in_channels, in_plane, &pixels);
            let scalar = run(out_plane, out_blocks, 1, |o| dense(Isa::scalar(), &conv, &input, in_plane, o, 0));
            let mut outputs = Vec::new();
            for isa in Isa::available() {
                let fast = run(out_plane, out_blocks, threads, |o| dense(isa, &conv, &input, in_plane, o, 0));
                close(&fast, &scalar)?;
                outputs.push((isa.kind(), fast));
            }
            // The AVX-512 kernel does the AVX2 kernel's FMAs in the same order: equal bits.
            if let [(IsaKind::Avx512, wide), (IsaKind::Avx2Fma, narrow), ..] = &outputs[..] {
                prop_assert!(wide == narrow, "AVX-512 and AVX2 differ");
            }

            // Naive NCHW convolution with zero padding.
            let pad = kernel / 2;
            let mut naive = vec![0f32; out_channels * out_plane.height * out_plane.width];
            for oc in 0..out_channels {
                for oy in 0..out_plane.height {
                    for ox in 0..out_plane.width {
                        let mut sum = bias[oc];
                        for ic in 0..in_channels {
                            for ky in 0..kernel {
                                for kx in 0..kernel {
                                    let iy = (oy * stride + ky) as isize - pad as isize;
                                    let ix = (ox * stride + kx) as isize - pad as isize;
                                    if iy < 0 || ix < 0 || iy >= height as isize || ix >= width as isize {
                                        continue;
                                    }
                                    sum += pixels[(ic * height + iy as usize) * width + ix as usize]
                                        * nchw_w[((oc * in_channels + ic) * kernel + ky) * kernel + kx];
                                }
                            }
                        }
                        naive[(oc * out_plane.height + oy) * out_plane.width + ox] = activate(sum, slope[oc]);
                    }
                }
            }
            close(&scalar, &blocked(out_channels, out_plane, &naive))?;
        }

        #[test]
        fn depthwise_matches_scalar_and_naive(
            blocks in 1usize..4,
            height in 1usize..14,
            width in 1usize..30,
            stride in 1usize..3,
            threads in 1usize..4,
            seed in any::<u64>(),
        ) {
            let channels = blocks * LANES;
            let in_plane = Plane::blocked(height, width);
            let out_plane = in_plane.strided(stride);
            let pixels = values(channels * height * width, seed);
            let nchw_w = values(channels * 9, seed ^ 1);
            let bias = values(channels, seed ^ 2);
            let slope: Vec<f32> = (0..channels).map(|c| [0.1, 1.0, 0.0][c % 3]).collect();
            let mut packed = vec![0f32; nchw_w.len()];
            for c in 0..channels {
                for tap in 0..9 {
                    packed[((c / LANES) * 9 + tap) * LANES + c % LANES] = nchw_w[c * 9 + tap];
                }
            }
            let conv = Depthwise { weights: &packed, bias: &bias, slope: &slope, stride };
            let input = blocked(channels, in_plane, &pixels);
            let scalar = run(out_plane, blocks, 1, |o| depthwise(Isa::scalar(), &conv, &input, in_plane, o));
            let mut outputs = Vec::new();
            for isa in Isa::available() {
                let fast = run(out_plane, blocks, threads, |o| depthwise(isa, &conv, &input, in_plane, o));
                close(&fast, &scalar)?;
                outputs.push((isa.kind(), fast));
            }
            // Two pixels per AVX-512 register, each lane with the AVX2 kernel's FMAs: equal bits.
            if let [(IsaKind::Avx512, wide), (IsaKind::Avx2Fma, narrow), ..] = &outputs[..] {
                prop_assert!(wide == narrow, "AVX-512 and AVX2 differ");
            }

            let mut naive = vec![0f32; channels * out_plane.height * out_plane.width];
            for c in 0..channels {
                for oy in 0..out_plane.height {
                    for ox in 0..out_plane.width {
                        let mut sum = bias[c];
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy * stride + ky) as isize - 1;
                                let ix = (ox * stride + kx) as isize - 1;
                                if iy < 0 || ix < 0 || iy >= height as isize || ix >= width as isize {
                                    continue;
                                }
                                sum += pixels[(c * height + iy as usize) * width + ix as usize] * nchw_w[c * 9 + ky * 3 + kx];
                            }
                        }
                        naive[(c * out_plane.height + oy) * out_plane.width + ox] = activate(sum, slope[c]);
                    }
                }
            }
            close(&scalar, &blocked(channels, out_plane, &naive))?;
        }
    }

    #[test]
    fn rows_out_refuses_rows_it_does_not_own() {
        let plane = Plane::blocked(4, 3);
        let mut out = vec![0f32; plane.len()];
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            parallel_rows(None, &mut out, plane, |o| {
                o.narrow(0..2).store(0, 3, 0, &[1.0; LANES]);
            })
        }));
        assert!(result.is_err());
        // Nor may a narrowed holder widen its parent's rows.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rows_of(&mut out, plane, 1..3, |o| {
                o.narrow(1..4);
            })
        }));
        assert!(result.is_err());
        // A window stores only its rows.
        let window = plane.window(2..4);
        let mut short = vec![0f32; window.len()];
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rows_of(&mut short, window, 0..4, |o| {
                o.store(0, 3, 0, &[1.0; LANES])
            })
        }));
        assert!(result.is_err());
        assert!(out.iter().chain(&short).all(|&v| v == 0.0));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

        /// Winograd (scalar and AVX2, whole or in two bands) equals the direct 3x3
        /// convolution up to float rounding.
        #[test]
        fn winograd_matches_direct_convolution(
            in_blocks in 1usize..4,
            out_blocks in 1usize..4,
            half_height in 1usize..7,
            half_width in 1usize..10,
            split in any::<u16>(),
            seed in any::<u64>(),
        ) {
            let plane = Plane::blocked(2 * half_height, 2 * half_width);
            let in_channels = in_blocks * LANES;
            let pixels = values(in_channels * plane.height * plane.width, seed);
            let input = blocked(in_channels, plane, &pixels);
            let weights = values(out_blocks * 9 * in_channels * LANES, seed ^ 1);
            let bias = values(out_blocks * LANES, seed ^ 2);
            let slope: Vec<f32> = (0..out_blocks * LANES).map(|c| [0.0, 0.1, 1.0][c % 3]).collect();
            let paired = paired_weights(&weights, out_blocks);
            let conv = Dense { weights: &weights, paired: &paired, bias: &bias, slope: &slope, in_channels, kernel: 3, stride: 1 };
            let wino = Winograd::new(&conv).unwrap();
            let direct = run(plane, out_blocks, 1, |o| dense(Isa::scalar(), &conv, &input, plane, o, 0));
            let cut = 2 * (split as usize % (half_height + 1));
            for isa in Isa::available() {
                let mut out = vec![0f32; out_blocks * plane.len()];
                let mut scratch = WinogradScratch::default();
                rows_of(&mut out, plane, 0..plane.height, |o| {
                    for band in [0..cut, cut..plane.height] {
                        winograd(isa, &conv, &wino, &input, plane, &o.narrow(band), 0, &mut scratch);
                    }
                });
                close(&out, &direct)?;
            }
        }
    }

    /// `data`'s bordered rows `rows` of each of `blocks` planes, stacked as a window.
    fn window_of(
        data: &[f32],
        plane: Plane,
        blocks: usize,
        rows: Range<usize>,
    ) -> (Vec<f32>, Plane) {
        let window = plane.window(rows.clone());
        let mut out = Vec::with_capacity(blocks * window.len());
        for b in 0..blocks {
            out.extend_from_slice(
                &data[b * plane.len() + rows.start * plane.row_len()..][..window.len()],
            );
        }
        (out, window)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Output rows computed from a window of the input rows they read, into a
        /// window of the output, equal (bit for bit) the same rows of the whole maps.
        #[test]
        fn kernels_on_row_windows_equal_whole_maps(
            blocks in 1usize..4,
            height in 1usize..20,
            width in 1usize..20,
            kind in 0usize..3,
            stride2 in any::<bool>(),
            cut in any::<(u16, u16)>(),
            seed in any::<u64>(),
        ) {
            // kind: 0 depthwise 3x3, 1 dense 3x3, 2 dense 1x1.
            let kernel = if kind == 2 { 1 } else { 3 };
            let stride = if kernel == 3 && stride2 { 2 } else { 1 };
            let in_plane = Plane::blocked(height, width);
            let out_plane = in_plane.strided(stride);
            let channels = blocks * LANES;
            let input = values(blocks * in_plane.len(), seed);
            let taps = if kind == 0 { 9 } else { kernel * kernel * channels };
            let weights = values(blocks * taps * LANES, seed ^ 1);
            let bias = values(channels, seed ^ 2);
            let slope: Vec<f32> = (0..channels).map(|c| [0.0, 0.1, 1.0][c % 3]).collect();
            let paired = paired_weights(&weights, blocks);
            let dense_conv = Dense { weights: &weights, paired: &paired, bias: &bias, slope: &slope, in_channels: channels, kernel, stride };
            let depthwise_conv = Depthwise { weights: &weights, bias: &bias, slope: &slope, stride };
            let (a, b) = (cut.0 as usize % out_plane.height, cut.1 as usize % out_plane.height);
            let rows = a.min(b)..a.max(b) + 1;
            let read = if kind == 0 { depthwise_conv.rows_read(&rows) } else { dense_conv.rows_read(&rows) };
            let (in_window_data, in_window) = window_of(&input, in_plane, blocks, read);
            let out_window = out_plane.window(rows.start + 1..rows.end + 1);
            let mut banded = vec![0f32; blocks * out_window.len()];
            let whole = run(out_plane, blocks, 1, |o| if kind == 0 {
                depthwise(Isa::detect(), &depthwise_conv, &input, in_plane, o)
            } else {
                dense(Isa::detect(), &dense_conv, &input, in_plane, o, 0)
            });
            rows_of(&mut banded, out_window, rows.clone(), |o| if kind == 0 {
                depthwise(Isa::detect(), &depthwise_conv, &in_window_data, in_window, o)
            } else {
                dense(Isa::detect(), &dense_conv, &in_window_data, in_window, o, 0)
            });
            let (expected, _) = window_of(&whole, out_plane, blocks, rows.start + 1..rows.end + 1);
            prop_assert_eq!(banded, expected);
        }
    }
}
