//! The dense (1x1 and 3x3) and depthwise 3x3 kernels, each with its scalar twin.

use super::super::isa::{Isa, IsaKind};
#[cfg(target_arch = "x86_64")]
use super::avx2;
use super::layers::{activate, Dense, Depthwise};
use super::layout::{Plane, RowsOut, LANES};

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
        // where it also has AVX-512 F + DQ; sizes checked above (`paired` sized
        // whenever it is not empty, and the wide tiles run only then).
        IsaKind::Avx2Fma | IsaKind::Avx512 => unsafe {
            avx2::dense(
                conv,
                input,
                in_plane,
                out,
                out_block,
                // The wide tiles read `paired`; without it the AVX2 tiles run.
                isa.kind() == IsaKind::Avx512 && !conv.paired.is_empty(),
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
pub(super) fn dense_scalar(
    conv: &Dense,
    input: &[f32],
    in_plane: Plane,
    out: &RowsOut,
    out_block: usize,
) {
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
pub(super) fn depthwise_scalar(conv: &Depthwise, input: &[f32], in_plane: Plane, out: &RowsOut) {
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
