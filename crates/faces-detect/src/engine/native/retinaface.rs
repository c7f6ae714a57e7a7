//! RetinaFace (MobileNet-0.25 backbone) as a [`Plan`]: its layers read from the ONNX
//! graph by the exporter's node names, in the order they run, with the buffer each
//! map lives in. See the module docs of `native` for the graph.

use super::kernels::LANES;
use super::layers::{conv_name, conv_node, dense_layer, depthwise_layer, model_error};
use super::onnx::Graph;
use super::plan::{At, MapId, Op, Plan, PlanBuilder, Slot, IMAGE};
use crate::DetectError;

/// Channels of the fused head: class (2 anchors x 2), boxes (2 x 4), landmarks (2 x 10).
pub(super) const HEAD_CHANNELS: usize = 32;

/// Backbone blocks whose outputs are the stride-8, -16 and -32 feature maps.
const LEVEL_ENDS: [usize; 3] = [4, 10, 12];

/// The backbone's depthwise-separable blocks: (stage, index) in the exporter's names.
fn backbone_blocks() -> impl Iterator<Item = (usize, usize)> {
    [(1, 1..=5), (2, 0..=5), (3, 0..=1)]
        .into_iter()
        .flat_map(|(stage, range)| range.map(move |i| (stage, i)))
}

/// The network's plan; its outputs are the three levels' fused head maps.
///
/// Buffers: `ping` and `pong` take turns through the backbone (depthwise outputs in
/// pong, pointwise in ping); each level's output has its own. Once the backbone is
/// done they are idle, and level 0 (the largest) keeps its lateral, merged and SSH maps
/// in them.
pub(super) fn plan(graph: &Graph) -> Result<Plan, DetectError> {
    let mut p = PlanBuilder::new();
    let (ping, pong) = (p.buffer(), p.buffer());

    // Backbone. The first layers (stem, block 0, block 1's depthwise) run in bands.
    let stem = dense_layer(graph, &[&conv_name("/fx/stage1/stage1.0/stage1.0.0")], 3)?;
    let mut x = p.then(Op::Dense(stem), At::map(IMAGE), Slot::Band)?;
    let mut levels = Vec::new();
    for (i, (stage, n)) in backbone_blocks().enumerate() {
        let path = format!("/fx/stage{stage}/stage{stage}.{n}/stage{stage}.{n}");
        let dw = depthwise_layer(graph, &conv_name(&format!("{path}.0/stage{stage}.{n}.0.0")))?;
        let pw = dense_layer(
            graph,
            &[&conv_name(&format!("{path}.1/stage{stage}.{n}.1.0"))],
            1,
        )?;
        x = p.then(
            Op::Depthwise(dw),
            At::map(x),
            if i == 0 { Slot::Band } else { pong },
        )?;
        if i == 1 {
            p.end_bands()?;
        }
        let slot = match i {
            0 => Slot::Band,
            _ if LEVEL_ENDS.contains(&i) => p.buffer(),
            _ => ping,
        };
        x = p.then(Op::Dense(pw), At::map(x), slot)?;
        if LEVEL_ENDS.contains(&i) {
            levels.push(x);
        }
    }

    // FPN: a lateral per level, then top-down: upsample, add, merge.
    let conv = |name: String, kernel| dense_layer(graph, &[&conv_name(&name)], kernel);
    let mut lateral = Vec::new();
    for (n, &level) in levels.iter().enumerate() {
        let layer = conv(format!("/fpn/output{}/output{}.0", n + 1, n + 1), 1)?;
        let slot = if n == 0 { ping } else { p.buffer() };
        lateral.push(p.then(Op::Dense(layer), At::map(level), slot)?);
    }
    p.write(Op::AddUpsampled, At::map(lateral[2]), At::map(lateral[1]))?;
    let merge2 = conv("/fpn/merge2/merge2.0".into(), 3)?;
    let slot = p.buffer();
    let merged1 = p.then(Op::Dense(merge2), At::map(lateral[1]), slot)?;
    p.write(Op::AddUpsampled, At::map(merged1), At::map(lateral[0]))?;
    let merge1 = conv("/fpn/merge1/merge1.0".into(), 3)?;
    let merged0 = p.then(Op::Dense(merge1), At::map(lateral[0]), pong)?;

    // SSH and heads per level; level 2's SSH reads the stride-32 lateral directly.
    let mut heads = Vec::new();
    for (n, source) in [merged0, merged1, lateral[2]].into_iter().enumerate() {
        let slot = if n == 0 { ping } else { p.buffer() };
        heads.push(ssh_and_head(graph, &mut p, n, source, slot)?);
    }
    p.finish(heads)
}

/// Level `n`'s SSH context module and head, reading `source`.
///
/// The module's map (in `slot`) holds, in order, conv5X5_1 (read by conv5X5_2 and
/// conv7X7_2), then the concat the head reads: conv3X3, conv5X5_2 and conv7x7_3, each
/// written into its own channel blocks, so the concat costs nothing. conv5X5_1 and
/// conv3X3 both read the FPN map: they run as one layer, sharing its reading (and its
/// Winograd transform).
fn ssh_and_head(
    graph: &Graph,
    p: &mut PlanBuilder,
    n: usize,
    source: MapId,
    slot: Slot,
) -> Result<MapId, DetectError> {
    let level = n + 1;
    let name = |name: &str| conv_name(&format!("/ssh{level}/{name}/{name}.0"));
    // The exporter wrote conv5X5_1 twice (once per branch), with the same weights; it
    // is computed once here.
    let branch = conv_node(graph, &name("conv5X5_1"), 3, false)?;
    let again = conv_node(
        graph,
        &conv_name(&format!("/ssh{level}/conv5X5_1/conv5X5_1.0_1")),
        3,
        false,
    )?;
    if branch.0.data != again.0.data || branch.1.data != again.1.data {
        return Err(model_error(format!("ssh{level}: the two conv5X5_1 differ")));
    }
    let first = dense_layer(graph, &[&name("conv5X5_1"), &name("conv3X3")], 3)?;
    let conv5_2 = dense_layer(graph, &[&name("conv5X5_2")], 3)?;
    let conv7_2 = dense_layer(graph, &[&name("conv7X7_2")], 3)?;
    let conv7_3 = dense_layer(graph, &[&name("conv7x7_3")], 3)?;
    let names = ["class_head", "bbox_head", "landmark_head"]
        .map(|head| conv_name(&format!("/{head}/{head}.{n}")));
    let head = dense_layer(graph, &names.each_ref().map(String::as_str), 1)?;
    if head.bias.len() != HEAD_CHANNELS {
        return Err(model_error(format!(
            "head {n}: {} channels",
            head.bias.len()
        )));
    }

    // The concat starts on a block boundary after conv5X5_1.
    let branch_channels = branch.0.dims[0];
    if !branch_channels.is_multiple_of(LANES) {
        return Err(model_error(format!(
            "ssh{level}: conv5X5_1 has {branch_channels} channels"
        )));
    }
    let branch_blocks = branch_channels / LANES;
    let conv5_at = first.out_blocks();
    let conv7_at = conv5_at + conv5_2.out_blocks();
    let blocks = conv7_at + conv7_3.out_blocks();
    let module = p.map_like(source, blocks, slot);
    let branch = At::map(module);
    p.write(Op::Dense(first), At::map(source), branch)?;
    p.write(
        Op::Dense(conv5_2),
        branch,
        At {
            map: module,
            block: conv5_at,
        },
    )?;
    let t2 = {
        let slot = p.buffer();
        p.then(Op::Dense(conv7_2), branch, slot)?
    };
    p.write(
        Op::Dense(conv7_3),
        At::map(t2),
        At {
            map: module,
            block: conv7_at,
        },
    )?;
    let concat = At {
        map: module,
        block: branch_blocks,
    };
    let slot = p.buffer();
    p.then(Op::Dense(head), concat, slot)
}
