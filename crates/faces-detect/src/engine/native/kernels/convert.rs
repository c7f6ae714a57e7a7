//! The input conversion: RGB bytes into the network's BGR floats, packed or split
//! by column parity (for [`super::stem::stem`]).

use super::super::isa::{Isa, IsaKind};
#[cfg(target_arch = "x86_64")]
use super::avx2;

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

pub(super) fn bgr_row_scalar(rgb: &[u8], mean: [f32; 3], out: &mut [f32]) {
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
pub(super) fn split_row_scalar(
    rgb: &[u8],
    first: usize,
    mean: [f32; 3],
    out: &mut [f32],
    half: usize,
) {
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        let bordered = first + i + 1;
        let (parity, at) = (bordered % 2, bordered / 2);
        for c in 0..3 {
            out[(2 * c + parity) * half + at] = f32::from(px[2 - c]) - mean[c];
        }
    }
}
