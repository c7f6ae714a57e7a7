//! The channel-blocked layout of feature maps ([`Plane`]), the rows one thread may
//! write ([`RowsOut`]), and how a layer's rows are split across threads.

use std::marker::PhantomData;
use std::ops::Range;

use rayon::prelude::*;
use rayon::ThreadPool;

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
    pub(super) fn same_shape(self, other: Plane) -> bool {
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
    pub(super) fn holds(self, rows: &Range<usize>) -> bool {
        stores(self, &(rows.start + 1..rows.end + 1))
    }
}

/// Bordered input rows that output rows `rows` read with this kernel and stride,
/// where `offset` is the window's top-left in bordered input coordinates.
pub(super) fn rows_read(
    rows: &Range<usize>,
    kernel: usize,
    stride: usize,
    offset: usize,
) -> Range<usize> {
    if rows.is_empty() {
        return 0..0;
    }
    rows.start * stride + offset..(rows.end - 1) * stride + offset + kernel
}

/// Whether `input` stores every bordered row in `rows`.
pub(super) fn stores(input: Plane, rows: &Range<usize>) -> bool {
    rows.is_empty()
        || (rows.start >= input.first_row && rows.end <= input.first_row + input.stored_rows)
}

/// The rows of one output map that one thread may write. Made whole from a `&mut`
/// slice, then only cut by consuming it ([`RowsOut::split`]) or borrowing it
/// exclusively ([`RowsOut::narrow`]): two holders alive at once never share a row.
pub(crate) struct RowsOut<'a> {
    pub(super) ptr: *mut f32,
    pub(super) len: usize,
    pub(super) plane: Plane,
    pub(super) rows: Range<usize>,
    pub(super) _output: PhantomData<&'a mut [f32]>,
}

// SAFETY: a `RowsOut` only writes rows in `rows`. The first holds a `&mut` slice;
// `split` consumes its holder into disjoint ranges, and `narrow` borrows its holder
// mutably for a subset of its rows, so the holders alive at one time have disjoint
// rows: no two threads write the same float, and nobody reads the slice until the
// borrow of it ends. It is `Send` but not `Sync`: each holder is moved to one
// thread, never shared.
unsafe impl Send for RowsOut<'_> {}

impl<'a> RowsOut<'a> {
    pub(super) fn new(output: &'a mut [f32], plane: Plane, rows: Range<usize>) -> Self {
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
    pub(super) fn pixel(&self, block: usize, y: usize, x: usize) -> *mut f32 {
        assert!(self.rows.contains(&y) && x < self.plane.width);
        assert!(self.plane.holds(&(y..y + 1)));
        let offset = self.plane.at(block, y, x);
        assert!(offset + LANES <= self.len);
        // SAFETY: in bounds of the slice, just checked.
        unsafe { self.ptr.add(offset) }
    }

    pub(super) fn store(&self, block: usize, y: usize, x: usize, values: &[f32; LANES]) {
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

/// One band's Winograd tiles: a grid of `rows` x `cols` tiles, stored as the one row
/// of `flat`, so that the products run over whole dense-kernel tiles (12 pixels)
/// instead of a short one at the end of every tile row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tiles {
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) flat: Plane,
}

impl Tiles {
    pub(super) fn new(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            // The one interior row; its border rows are never read.
            flat: Plane::blocked(1, rows * cols).window(1..2),
        }
    }
    /// Offset of tile (ty, tx) in one block of the stored tiles.
    pub(super) fn at(self, ty: usize, tx: usize) -> usize {
        self.flat.at(0, 0, ty * self.cols + tx)
    }
    /// Floats per block of the stored tiles.
    pub(super) fn len(self) -> usize {
        self.flat.len()
    }
}
