//! Each kernel against its scalar twin, and the scalar dense kernel against a naive
//! NCHW convolution, over random shapes, strides and channel counts.

use std::ops::Range;

use super::super::isa::{Isa, IsaKind};
use super::conv::*;
use super::convert::*;
use super::distance::*;
use super::layers::*;
use super::layout::*;
use super::stem::*;
use super::winograd::*;
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

fn run(plane: Plane, blocks: usize, threads: usize, f: impl Fn(&mut RowsOut) + Sync) -> Vec<f32> {
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
        let conv = Dense { weights: &weights, paired: &paired, bias: &bias, slope: &slope, in_channels: 3, kernel: 3, stride: 2, padding: 1 };
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
    fn distances_match_scalar(len in 1usize..300, count in 0usize..20, seed in any::<u64>()) {
        let query = values(len, seed);
        let stored = values(len * count, seed ^ 1);
        let want: Vec<f32> = stored.chunks_exact(len).map(|row| squared_scalar(&query, row)).collect();
        for isa in Isa::available() {
            let mut got = Vec::new();
            squared_distances(isa, &query, stored.chunks_exact(len), &mut got);
            close(&got, &want)?;
        }
    }

    #[test]
    fn dense_matches_scalar_and_naive(
        in_channels in 1usize..40,
        out_blocks in 1usize..8,
        height in 1usize..12,
        width in 1usize..30,
        kernel in prop::sample::select(vec![1usize, 3]),
        stride2 in any::<bool>(),
        packed in any::<bool>(),
        unpadded in any::<bool>(),
        threads in 1usize..4,
        seed in any::<u64>(),
    ) {
        let stride = if kernel == 3 && stride2 { 2 } else { 1 };
        // dlib's ResNet: 3x3 stride 2 without padding (needs a 3x3 input).
        let pad = if kernel == 3 && stride == 2 && unpadded && height >= 3 && width >= 3 { 0 } else { kernel / 2 };
        // `packed`: three channels per pixel, as the RGB input is stored.
        let in_plane = Plane::packed(height, width, if packed { 3 } else { LANES });
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
        let conv = Dense { weights: &packed, paired: &paired, bias: &bias, slope: &slope, in_channels, kernel, stride, padding: pad };
        let out_plane = conv.out_plane(in_plane);
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
        let conv = Dense { weights: &weights, paired: &paired, bias: &bias, slope: &slope, in_channels, kernel: 3, stride: 1, padding: 1 };
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
fn window_of(data: &[f32], plane: Plane, blocks: usize, rows: Range<usize>) -> (Vec<f32>, Plane) {
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
        let dense_conv = Dense { weights: &weights, paired: &paired, bias: &bias, slope: &slope, in_channels: channels, kernel, stride, padding: kernel / 2 };
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
