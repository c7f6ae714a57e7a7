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
//! The network is described once, as a [`Plan`] (`retinaface.rs`): layers in the order
//! they run, the maps each reads and writes, the buffer each map lives in. The passes
//! below, the [`Arena`]'s sizes (all buffers, sized for the input shape and reused from
//! call to call) and the bands are computed from it. Every activation is fused into the
//! convolution that precedes it, and the SSH concat is free (each branch writes its own
//! channel blocks of one map). The first layers, whose maps are the largest, run in
//! bands of rows that stay in cache and never exist whole
//! (`NativeNetwork::first_layers`); the results are the same, bit for bit, as layer by
//! layer over whole maps. The 3x3 stride-1 dense layers (FPN merges,
//! SSH; half the network's work) run by Winograd F(2x2, 3x3), which differs from the
//! direct sums only by float rounding.

mod isa;

// The one module where `unsafe` is allowed: each block says what it relies on.
#[allow(unsafe_code)]
mod kernels;

mod arena;
mod layers;
mod onnx;
mod plan;
pub(crate) mod resnet;
mod retinaface;
#[cfg(test)]
mod tests;

pub(crate) use isa::Isa;
pub(crate) use kernels::squared_distances;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use image::RgbImage;
use rayon::ThreadPool;

use super::network::Network;
use super::profile::{LayerKind, LayerTime};
use crate::model::padded_size;
use crate::DetectError;
use arena::{add_upsampled, fill_input, winograd_band_tiles, zero_border, Arena, BAND_ROWS};
use kernels::{
    parallel_groups, parallel_rows, rows_of, winograd, winograd_fits, IsaKind, Plane, RowsOut,
    WinogradScratch, LANES,
};
use layers::{model_error, DenseLayer};
use onnx::Graph;
use plan::{At, Op, Plan, Slot, IMAGE};
use retinaface::HEAD_CHANNELS;

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
    plan: Plan,
    arenas: Mutex<Vec<Arena>>,
}

impl NativeNetwork {
    /// Reads the network's weights from the ONNX file, to run on the best kernels
    /// this CPU has: without AVX2/FMA those are the scalar twins, correct but slow,
    /// so `Detector::new` picks rten there instead (and says so). Fails where the
    /// file is not the network this code expects.
    pub(crate) fn load(model: &[u8], threads: Option<usize>) -> Result<Self, DetectError> {
        Self::load_with(model, threads, Isa::detect())
    }

    fn load_with(model: &[u8], threads: Option<usize>, isa: Isa) -> Result<Self, DetectError> {
        let plan = retinaface::plan(&Graph::parse(model)?)?;
        let pool = match threads.unwrap_or_else(default_threads) {
            0 | 1 => None,
            n => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("faces-native-{i}"))
                    .build()
                    .map_err(|e| model_error(e.to_string()))?,
            ),
        };
        Ok(Self {
            isa,
            pool,
            plan,
            arenas: Mutex::new(Vec::new()),
        })
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
        let threads = self
            .pool
            .as_ref()
            .map_or(1, ThreadPool::current_num_threads);
        arena.prepare(&self.plan, threads, padded_h, padded_w);
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
        let outputs = self.outputs(&arena);
        if let Ok(mut pool) = self.arenas.lock() {
            pool.push(arena);
        }
        Ok(outputs)
    }

    /// The banded steps (input fill, stem, block 0 and block 1's depthwise), band by
    /// band of the last one's output rows, into its map: each band's maps hold only
    /// the rows it needs (those two bands share are computed twice). Each thread takes
    /// a contiguous range of rows with its own band scratch.
    fn first_layers(&self, a: &mut Arena, rgb: &[u8], size: (usize, usize), tally: Option<&Tally>) {
        let (isa, plan, planes) = (self.isa, &self.plan, &a.planes);
        let out_map = plan.banded_output();
        let out_plane = planes[out_map];
        let side_by_side = a.bands.len();
        // On AVX-512 the stem reads its input split by column parity (see
        // `kernels::stem`), elsewhere packed.
        let split = isa.kind() == IsaKind::Avx512;
        let work = |out: &mut RowsOut, scratch: &mut Vec<Vec<f32>>| {
            let group = out.rows();
            for start in group.clone().step_by(BAND_ROWS) {
                let rows = start..(start + BAND_ROWS).min(group.end);
                let windows = plan.band(planes, &rows);
                timed_share(tally, LayerKind::Other, 0, side_by_side, || {
                    fill_input(isa, split, rgb, size, windows[0], &mut scratch[0])
                });
                for (i, step) in plan.steps[..plan.banded].iter().enumerate() {
                    let (done, next) = scratch.split_at_mut(i + 1);
                    let (input, in_plane) = (&done[i], windows[i]);
                    let run = |o: &RowsOut| match &step.op {
                        Op::Dense(layer) if step.input.map == IMAGE && split => {
                            kernels::stem(isa, &layer.conv(), input, in_plane, o)
                        }
                        Op::Dense(layer) => {
                            kernels::dense(isa, &layer.conv(), input, in_plane, o, 0)
                        }
                        Op::Depthwise(layer) => {
                            kernels::depthwise(isa, &layer.conv(), input, in_plane, o)
                        }
                        // The plan has none in bands.
                        Op::AddUpsampled => {}
                    };
                    if i + 1 == plan.banded {
                        let macs = macs(&step.op, rows.len() * out_plane.width);
                        timed_share(tally, kind(&step.op), macs, side_by_side, || {
                            run(&out.narrow(rows.clone()))
                        });
                    } else {
                        let window = windows[i + 1];
                        let macs = macs(&step.op, window.interior_rows().len() * window.width);
                        timed_share(tally, kind(&step.op), macs, side_by_side, || {
                            rows_of(&mut next[0], window, window.interior_rows(), |o| run(o));
                            zero_border(&mut next[0], window, step.op.out_blocks());
                        });
                    }
                }
            }
        };
        let Slot::Buffer(b) = plan.maps[out_map].slot else {
            return;
        };
        let output = &mut a.buffers[b];
        parallel_groups(self.pool.as_ref(), output, out_plane, &mut a.bands, 1, work);
        zero_border(output, out_plane, plan.maps[out_map].blocks);
    }

    /// The steps after the bands, one after the other, each split across the threads.
    fn forward(&self, a: &mut Arena, tally: Option<&Tally>) {
        let plan = &self.plan;
        for step in &plan.steps[plan.banded..] {
            let (input, output) = (step.input, step.output);
            let (in_plane, out_plane) = (a.planes[input.map], a.planes[output.map]);
            let (Slot::Buffer(from), Slot::Buffer(to)) =
                (plan.maps[input.map].slot, plan.maps[output.map].slot)
            else {
                continue; // the plan has no bands here
            };
            // Taken out for the step, so that it can be written while another buffer
            // is read; one buffer is both only where a step reads one part of a map
            // and writes a later part (the SSH module), which the plan checks.
            let mut target = std::mem::take(&mut a.buffers[to]);
            let (source, out): (&[f32], &mut [f32]) = if from == to {
                let (before, out) = target.split_at_mut(output.block * out_plane.len());
                (&before[input.block * in_plane.len()..], out)
            } else {
                (
                    &a.buffers[from][input.block * in_plane.len()..],
                    &mut target[output.block * out_plane.len()..],
                )
            };
            match &step.op {
                Op::Dense(layer) => {
                    self.dense(layer, source, in_plane, out, &mut a.winograd, tally);
                    zero_border(out, out_plane, layer.out_blocks());
                }
                Op::Depthwise(layer) => {
                    let conv = layer.conv();
                    let macs = macs(&step.op, out_plane.height * out_plane.width);
                    timed(tally, LayerKind::Depthwise, macs, || {
                        parallel_rows(self.pool.as_ref(), out, out_plane, |rows| {
                            kernels::depthwise(self.isa, &conv, source, in_plane, rows)
                        })
                    });
                    zero_border(out, out_plane, layer.blocks());
                }
                Op::AddUpsampled => {
                    let blocks = plan.maps[output.map].blocks - output.block;
                    add_upsampled(out, out_plane, source, in_plane, blocks);
                }
            }
            a.buffers[to] = target;
        }
    }

    /// A dense layer over whole maps: Winograd for the 3x3 stride-1 layers where the
    /// map suits it, else the direct kernel.
    fn dense(
        &self,
        layer: &DenseLayer,
        input: &[f32],
        in_plane: Plane,
        out: &mut [f32],
        winograd_scratch: &mut [WinogradScratch],
        tally: Option<&Tally>,
    ) {
        let (pool, isa) = (self.pool.as_ref(), self.isa);
        let plane = in_plane.strided(layer.stride);
        let conv = layer.conv();
        let op_macs = layer.out_blocks() * LANES * layer.in_channels * layer.kernel * layer.kernel;
        // Full3x3's multiply-accumulates are the direct convolution's, also where
        // Winograd does fewer.
        let macs = (plane.height * plane.width * op_macs) as u64;
        let kind = dense_kind(layer);
        timed(tally, kind, macs, || match &layer.winograd {
            Some(wino) if winograd_fits(in_plane) => {
                let band = 2 * winograd_band_tiles(layer, plane);
                parallel_groups(pool, out, plane, winograd_scratch, band, |rows, s| {
                    let group = rows.rows();
                    for start in group.clone().step_by(band) {
                        let part = rows.narrow(start..(start + band).min(group.end));
                        winograd(isa, &conv, wino, input, in_plane, &part, 0, s);
                    }
                })
            }
            _ => parallel_rows(pool, out, plane, |rows| {
                kernels::dense(isa, &conv, input, in_plane, rows, 0)
            }),
        });
    }

    /// The heads' maps as the ONNX outputs: for each level, row, column and anchor,
    /// 4 box values, 2 class probabilities (softmax) and 10 landmark values.
    fn outputs(&self, a: &Arena) -> [Vec<f32>; 3] {
        let heads = &self.plan.outputs;
        let anchors: usize = heads
            .iter()
            .map(|&h| 2 * a.planes[h].height * a.planes[h].width)
            .sum();
        let (mut boxes, mut scores, mut landmarks) = (
            Vec::with_capacity(anchors * 4),
            Vec::with_capacity(anchors * 2),
            Vec::with_capacity(anchors * 10),
        );
        for &head in heads {
            let (plane, data) = (a.planes[head], a.map(&self.plan, At::map(head)));
            let mut pixel = [0f32; HEAD_CHANNELS];
            for y in 0..plane.height {
                for x in 0..plane.width {
                    for (b, lanes) in pixel.chunks_exact_mut(LANES).enumerate() {
                        lanes.copy_from_slice(&data[plane.at(b, y, x)..][..LANES]);
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

/// The profile's kind of a dense layer.
fn dense_kind(layer: &DenseLayer) -> LayerKind {
    match (layer.in_channels, layer.kernel) {
        (3, _) => LayerKind::FirstLayer,
        (_, 1) => LayerKind::Pointwise,
        _ => LayerKind::Full3x3,
    }
}

fn kind(op: &Op) -> LayerKind {
    match op {
        Op::Dense(layer) => dense_kind(layer),
        Op::Depthwise(_) => LayerKind::Depthwise,
        Op::AddUpsampled => LayerKind::Other,
    }
}

/// Multiply-accumulates of a convolution over `pixels` output pixels.
fn macs(op: &Op, pixels: usize) -> u64 {
    let per_pixel = match op {
        Op::Dense(l) => l.bias.len() * l.in_channels * l.kernel * l.kernel,
        Op::Depthwise(l) => l.bias.len() * 9,
        Op::AddUpsampled => 0,
    };
    (pixels * per_pixel) as u64
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
