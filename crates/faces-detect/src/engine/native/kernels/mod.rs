//! The native engine's convolution kernels, in the channel-blocked layout, with a
//! plain scalar twin for each. This is the only module of the crate with `unsafe`.
//!
//! Layout of a feature map ([`Plane`]): `[channel block][row][column][LANES]`, every
//! block's plane framed by a one-pixel zero border, so a 3x3 window (padding 1)
//! never needs a bounds check. Kernels write only the interior; the engine zeroes
//! a map's border after each layer that writes it (a buffer holds several maps in turn).
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

// The one place of the crate where `unsafe` is allowed (see `lib.rs`): the SIMD
// kernels, and the row ownership that lets threads write one output map.
#[cfg(target_arch = "x86_64")]
mod avx2;
mod conv;
mod convert;
mod distance;
mod layers;
mod layout;
mod stem;
#[cfg(test)]
mod tests;
mod winograd;

pub(crate) use super::isa::{Isa, IsaKind};
pub(crate) use conv::{dense, depthwise};
pub(crate) use convert::{bgr_row, split_row};
pub(crate) use distance::squared_distances;
pub(crate) use layers::{paired_weights, Dense, Depthwise};
pub(crate) use layout::{parallel_groups, parallel_rows, rows_of, Plane, RowsOut, LANES};
pub(crate) use stem::stem;
pub(crate) use winograd::{winograd, winograd_fits, Winograd, WinogradScratch, WINOGRAD_POINTS};

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
