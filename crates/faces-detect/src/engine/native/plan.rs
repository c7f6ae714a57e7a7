//! The network described once: its layers, the feature maps between them and which
//! arena buffer holds each map. `NativeNetwork`'s passes, the arena's sizes, the
//! first layers' bands and the shape checks all read this plan; the network itself
//! is written down in `retinaface.rs`.

use std::ops::Range;

use super::kernels::{Plane, LANES};
use super::layers::{model_error, DenseLayer, DepthwiseLayer};
use crate::DetectError;

/// A feature map of the plan, by index.
pub(super) type MapId = usize;

/// The network's input: the padded image, three floats per pixel.
pub(super) const IMAGE: MapId = 0;

/// Where a map's floats live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Slot {
    /// In each thread's band scratch: the first layers' maps, which never exist whole.
    Band,
    /// Arena buffer `n`, which other maps may hold before or after this one.
    Buffer(usize),
}

/// One feature map: its size relative to the input, its channel blocks, its home.
#[derive(Clone, Copy, Debug)]
pub(super) struct MapSpec {
    /// Input pixels per map pixel, each way (the product of the strides before it).
    pub(super) scale: usize,
    /// Channel blocks of [`LANES`] (the image: one block of three channels).
    pub(super) blocks: usize,
    pub(super) slot: Slot,
}

impl MapSpec {
    /// This map's plane for a `height` x `width` input.
    pub(super) fn plane(&self, map: MapId, height: usize, width: usize) -> Plane {
        if map == IMAGE {
            Plane::packed(height, width, 3)
        } else {
            Plane::blocked(height.div_ceil(self.scale), width.div_ceil(self.scale))
        }
    }
}

/// Channel blocks `block..` of a map.
#[derive(Clone, Copy, Debug)]
pub(super) struct At {
    pub(super) map: MapId,
    pub(super) block: usize,
}

impl At {
    /// A map from its first block.
    pub(super) fn map(map: MapId) -> Self {
        Self { map, block: 0 }
    }
}

pub(super) enum Op {
    Dense(DenseLayer),
    Depthwise(DepthwiseLayer),
    /// The output map += the input map upsampled 2x (nearest), over the output's blocks.
    AddUpsampled,
}

impl Op {
    /// Input pixels per output pixel, each way; 0 for upsampling.
    fn stride(&self) -> usize {
        match self {
            Op::Dense(layer) => layer.stride,
            Op::Depthwise(layer) => layer.stride,
            Op::AddUpsampled => 0,
        }
    }

    /// Bordered input rows that output rows `rows` read.
    pub(super) fn rows_read(&self, rows: &Range<usize>) -> Range<usize> {
        match self {
            Op::Dense(layer) => layer.conv().rows_read(rows),
            Op::Depthwise(layer) => layer.conv().rows_read(rows),
            Op::AddUpsampled => rows.start / 2 + 1..rows.end.div_ceil(2) + 1,
        }
    }

    /// Channel blocks written.
    pub(super) fn out_blocks(&self) -> usize {
        match self {
            Op::Dense(layer) => layer.out_blocks(),
            Op::Depthwise(layer) => layer.blocks(),
            Op::AddUpsampled => 0,
        }
    }
}

/// One step: `op` reads `input` and writes (or, for `AddUpsampled`, adds to) `output`.
pub(super) struct Step {
    pub(super) op: Op,
    pub(super) input: At,
    pub(super) output: At,
}

/// The network as the engine runs it.
pub(super) struct Plan {
    pub(super) maps: Vec<MapSpec>,
    pub(super) steps: Vec<Step>,
    /// The first `banded` steps run band by band of the last one's output rows, each
    /// band in one thread's scratch; the last of them writes its map whole.
    pub(super) banded: usize,
    /// Arena buffers.
    pub(super) buffers: usize,
    /// The maps the pass returns.
    pub(super) outputs: Vec<MapId>,
}

impl Plan {
    /// The banded steps' last output: the first map that exists whole.
    pub(super) fn banded_output(&self) -> MapId {
        self.steps[self.banded - 1].output.map
    }
}

/// Builds a [`Plan`] step by step, checking each step as it is added: the channels a
/// layer reads were written before, the sizes chain through its stride, outputs fit
/// their maps; and, once whole, that no buffer is overwritten while a map it holds is
/// still to be read.
pub(super) struct PlanBuilder {
    plan: Plan,
    /// Per map and block: written by an earlier step.
    written: Vec<Vec<bool>>,
}

impl PlanBuilder {
    /// A plan whose only map is the input image.
    pub(super) fn new() -> Self {
        let image = MapSpec {
            scale: 1,
            blocks: 1,
            slot: Slot::Band,
        };
        Self {
            plan: Plan {
                maps: vec![image],
                steps: Vec::new(),
                banded: 0,
                buffers: 0,
                outputs: Vec::new(),
            },
            written: vec![vec![true]],
        }
    }

    /// A new arena buffer.
    pub(super) fn buffer(&mut self) -> Slot {
        self.plan.buffers += 1;
        Slot::Buffer(self.plan.buffers - 1)
    }

    /// A new map of `blocks` channel blocks, the size of map `like`, for steps to
    /// write into ([`PlanBuilder::write`]).
    pub(super) fn map_like(&mut self, like: MapId, blocks: usize, slot: Slot) -> MapId {
        let scale = self.plan.maps[like].scale;
        self.plan.maps.push(MapSpec {
            scale,
            blocks,
            slot,
        });
        self.written.push(vec![false; blocks]);
        self.plan.maps.len() - 1
    }

    /// `op` over `input` into a new map of its own in `slot`.
    pub(super) fn then(&mut self, op: Op, input: At, slot: Slot) -> Result<MapId, DetectError> {
        let stride = op.stride();
        if stride == 0 {
            return Err(model_error("upsampling needs a map to add to".into()));
        }
        let scale = self.plan.maps[input.map].scale * stride;
        self.plan.maps.push(MapSpec {
            scale,
            blocks: op.out_blocks(),
            slot,
        });
        self.written.push(vec![false; op.out_blocks()]);
        let map = self.plan.maps.len() - 1;
        self.write(op, input, At::map(map))?;
        Ok(map)
    }

    /// `op` over `input` into `output`'s blocks (a map made by `map_like` or `then`).
    pub(super) fn write(&mut self, op: Op, input: At, output: At) -> Result<(), DetectError> {
        let step = self.plan.steps.len();
        let fail = |what: String| Err(model_error(format!("plan step {step}: {what}")));
        let (in_map, out_map) = (self.plan.maps[input.map], self.plan.maps[output.map]);
        let (in_blocks, out_blocks) = match &op {
            Op::Dense(layer) if input.map == IMAGE => {
                if layer.in_channels != 3 {
                    return fail(format!("reads 3 channels as {}", layer.in_channels));
                }
                (1, layer.out_blocks())
            }
            Op::Dense(layer) => (layer.in_channels / LANES, layer.out_blocks()),
            Op::Depthwise(layer) => (layer.blocks(), layer.blocks()),
            Op::AddUpsampled => (out_map.blocks - output.block, out_map.blocks - output.block),
        };
        let reads = input.block..input.block + in_blocks;
        let writes = output.block..output.block + out_blocks;
        if let Op::Dense(layer) = &op {
            if input.map != IMAGE && !layer.in_channels.is_multiple_of(LANES) {
                return fail(format!("{} input channels", layer.in_channels));
            }
        }
        let scale_ok = match op.stride() {
            0 => in_map.scale == 2 * out_map.scale,
            stride => out_map.scale == in_map.scale * stride,
        };
        if !scale_ok {
            return fail(format!("scale {} to {}", in_map.scale, out_map.scale));
        }
        if reads.end > in_map.blocks || !self.written[input.map][reads.clone()].iter().all(|&w| w) {
            return fail(format!(
                "reads blocks {reads:?} of map {}, not all written",
                input.map
            ));
        }
        if writes.end > out_map.blocks || out_map.slot == Slot::Band && output.block != 0 {
            return fail(format!("writes blocks {writes:?} of map {}", output.map));
        }
        if matches!(op, Op::AddUpsampled)
            && !self.written[output.map][writes.clone()].iter().all(|&w| w)
        {
            return fail("adds to blocks never written".into());
        }
        if input.map == output.map && reads.end > writes.start {
            return fail(format!("reads {reads:?} and writes {writes:?} of one map"));
        }
        // Banded steps form a chain from the image; nothing after them reads a band.
        let banding = self.plan.banded == 0;
        if banding && input.map != self.plan.steps.last().map_or(IMAGE, |s| s.output.map) {
            return fail("a banded step reads another step's output".into());
        }
        if banding && matches!(op, Op::AddUpsampled) {
            return fail("upsampling in a band".into());
        }
        if !banding && (in_map.slot == Slot::Band || out_map.slot == Slot::Band) {
            return fail("reads or writes a band after the banded steps".into());
        }
        for written in &mut self.written[output.map][writes] {
            *written = true;
        }
        self.plan.steps.push(Step { op, input, output });
        Ok(())
    }

    /// The steps so far run band by band.
    pub(super) fn end_bands(&mut self) -> Result<(), DetectError> {
        let last = self
            .plan
            .steps
            .last()
            .map(|s| &self.plan.maps[s.output.map]);
        if self.plan.banded != 0 || !matches!(last, Some(m) if m.slot != Slot::Band) {
            return Err(model_error("the banded steps end in a band".into()));
        }
        self.plan.banded = self.plan.steps.len();
        Ok(())
    }

    /// The plan, returning `outputs`, once checked that no step overwrites a buffer
    /// whose map is read later.
    pub(super) fn finish(mut self, outputs: Vec<MapId>) -> Result<Plan, DetectError> {
        let plan = &mut self.plan;
        plan.outputs = outputs;
        let read_from = |map: MapId, step: usize| {
            plan.outputs.contains(&map)
                || plan.steps[step..].iter().any(|s| {
                    s.input.map == map || matches!(s.op, Op::AddUpsampled) && s.output.map == map
                })
        };
        let mut holds: Vec<Option<MapId>> = vec![None; plan.buffers];
        for (i, step) in plan.steps.iter().enumerate() {
            let Slot::Buffer(b) = plan.maps[step.output.map].slot else {
                continue;
            };
            match holds[b] {
                Some(held) if held != step.output.map && read_from(held, i) => {
                    return Err(model_error(format!(
                        "plan step {i} overwrites map {held} before it is read"
                    )));
                }
                _ => holds[b] = Some(step.output.map),
            }
        }
        if plan.banded == 0 {
            return Err(model_error("no banded steps".into()));
        }
        if (plan.outputs.iter()).any(|&map| plan.maps[map].slot == Slot::Band) {
            return Err(model_error("an output lives in a band".into()));
        }
        Ok(self.plan)
    }
}

impl Plan {
    /// The windows of each banded step's input (from the image on) that output rows
    /// `rows` of the last banded step need, given the maps' whole `planes`.
    pub(super) fn band(&self, planes: &[Plane], rows: &Range<usize>) -> Vec<Plane> {
        let mut windows = vec![Plane::default(); self.banded];
        let mut rows = rows.clone();
        for (i, step) in self.steps[..self.banded].iter().enumerate().rev() {
            let window = planes[step.input.map].window(step.op.rows_read(&rows));
            rows = window.interior_rows();
            windows[i] = window;
        }
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::native::kernels::Winograd;

    fn dense(in_channels: usize, out_channels: usize, kernel: usize, stride: usize) -> Op {
        let mut layer = DenseLayer {
            weights: vec![0.0; out_channels * kernel * kernel * in_channels],
            paired: Vec::new(),
            bias: vec![0.0; out_channels],
            slope: vec![1.0; out_channels],
            in_channels,
            kernel,
            stride,
            winograd: None,
        };
        layer.winograd = Winograd::new(&layer.conv());
        Op::Dense(layer)
    }

    /// A stem in a band, then whole maps in two buffers.
    fn started() -> (PlanBuilder, MapId, Slot, Slot) {
        let mut p = PlanBuilder::new();
        let (ping, pong) = (p.buffer(), p.buffer());
        let x = p.then(dense(3, 8, 3, 2), At::map(IMAGE), ping).unwrap();
        p.end_bands().unwrap();
        (p, x, ping, pong)
    }

    #[test]
    fn a_chain_that_fits_is_a_plan() {
        let (mut p, x, _, pong) = started();
        let y = p.then(dense(8, 16, 1, 2), At::map(x), pong).unwrap();
        let plan = p.finish(vec![y]).unwrap();
        assert_eq!((plan.banded, plan.buffers, plan.steps.len()), (1, 2, 2));
        assert_eq!(plan.maps[y].scale, 4);
    }

    #[test]
    fn channels_that_do_not_chain_are_refused() {
        let (mut p, x, _, pong) = started();
        assert!(p.then(dense(16, 8, 1, 1), At::map(x), pong).is_err());
        let (mut p, _, _, pong) = started();
        assert!(p.then(dense(8, 8, 3, 1), At::map(IMAGE), pong).is_err());
    }

    #[test]
    fn blocks_never_written_are_not_read() {
        let (mut p, x, _, pong) = started();
        let module = p.map_like(x, 3, pong);
        p.write(dense(8, 8, 1, 1), At::map(x), At::map(module))
            .unwrap();
        let later = At {
            map: module,
            block: 1,
        };
        assert!(p
            .write(
                dense(8, 8, 1, 1),
                later,
                At {
                    map: module,
                    block: 2
                }
            )
            .is_err());
        // Reading block 0 and writing block 1 of one map is fine; the reverse is not.
        p.write(dense(8, 8, 1, 1), At::map(module), later).unwrap();
        assert!(p.write(dense(8, 8, 1, 1), later, At::map(module)).is_err());
    }

    #[test]
    fn sizes_chain_through_strides_and_upsampling() {
        let (mut p, x, _, pong) = started();
        let coarse = p.then(dense(8, 8, 1, 2), At::map(x), pong).unwrap();
        assert!(p
            .write(Op::AddUpsampled, At::map(x), At::map(coarse))
            .is_err());
        let slot = p.buffer();
        let fine = p.then(dense(8, 8, 1, 1), At::map(x), slot).unwrap();
        p.write(Op::AddUpsampled, At::map(coarse), At::map(fine))
            .unwrap();
        let wrong = p.map_like(coarse, 1, slot);
        assert!(p
            .write(dense(8, 8, 1, 1), At::map(x), At::map(wrong))
            .is_err());
        p.write(dense(8, 8, 1, 2), At::map(x), At::map(wrong))
            .unwrap();
    }

    #[test]
    fn a_buffer_is_not_overwritten_while_its_map_is_to_be_read() {
        let (mut p, x, ping, pong) = started();
        let y = p.then(dense(8, 8, 1, 1), At::map(x), pong).unwrap();
        // Overwrites x (in ping) while the next step still reads it.
        let z = p.then(dense(8, 8, 1, 1), At::map(y), ping).unwrap();
        let w = p.then(dense(8, 8, 1, 1), At::map(x), pong).unwrap();
        assert!(p.finish(vec![z, w]).is_err());
        // Without that late read of x, the same buffers are fine.
        let (mut p, x, ping, pong) = started();
        let y = p.then(dense(8, 8, 1, 1), At::map(x), pong).unwrap();
        let z = p.then(dense(8, 8, 1, 1), At::map(y), ping).unwrap();
        assert!(p.finish(vec![z]).is_ok());
    }

    #[test]
    fn bands_come_first_and_end_in_a_whole_map() {
        let mut p = PlanBuilder::new();
        let x = p
            .then(dense(3, 8, 3, 2), At::map(IMAGE), Slot::Band)
            .unwrap();
        assert!(p.end_bands().is_err());
        let slot = p.buffer();
        let y = p.then(dense(8, 8, 1, 1), At::map(x), slot).unwrap();
        p.end_bands().unwrap();
        assert!(p.then(dense(8, 8, 1, 1), At::map(x), slot).is_err());
        assert!(p.then(dense(8, 8, 1, 1), At::map(y), Slot::Band).is_err());
    }
}
