//! The native engine: our one network (RetinaFace, MobileNet-0.25 backbone) written
//! out in Rust over hand-written AVX2 kernels, with its weights read from the same
//! embedded ONNX file the other engines load.
//!
//! Why it exists: no general engine gets near the hardware on this network (rten
//! 0.27 is about 3x slower than onnxruntime, tract slower still); see docs/engine.md.
//!
//! The graph, as the ONNX file has it (BatchNorm already folded into the convolutions):
//! - backbone: a 3x3 stride-2 convolution, then 13 depthwise-separable blocks
//!   (depthwise 3x3 + pointwise 1x1, LeakyReLU(0.1) after each), whose outputs at
//!   strides 8, 16 and 32 (64, 128, 256 channels) feed
//! - an FPN: a 1x1 lateral to 64 channels per level; the coarser level, upsampled 2x
//!   (nearest), is added to the finer one, which a 3x3 "merge" convolution smooths;
//! - an SSH context module per level: branches of one, two and three 3x3
//!   convolutions (32 + 16 + 16 channels, the second and third sharing their first
//!   convolution), concatenated, ReLU;
//! - heads per level: 1x1 convolutions for class scores (2 anchors x 2), boxes
//!   (2 x 4) and landmarks (2 x 10), here fused into one 32-channel convolution;
//!   softmax over the two class scores.
//!
//! Every activation is fused into the convolution that precedes it, the SSH concat is
//! free (each branch writes its own channel blocks of one map), and all buffers live
//! in an [`Arena`] sized for the input shape and reused from call to call. The first
//! layers, whose maps are the largest, run in bands of rows that stay in cache and
//! never exist whole (`NativeNetwork::first_layers`); the results are the same, bit for
//! bit, as layer by layer over whole maps. The 3x3 stride-1 dense layers (FPN merges,
//! SSH; half the network's work) run by Winograd F(2x2, 3x3), which differs from the
//! direct sums only by float rounding.

mod isa;

// The one module where `unsafe` is allowed: each block says what it relies on.
#[allow(unsafe_code)]
mod kernels;

mod arena;
mod layers;
mod onnx;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use image::RgbImage;
use rayon::ThreadPool;

use super::network::Network;
use super::profile::{LayerKind, LayerTime};
use crate::model::padded_size;
use crate::DetectError;
use arena::{
    add_upsampled, fill_input, lend, winograd_band_tiles, zero_border, Arena, Band, BandScratch,
};
use kernels::{
    parallel_groups, parallel_rows, rows_of, winograd, winograd_fits, Isa, IsaKind, Plane, RowsOut,
    WinogradScratch, LANES,
};
use layers::{
    conv_name, conv_node, dense_layer, depthwise_layer, model_error, DenseLayer, DepthwiseLayer,
    Ssh,
};
use onnx::Graph;

/// Whether this CPU runs the native engine (AVX2 and FMA).
pub(crate) fn available() -> bool {
    Isa::detect().kind() != IsaKind::Scalar
}

/// This core's single-precision FMA throughput in GFLOP/s (a register-only loop),
/// the ceiling the kernels are measured against; `None` without AVX2/FMA.
pub fn fma_peak_gflops() -> Option<f64> {
    kernels::fma_peak_gflops(Isa::detect())
}

/// Per-kind totals, filled while profiling.
type Tally = Mutex<[(u64, Duration); 5]>;

fn timed<R>(tally: Option<&Tally>, kind: LayerKind, macs: u64, f: impl FnOnce() -> R) -> R {
    timed_share(tally, kind, macs, 1, f)
}

/// `timed` for work that runs on `side_by_side` threads at once, each timing its own
/// part: each adds its time divided by that count, so the kind's total stays close to
/// the wall-clock time, as for layers split by rows.
fn timed_share<R>(
    tally: Option<&Tally>,
    kind: LayerKind,
    macs: u64,
    side_by_side: usize,
    f: impl FnOnce() -> R,
) -> R {
    let Some(tally) = tally else { return f() };
    let start = Instant::now();
    let result = f();
    let i = LayerKind::ALL.iter().position(|&k| k == kind).unwrap_or(4);
    let Ok(mut tally) = tally.lock() else {
        return result;
    };
    tally[i].0 += macs;
    tally[i].1 += start.elapsed() / side_by_side.max(1) as u32;
    result
}

/// The network, loaded; `infer` may run from several threads at once.
pub(crate) struct NativeNetwork {
    isa: Isa,
    pool: Option<ThreadPool>,
    stem: DenseLayer,
    /// Depthwise + pointwise pairs; the outputs after `LEVEL_ENDS` feed the FPN.
    blocks: Vec<(DepthwiseLayer, DenseLayer)>,
    lateral: [DenseLayer; 3],
    /// Merge convolutions of levels 0 (stride 8) and 1 (stride 16).
    merge: [DenseLayer; 2],
    ssh: [Ssh; 3],
    heads: [DenseLayer; 3],
    arenas: Mutex<Vec<Arena>>,
}

/// Backbone block indices (into `NativeNetwork::blocks`) whose outputs are the
/// stride-8, -16 and -32 feature maps.
const LEVEL_ENDS: [usize; 3] = [4, 10, 12];

/// The first layers (input, stem, block 0, block 1's depthwise) run band by band: this
/// many rows of block 1's depthwise output per band. Their maps are the network's
/// largest (at stride 2, up to 16 channels: 30 MB for a 1024x1856 photo whole); a band
/// of them stays within a core's L2 at 1024 px, and recomputing the rows two bands
/// share costs a few percent of these cheap layers.
const BAND_ROWS: usize = 8;

const _: () = assert!(LEVEL_ENDS[0] >= 1, "the banded layers feed no level");

impl NativeNetwork {
    /// Reads the network's weights from the ONNX file, to run on the best kernels
    /// this CPU has: without AVX2/FMA those are the scalar twins, correct but slow,
    /// so `Detector::new` picks rten there instead (and says so). Fails where the
    /// file is not the network this code expects.
    pub(crate) fn load(model: &[u8], threads: Option<usize>) -> Result<Self, DetectError> {
        Self::load_with(model, threads, Isa::detect())
    }

    fn load_with(model: &[u8], threads: Option<usize>, isa: Isa) -> Result<Self, DetectError> {
        let graph = Graph::parse(model)?;
        let stem = dense_layer(&graph, &[&conv_name("/fx/stage1/stage1.0/stage1.0.0")], 3)?;
        let mut blocks = Vec::new();
        for (stage, range) in [(1, 1..=5), (2, 0..=5), (3, 0..=1)] {
            for i in range {
                let path = format!("/fx/stage{stage}/stage{stage}.{i}/stage{stage}.{i}");
                let dw = depthwise_layer(
                    &graph,
                    &conv_name(&format!("{path}.0/stage{stage}.{i}.0.0")),
                )?;
                let pw = dense_layer(
                    &graph,
                    &[&conv_name(&format!("{path}.1/stage{stage}.{i}.1.0"))],
                    1,
                )?;
                blocks.push((dw, pw));
            }
        }
        let lateral = [1, 2, 3].map(|n| {
            dense_layer(
                &graph,
                &[&conv_name(&format!("/fpn/output{n}/output{n}.0"))],
                1,
            )
        });
        let merge = [1, 2].map(|n| {
            dense_layer(
                &graph,
                &[&conv_name(&format!("/fpn/merge{n}/merge{n}.0"))],
                3,
            )
        });
        let ssh = [1, 2, 3].map(|n| -> Result<Ssh, DetectError> {
            let conv = |name: &str| {
                dense_layer(
                    &graph,
                    &[&conv_name(&format!("/ssh{n}/{name}/{name}.0"))],
                    3,
                )
            };
            // The exporter wrote conv5X5_1 twice (once per branch), with the same
            // weights; it is computed once here.
            let first = conv_node(
                &graph,
                &conv_name(&format!("/ssh{n}/conv5X5_1/conv5X5_1.0")),
                3,
                false,
            )?;
            let again = conv_node(
                &graph,
                &conv_name(&format!("/ssh{n}/conv5X5_1/conv5X5_1.0_1")),
                3,
                false,
            )?;
            if first.0.data != again.0.data || first.1.data != again.1.data {
                return Err(model_error(format!("ssh{n}: the two conv5X5_1 differ")));
            }
            let name = |name: &str| conv_name(&format!("/ssh{n}/{name}/{name}.0"));
            Ok(Ssh {
                first: dense_layer(&graph, &[&name("conv5X5_1"), &name("conv3X3")], 3)?,
                branch: first.0.dims[0],
                conv5_2: conv("conv5X5_2")?,
                conv7_2: conv("conv7X7_2")?,
                conv7_3: conv("conv7x7_3")?,
            })
        });
        let heads = [0, 1, 2].map(|n| {
            let names = ["class_head", "bbox_head", "landmark_head"]
                .map(|head| conv_name(&format!("/{head}/{head}.{n}")));
            dense_layer(&graph, &names.each_ref().map(String::as_str), 1)
        });
        let [l0, l1, l2] = lateral;
        let [m0, m1] = merge;
        let [s0, s1, s2] = ssh;
        let [h0, h1, h2] = heads;
        let network = Self {
            isa,
            pool: match threads.unwrap_or_else(default_threads) {
                0 | 1 => None,
                n => Some(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(n)
                        .thread_name(|i| format!("faces-native-{i}"))
                        .build()
                        .map_err(|e| model_error(e.to_string()))?,
                ),
            },
            stem,
            blocks,
            lateral: [l0?, l1?, l2?],
            merge: [m0?, m1?],
            ssh: [s0?, s1?, s2?],
            heads: [h0?, h1?, h2?],
            arenas: Mutex::new(Vec::new()),
        };
        network.check_shapes()?;
        Ok(network)
    }

    /// The channel counts chain from layer to layer as `forward` assumes.
    fn check_shapes(&self) -> Result<(), DetectError> {
        let fpn = 64;
        let mut ok = self.stem.in_channels == 3 && self.stem.stride == 2;
        let mut channels = self.stem.out_blocks() * LANES;
        let mut level_channels = Vec::new();
        for (i, (dw, pw)) in self.blocks.iter().enumerate() {
            ok &= dw.bias.len() == channels && pw.in_channels == channels;
            channels = pw.out_blocks() * LANES;
            if LEVEL_ENDS.contains(&i) {
                level_channels.push(channels);
            }
        }
        for (lateral, &channels) in self.lateral.iter().zip(&level_channels) {
            ok &= lateral.in_channels == channels && lateral.out_blocks() * LANES == fpn;
        }
        for merge in &self.merge {
            ok &= merge.in_channels == fpn && merge.out_blocks() * LANES == fpn;
        }
        for s in &self.ssh {
            let branch = s.branch;
            ok &= s.first.in_channels == fpn
                && branch.is_multiple_of(LANES)
                && s.conv5_2.in_channels == branch
                && s.first.out_blocks() > s.branch_blocks()
                && s.conv7_2.in_channels == branch
                && s.conv7_3.in_channels == s.conv7_2.out_blocks() * LANES
                && s.out_blocks() * LANES == fpn;
        }
        for head in &self.heads {
            ok &= head.in_channels == fpn && head.bias.len() == HEAD_CHANNELS;
        }
        if ok {
            Ok(())
        } else {
            Err(model_error(
                "the model's layers do not chain as expected".into(),
            ))
        }
    }

    /// Runs the network on an RGB image (zero-padded to a multiple of 32 on the
    /// right and bottom) and returns boxes, class probabilities and landmarks,
    /// flattened as the ONNX model's `loc`, `conf` and `landmarks` outputs.
    pub(crate) fn infer(&self, image: &RgbImage) -> Result<[Vec<f32>; 3], DetectError> {
        self.run(image, None)
    }

    /// `infer`, timing each layer kind.
    pub(crate) fn profile(&self, image: &RgbImage) -> Result<Vec<LayerTime>, DetectError> {
        let tally = Tally::default();
        let start = Instant::now();
        self.run(image, Some(&tally))?;
        let total = start.elapsed();
        let mut times: Vec<LayerTime> = LayerKind::ALL
            .iter()
            .zip(tally.into_inner().unwrap_or_default())
            .map(|(&kind, (macs, time))| LayerTime { kind, macs, time })
            .collect();
        let measured: Duration = times.iter().map(|t| t.time).sum();
        times[4].time = total.saturating_sub(measured);
        Ok(times)
    }

    fn run(&self, image: &RgbImage, tally: Option<&Tally>) -> Result<[Vec<f32>; 3], DetectError> {
        let (padded_w, padded_h) = padded_size(image);
        let (width, height) = (image.width() as usize, image.height() as usize);
        let rgb = image.as_raw().as_slice();
        let arena = {
            let mut pool = self
                .arenas
                .lock()
                .map_err(|_| model_error("arena lock".into()))?;
            let at = pool.iter().position(|a| a.shape == (padded_h, padded_w));
            match at.or(pool.len().checked_sub(1)) {
                Some(i) => pool.swap_remove(i),
                None => Arena::default(),
            }
        };
        let mut arena = arena;
        arena.prepare(self, padded_h, padded_w);
        // One entry into the pool for the whole pass: the layers' splits then start
        // from a pool thread, without a cross-thread wake-up and wait per layer.
        let mut pass = || {
            self.first_layers(&mut arena, rgb, (width, height), tally);
            self.forward(&mut arena, tally);
        };
        match &self.pool {
            Some(pool) => pool.install(pass),
            None => pass(),
        }
        let outputs = arena.outputs();
        if let Ok(mut pool) = self.arenas.lock() {
            pool.push(arena);
        }
        Ok(outputs)
    }

    /// The plane of the banded layers' output (block 1's depthwise).
    fn banded_plane(&self, image: Plane) -> Plane {
        image
            .strided(self.stem.stride)
            .strided(self.blocks[0].0.stride)
            .strided(self.blocks[1].0.stride)
    }

    /// The rows of each banded map that block 1's depthwise output rows `rows` need,
    /// from the last layer back to the input.
    fn band(&self, image: Plane, rows: &Range<usize>) -> Band {
        let (dw0, pw0) = &self.blocks[0];
        let dw1 = &self.blocks[1].0;
        let stem_plane = image.strided(self.stem.stride);
        let block0_plane = stem_plane.strided(dw0.stride);
        let pw0_out = block0_plane.window(dw1.conv().rows_read(rows));
        let dw0_out = block0_plane.window(pw0.conv().rows_read(&pw0_out.interior_rows()));
        let stem_out = stem_plane.window(dw0.conv().rows_read(&dw0_out.interior_rows()));
        let input = image.window(self.stem.conv().rows_read(&stem_out.interior_rows()));
        Band {
            input,
            stem: stem_out,
            dw0: dw0_out,
            pw0: pw0_out,
        }
    }

    /// Input fill, stem, block 0 and block 1's depthwise, band by band of the last
    /// one's output rows, into pong: each band's maps hold only the rows it needs
    /// (those two bands share are computed twice). Each thread takes a contiguous
    /// range of rows with its own band scratch.
    fn first_layers(&self, a: &mut Arena, rgb: &[u8], size: (usize, usize), tally: Option<&Tally>) {
        let isa = self.isa;
        let (dw0, pw0) = &self.blocks[0];
        let dw1 = &self.blocks[1].0;
        let (stem, dw0_conv, pw0_conv, dw1_conv) =
            (self.stem.conv(), dw0.conv(), pw0.conv(), dw1.conv());
        let image = a.image;
        let out_plane = self.banded_plane(image);
        let side_by_side = a.bands.len();
        let timed = |kind, macs, f: &mut dyn FnMut()| {
            timed_share(tally, kind, macs as u64, side_by_side, f)
        };
        // Multiply-accumulates of `rows` output rows of `plane`.
        let macs = |rows: usize, plane: Plane, channels: usize, per_channel: usize| {
            rows * plane.width * channels * per_channel
        };
        let work = |out: &mut RowsOut, s: &mut BandScratch| {
            let group = out.rows();
            for start in group.clone().step_by(BAND_ROWS) {
                let rows = start..(start + BAND_ROWS).min(group.end);
                let band = self.band(image, &rows);
                let BandScratch {
                    input,
                    stem_out,
                    dw0_out,
                    pw0_out,
                } = s;
                // On AVX-512 the stem reads its input split by column parity (see
                // `kernels::stem`), elsewhere packed.
                let split = isa.kind() == IsaKind::Avx512;
                timed(LayerKind::Other, 0, &mut || {
                    fill_input(isa, split, rgb, size, band.input, input)
                });
                let stem_rows = band.stem.interior_rows();
                let n = macs(
                    stem_rows.len(),
                    band.stem,
                    stem.bias.len(),
                    9 * stem.in_channels,
                );
                timed(LayerKind::FirstLayer, n, &mut || {
                    rows_of(stem_out, band.stem, stem_rows.clone(), |o| {
                        if split {
                            kernels::stem(isa, &stem, input, band.input, o)
                        } else {
                            kernels::dense(isa, &stem, input, band.input, o, 0)
                        }
                    });
                    zero_border(stem_out, band.stem, self.stem.out_blocks());
                });
                let dw0_rows = band.dw0.interior_rows();
                let n = macs(dw0_rows.len(), band.dw0, dw0.bias.len(), 9);
                timed(LayerKind::Depthwise, n, &mut || {
                    rows_of(dw0_out, band.dw0, dw0_rows.clone(), |o| {
                        kernels::depthwise(isa, &dw0_conv, stem_out, band.stem, o)
                    });
                    zero_border(dw0_out, band.dw0, dw0.blocks());
                });
                let pw0_rows = band.pw0.interior_rows();
                let n = macs(pw0_rows.len(), band.pw0, pw0.bias.len(), pw0.in_channels);
                timed(LayerKind::Pointwise, n, &mut || {
                    rows_of(pw0_out, band.pw0, pw0_rows.clone(), |o| {
                        kernels::dense(isa, &pw0_conv, dw0_out, band.dw0, o, 0)
                    });
                    zero_border(pw0_out, band.pw0, pw0.out_blocks());
                });
                let n = macs(rows.len(), out_plane, dw1.bias.len(), 9);
                timed(LayerKind::Depthwise, n, &mut || {
                    kernels::depthwise(isa, &dw1_conv, pw0_out, band.pw0, &out.narrow(rows.clone()))
                });
            }
        };
        parallel_groups(
            self.pool.as_ref(),
            &mut a.pong.data,
            out_plane,
            &mut a.bands,
            1,
            work,
        );
        zero_border(&mut a.pong.data, out_plane, dw1.blocks());
    }

    fn forward(&self, a: &mut Arena, tally: Option<&Tally>) {
        let pool = self.pool.as_ref();
        let isa = self.isa;
        let winograd_scratch = &mut a.winograd;
        // Full3x3's multiply-accumulates are the direct convolution's, also where
        // Winograd does fewer.
        let mut dense = |layer: &DenseLayer,
                         input: &[f32],
                         in_plane: Plane,
                         out: &mut [f32],
                         out_block: usize| {
            let plane = in_plane.strided(layer.stride);
            let conv = layer.conv();
            let kind = match (layer.in_channels, layer.kernel) {
                (3, _) => LayerKind::FirstLayer,
                (_, 1) => LayerKind::Pointwise,
                _ => LayerKind::Full3x3,
            };
            let taps = layer.kernel * layer.kernel;
            let macs = plane.height * plane.width * layer.bias.len() * layer.in_channels * taps;
            timed(tally, kind, macs as u64, || match &layer.winograd {
                Some(wino) if winograd_fits(in_plane) => {
                    let band = 2 * winograd_band_tiles(layer, plane);
                    parallel_groups(pool, out, plane, winograd_scratch, band, |rows, s| {
                        let group = rows.rows();
                        for start in group.clone().step_by(band) {
                            let part = rows.narrow(start..(start + band).min(group.end));
                            winograd(isa, &conv, wino, input, in_plane, &part, out_block, s);
                        }
                    })
                }
                _ => parallel_rows(pool, out, plane, |rows| {
                    kernels::dense(isa, &conv, input, in_plane, rows, out_block)
                }),
            });
        };
        let depthwise =
            |layer: &DepthwiseLayer, input: &[f32], in_plane: Plane, out: &mut [f32]| {
                let conv = layer.conv();
                let plane = in_plane.strided(layer.stride);
                let macs = plane.height * plane.width * layer.bias.len() * 9;
                timed(tally, LayerKind::Depthwise, macs as u64, || {
                    parallel_rows(pool, out, plane, |rows| {
                        kernels::depthwise(isa, &conv, input, in_plane, rows)
                    })
                });
            };

        // Backbone, from block 1's depthwise output (pong, by `first_layers`) on:
        // ping-pong between two scratch maps; level outputs go to their own maps, which
        // the next block then reads.
        let Arena {
            image,
            ping,
            pong,
            levels,
            lateral,
            merged,
            ssh,
            heads,
            ..
        } = a;
        let mut plane = self.banded_plane(*image);
        let mut source_level: Option<usize> = None;
        for (i, (dw, pw)) in self.blocks.iter().enumerate().skip(1) {
            if i > 1 {
                let source: &[f32] = match source_level {
                    Some(n) => &levels[n].data,
                    None => &ping.data,
                };
                depthwise(dw, source, plane, &mut pong.data);
                plane = plane.strided(dw.stride);
                zero_border(&mut pong.data, plane, dw.blocks());
            }
            if let Some(n) = LEVEL_ENDS.iter().position(|&end| end == i) {
                dense(pw, &pong.data, plane, &mut levels[n].data, 0);
                source_level = Some(n);
            } else {
                dense(pw, &pong.data, plane, &mut ping.data, 0);
                zero_border(&mut ping.data, plane, pw.out_blocks());
                source_level = None;
            }
        }

        // The scratch maps are idle from here on: level 0, the largest, keeps its
        // lateral, merged and SSH maps in them.
        lend(ping, &mut lateral[0], levels[0].plane);
        lend(pong, &mut merged[0], levels[0].plane);

        // FPN: laterals, then top-down: upsample, add, merge.
        for n in 0..3 {
            dense(
                &self.lateral[n],
                &levels[n].data,
                levels[n].plane,
                &mut lateral[n].data,
                0,
            );
        }
        let (fine, coarse) = lateral.split_at_mut(2);
        add_upsampled(&mut fine[1], &coarse[0]);
        dense(
            &self.merge[1],
            &fine[1].data,
            fine[1].plane,
            &mut merged[1].data,
            0,
        );
        add_upsampled(&mut fine[0], &merged[1]);
        dense(
            &self.merge[0],
            &fine[0].data,
            fine[0].plane,
            &mut merged[0].data,
            0,
        );

        // lateral[0] is dead now; its buffer takes level 0's SSH output.
        lend(&mut lateral[0], &mut ssh[0].out, levels[0].plane);

        // SSH and heads per level; level 2's SSH reads the stride-32 lateral directly.
        for n in 0..3 {
            let source = if n < 2 { &merged[n] } else { &lateral[2] };
            let s = &self.ssh[n];
            let (p, scratch) = (source.plane, &mut ssh[n]);
            let (out, t2) = (&mut scratch.out, &mut scratch.t2);
            dense(&s.first, &source.data, p, &mut out.data, 0);
            // conv5X5_1's blocks, then the concat: conv3X3 (from `first`), conv5X5_2, conv7x7_3.
            let (branch, concat) = out.data.split_at_mut(s.branch_blocks() * p.len());
            let conv3_blocks = s.first.out_blocks() - s.branch_blocks();
            dense(&s.conv5_2, branch, p, concat, conv3_blocks);
            dense(&s.conv7_2, branch, p, &mut t2.data, 0);
            dense(
                &s.conv7_3,
                &t2.data,
                p,
                concat,
                conv3_blocks + s.conv5_2.out_blocks(),
            );
            dense(&self.heads[n], concat, p, &mut heads[n].data, 0);
        }
        ping.data = std::mem::take(&mut ssh[0].out.data);
        pong.data = std::mem::take(&mut merged[0].data);
    }
}

/// Channels of the fused head: class (2 anchors x 2), boxes (2 x 4), landmarks (2 x 10).
const HEAD_CHANNELS: usize = 32;

impl Arena {
    /// Sizes every buffer for a `height` x `width` input (both multiples of 32),
    /// unless it already is.
    fn prepare(&mut self, net: &NativeNetwork, height: usize, width: usize) {
        if self.shape == (height, width) {
            return;
        }
        self.shape = (height, width);
        let image = Plane::packed(height, width, 3);
        self.image = image;
        self.prepare_bands(net, image);
        // Winograd's scratch grows with its first bands.
        let threads = net.pool.as_ref().map_or(1, ThreadPool::current_num_threads);
        self.winograd.resize_with(threads, WinogradScratch::default);
        // Sizes of the ping-pong maps: the largest map each holds. Pong first holds
        // block 1's depthwise output; after the backbone they hold level 0's FPN and
        // SSH maps.
        let mut plane = net.banded_plane(image);
        let (mut ping, mut pong) = (0, net.blocks[1].0.blocks() * plane.len());
        let mut level_planes = Vec::new();
        for (i, (dw, pw)) in net.blocks.iter().enumerate().skip(1) {
            if i > 1 {
                plane = plane.strided(dw.stride);
                pong = pong.max(dw.blocks() * plane.len());
            }
            ping = ping.max(pw.out_blocks() * plane.len());
            if LEVEL_ENDS.contains(&i) {
                level_planes.push((plane, pw.out_blocks()));
            }
        }
        let level0 = level_planes[0].0.len()
            * net.lateral[0]
                .out_blocks()
                .max(net.merge[0].out_blocks())
                .max(net.ssh[0].map_blocks());
        // Their borders are zeroed after each layer, for that layer's plane.
        self.ping.data.resize(ping.max(level0), 0.0);
        self.pong.data.resize(pong.max(level0), 0.0);
        for (n, &(plane, blocks)) in level_planes.iter().enumerate() {
            let s = &net.ssh[n];
            self.levels[n].resize(plane, blocks);
            self.heads[n].resize(plane, HEAD_CHANNELS / LANES);
            self.ssh[n].t2.resize(plane, s.conv7_2.out_blocks());
            // Level 0's lateral, merged and SSH output maps borrow ping and pong.
            if n > 0 {
                self.lateral[n].resize(plane, net.lateral[n].out_blocks());
                self.ssh[n].out.resize(plane, s.map_blocks());
            }
            if n == 1 {
                self.merged[n].resize(plane, net.merge[n].out_blocks());
            }
        }
    }

    /// One band scratch per thread, each sized for the largest band of `image`.
    fn prepare_bands(&mut self, net: &NativeNetwork, image: Plane) {
        let threads = net.pool.as_ref().map_or(1, ThreadPool::current_num_threads);
        let rows = net.banded_plane(image).height;
        let (dw0, pw0) = &net.blocks[0];
        let mut sizes = [0; 4];
        for start in 0..rows {
            let band = net.band(image, &(start..(start + BAND_ROWS).min(rows)));
            let needs = [
                band.input.len(),
                net.stem.out_blocks() * band.stem.len(),
                dw0.blocks() * band.dw0.len(),
                pw0.out_blocks() * band.pw0.len(),
            ];
            for (size, need) in sizes.iter_mut().zip(needs) {
                *size = (*size).max(need);
            }
        }
        self.bands.resize_with(threads, BandScratch::default);
        for band in &mut self.bands {
            let buffers = [
                &mut band.input,
                &mut band.stem_out,
                &mut band.dw0_out,
                &mut band.pw0_out,
            ];
            for (buffer, size) in buffers.into_iter().zip(sizes) {
                buffer.resize(size, 0.0);
            }
        }
    }

    /// The heads' maps as the ONNX outputs: for each level, row, column and anchor,
    /// 4 box values, 2 class probabilities (softmax) and 10 landmark values.
    fn outputs(&self) -> [Vec<f32>; 3] {
        let anchors: usize = self
            .heads
            .iter()
            .map(|h| 2 * h.plane.height * h.plane.width)
            .sum();
        let (mut boxes, mut scores, mut landmarks) = (
            Vec::with_capacity(anchors * 4),
            Vec::with_capacity(anchors * 2),
            Vec::with_capacity(anchors * 10),
        );
        for head in &self.heads {
            let plane = head.plane;
            let mut pixel = [0f32; HEAD_CHANNELS];
            for y in 0..plane.height {
                for x in 0..plane.width {
                    for (b, lanes) in pixel.chunks_exact_mut(LANES).enumerate() {
                        lanes.copy_from_slice(&head.data[plane.at(b, y, x)..][..LANES]);
                    }
                    // Channels: class (anchor, 2), boxes (anchor, 4), landmarks (anchor, 10).
                    let (class, rest) = pixel.split_at(4);
                    let (boxes_of, landmarks_of) = rest.split_at(8);
                    for anchor in 0..2 {
                        let (a, b) = (class[anchor * 2], class[anchor * 2 + 1]);
                        let top = a.max(b);
                        let (ea, eb) = ((a - top).exp(), (b - top).exp());
                        scores.extend([ea / (ea + eb), eb / (ea + eb)]);
                        boxes.extend_from_slice(&boxes_of[anchor * 4..][..4]);
                        landmarks.extend_from_slice(&landmarks_of[anchor * 10..][..10]);
                    }
                }
            }
        }
        [boxes, scores, landmarks]
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Network for NativeNetwork {
    fn infer(&self, image: &RgbImage) -> Result<[Vec<f32>; 3], DetectError> {
        NativeNetwork::infer(self, image)
    }

    fn profile(&self, image: &RgbImage) -> Result<Option<Vec<LayerTime>>, DetectError> {
        NativeNetwork::profile(self, image).map(Some)
    }
}
