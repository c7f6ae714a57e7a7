//! The network's layers as the engine holds them: each convolution's weights,
//! packed for the kernels, found in the ONNX graph with its activation.

use super::kernels;
use super::kernels::{Dense, Depthwise, Winograd, LANES};
use super::onnx::{self, Graph};
use crate::DetectError;

/// A dense convolution's packed weights (see [`Dense`]).
pub(super) struct DenseLayer {
    pub(super) weights: Vec<f32>,
    /// `weights` paired for the AVX-512 tiles.
    pub(super) paired: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) slope: Vec<f32>,
    pub(super) in_channels: usize,
    pub(super) kernel: usize,
    pub(super) stride: usize,
    /// The weights transformed for Winograd, for 3x3 stride-1 layers over whole
    /// channel blocks (the FPN merges and the SSH convolutions).
    pub(super) winograd: Option<Winograd>,
}

impl DenseLayer {
    pub(super) fn conv(&self) -> Dense<'_> {
        Dense {
            weights: &self.weights,
            paired: &self.paired,
            bias: &self.bias,
            slope: &self.slope,
            in_channels: self.in_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.kernel / 2,
        }
    }
    pub(super) fn out_blocks(&self) -> usize {
        self.bias.len() / LANES
    }
}

/// A depthwise convolution's packed weights (see [`Depthwise`]).
pub(super) struct DepthwiseLayer {
    pub(super) weights: Vec<f32>,
    pub(super) bias: Vec<f32>,
    pub(super) slope: Vec<f32>,
    pub(super) stride: usize,
}

impl DepthwiseLayer {
    pub(super) fn blocks(&self) -> usize {
        self.bias.len() / LANES
    }
    pub(super) fn conv(&self) -> Depthwise<'_> {
        Depthwise {
            weights: &self.weights,
            bias: &self.bias,
            slope: &self.slope,
            stride: self.stride,
        }
    }
}

/// Name of the convolution output of ONNX node `path` as the exporter wrote it.
pub(super) fn conv_name(path: &str) -> String {
    format!("{path}/Conv_output_0")
}

/// The activation slope after convolution output `name`: the LeakyReLU's alpha,
/// 0 for a ReLU (directly, or after the SSH concat), 1 for none.
pub(super) fn slope_after(graph: &Graph, name: &str) -> f32 {
    for node in graph.consumers(name) {
        match node.op.as_str() {
            "LeakyRelu" => return node.floats.get("alpha").copied().unwrap_or(0.01),
            "Relu" => return 0.0,
            "Concat" => {
                let out = &node.outputs[0];
                if graph.consumers(out).any(|n| n.op == "Relu") {
                    return 0.0;
                }
            }
            _ => {}
        }
    }
    1.0
}

pub(super) fn model_error(what: String) -> DetectError {
    DetectError::Inference(format!("native engine: {what}"))
}

/// The Conv node producing `output`, its weight and bias, checked against what the
/// network expects: `kernel`x`kernel`, `group` (1 or the channel count), `stride`.
pub(super) fn conv_node<'a>(
    graph: &'a Graph,
    output: &str,
    kernel: usize,
    depthwise: bool,
) -> Result<(&'a onnx::Tensor, &'a onnx::Tensor, usize), DetectError> {
    let node = graph
        .producer(output)
        .filter(|n| n.op == "Conv")
        .ok_or_else(|| model_error(format!("no convolution {output}")))?;
    let int = |name: &str| node.ints.get(name).cloned().unwrap_or_default();
    let weight = graph.weight(&node.inputs[1])?;
    let bias = graph.weight(node.inputs.get(2).map(String::as_str).unwrap_or(""))?;
    let strides = int("strides");
    let stride = strides.first().copied().unwrap_or(1) as usize;
    let group = int("group").first().copied().unwrap_or(1) as usize;
    let pad = int("pads").first().copied().unwrap_or(0) as usize;
    let [out_c, in_c, kh, kw] = weight.dims[..] else {
        return Err(model_error(format!("{output}: weight is not 4-D")));
    };
    let expected_group = if depthwise { out_c } else { 1 };
    let ok = kh == kernel
        && kw == kernel
        && group == expected_group
        && (!depthwise || in_c == 1)
        && strides.iter().all(|&s| s as usize == stride)
        && pad == kernel / 2
        && int("pads").iter().all(|&p| p as usize == pad)
        && int("dilations").iter().all(|&d| d == 1)
        && bias.dims == [out_c];
    if !ok {
        return Err(model_error(format!(
            "{output}: unexpected convolution {:?} group {group} strides {strides:?}",
            weight.dims
        )));
    }
    Ok((weight, bias, stride))
}

/// Packs ONNX `[oc][ic][k][k]` convolutions (concatenated along oc, zero-padded to a
/// whole block) into `[out block][tap][ic][lane]`.
pub(super) fn dense_layer(
    graph: &Graph,
    outputs: &[&str],
    kernel: usize,
) -> Result<DenseLayer, DetectError> {
    let mut parts = Vec::new();
    for &output in outputs {
        let (weight, bias, stride) = conv_node(graph, output, kernel, false)?;
        parts.push((weight, bias, stride, slope_after(graph, output)));
    }
    let in_channels = parts[0].0.dims[1];
    let stride = parts[0].2;
    if parts
        .iter()
        .any(|p| p.0.dims[1] != in_channels || p.2 != stride)
    {
        return Err(model_error(format!("{outputs:?} cannot be fused")));
    }
    let out_channels: usize = parts.iter().map(|p| p.0.dims[0]).sum();
    let blocks = out_channels.div_ceil(LANES);
    let taps = kernel * kernel;
    let mut weights = vec![0f32; blocks * taps * in_channels * LANES];
    let (mut bias, mut slope) = (vec![0f32; blocks * LANES], vec![1f32; blocks * LANES]);
    let mut oc = 0;
    for (w, b, _, s) in parts {
        for local in 0..w.dims[0] {
            for ic in 0..in_channels {
                for tap in 0..taps {
                    weights
                        [(((oc / LANES) * taps + tap) * in_channels + ic) * LANES + oc % LANES] =
                        w.data[(local * in_channels + ic) * taps + tap];
                }
            }
            bias[oc] = b.data[local];
            slope[oc] = s;
            oc += 1;
        }
    }
    let mut layer = DenseLayer {
        paired: kernels::paired_weights(&weights, blocks),
        weights,
        bias,
        slope,
        in_channels,
        kernel,
        stride,
        winograd: None,
    };
    layer.winograd = Winograd::new(&layer.conv());
    Ok(layer)
}

pub(super) fn depthwise_layer(graph: &Graph, output: &str) -> Result<DepthwiseLayer, DetectError> {
    let (w, b, stride) = conv_node(graph, output, 3, true)?;
    let channels = w.dims[0];
    if channels % LANES != 0 {
        return Err(model_error(format!("{output}: {channels} channels")));
    }
    let mut weights = vec![0f32; channels * 9];
    for c in 0..channels {
        for tap in 0..9 {
            weights[((c / LANES) * 9 + tap) * LANES + c % LANES] = w.data[c * 9 + tap];
        }
    }
    Ok(DepthwiseLayer {
        weights,
        bias: b.data.clone(),
        slope: vec![slope_after(graph, output); channels],
        stride,
    })
}
