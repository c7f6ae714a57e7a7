//! The first layer on AVX-512, over the split input.

use super::super::isa::{Isa, IsaKind};
#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::layers::{activate, Dense};
use super::layout::{stores, Plane, RowsOut, LANES};

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
pub(super) fn stem_pixel_scalar(
    conv: &Dense,
    rows: [&[f32]; 3],
    half: usize,
    x: usize,
) -> [f32; LANES] {
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
