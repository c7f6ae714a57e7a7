//! dlib's face recognition ResNet as its file describes it
//! (`dlib_face_recognition_resnet_model_v1.dat`, the network of dlib's
//! `dnn_face_recognition_ex.cpp`): the layers in the order they run, with their
//! learned parameters, read and checked against that architecture.

use super::dlib_format::{Reader, Result};
use crate::engine::native::resnet::{Description, Layer};

/// What the architecture says a layer is before its parameters are read.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Conv {
        out: usize,
        kernel: usize,
        stride: usize,
    },
    Affine,
    Relu,
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    Tag(u8),
    Skip(u8),
    AddPrev(u8),
    Fc {
        out: usize,
    },
}

/// The architecture in run order: `anet_type` of dlib's example, written out.
fn architecture() -> Vec<Kind> {
    use Kind::*;
    let conv = |out, stride| Conv {
        out,
        kernel: 3,
        stride,
    };
    let residual = |n: usize| {
        vec![
            Tag(1),
            conv(n, 1),
            Affine,
            Relu,
            conv(n, 1),
            Affine,
            AddPrev(1),
            Relu,
        ]
    };
    let residual_down = |n: usize| {
        vec![
            Tag(1),
            conv(n, 2),
            Affine,
            Relu,
            conv(n, 1),
            Affine,
            Tag(2),
            Skip(1),
            AvgPool {
                kernel: 2,
                stride: 2,
            },
            AddPrev(2),
            Relu,
        ]
    };
    let mut k = vec![
        Conv {
            out: 32,
            kernel: 7,
            stride: 2,
        },
        Affine,
        Relu,
        MaxPool {
            kernel: 3,
            stride: 2,
        },
    ];
    for (n, downs, plain) in [
        (32, 0, 3),
        (64, 1, 3),
        (128, 1, 2),
        (256, 1, 2),
        (256, 1, 0),
    ] {
        for _ in 0..downs {
            k.extend(residual_down(n));
        }
        for _ in 0..plain {
            k.extend(residual(n));
        }
    }
    k.push(AvgPool {
        kernel: 0,
        stride: 1,
    });
    k.push(Fc { out: 128 });
    k
}

fn has_details(kind: Kind) -> bool {
    !matches!(kind, Kind::Tag(_) | Kind::Skip(_))
}

/// Reads the file. Serialisation writes the outermost layer first and each
/// layer's subnetwork before its own details, so the file holds every layer's
/// version number from the output inwards, then the input layer, then the
/// layers' details from the input outwards.
pub(super) fn parse(bytes: &[u8]) -> Result<Description> {
    let kinds = architecture();
    let mut r = Reader::new(bytes);
    r.expect_int(1, "loss layer version")?;
    r.expect_tag(&["loss_metric_", "loss_metric_2"])?;
    r.float()?; // margin
    r.float()?; // distance threshold (0.6)
                // Version numbers: 2 (or 1) for a layer with details, 1 for a tag or skip,
                // and 3 (or 2) for the first layer, which holds the input layer.
    let mut versions = vec![0; kinds.len()];
    for (i, &kind) in kinds.iter().enumerate().rev() {
        let version = r.int()?;
        let ok = if i == 0 {
            version == 2 || version == 3
        } else if has_details(kind) {
            version == 1 || version == 2
        } else {
            version == 1
        };
        if !ok {
            return Err(r.error(&format!("version {version} for layer {i} ({kind:?})")));
        }
        versions[i] = version;
    }
    r.expect_tag(&["input_rgb_image_sized"])?;
    let mean = [r.float()?, r.float()?, r.float()?];
    let (rows, cols) = (r.count()?, r.count()?);
    if rows != cols {
        return Err(r.error("input is not square"));
    }
    let mut layers = Vec::with_capacity(kinds.len());
    for (j, &kind) in kinds.iter().enumerate() {
        let layer = read_layer(&mut r, kind)?;
        if has_details(kind) {
            finish(&mut r, j == 0, versions[j])?;
        }
        layers.push(layer);
    }
    if !r.at_end() {
        return Err(r.error("bytes after the network"));
    }
    Ok(Description {
        mean,
        size: rows,
        layers,
    })
}

/// One layer's details and the trained state after them.
fn read_layer(r: &mut Reader, kind: Kind) -> Result<Layer> {
    let layer = match kind {
        Kind::Tag(t) => return Ok(Layer::Tag(t)),
        Kind::Skip(t) => return Ok(Layer::Skip(t)),
        Kind::Conv {
            out,
            kernel,
            stride,
        } => {
            let tag = r.expect_tag(&["con_4", "con_5", "con_6"])?;
            let (_, params) = r.tensor()?;
            r.expect_int(out as i64, "filters")?;
            r.expect_int(kernel as i64, "kernel rows")?;
            r.expect_int(kernel as i64, "kernel columns")?;
            r.expect_int(stride as i64, "stride y")?;
            r.expect_int(stride as i64, "stride x")?;
            let padding = r.count()?;
            r.expect_int(padding as i64, "padding x")?;
            let filters = r.alias_tensor()?;
            let inputs = filters[1];
            if filters != [out, inputs, kernel, kernel] {
                return Err(r.error(&format!("filters {filters:?}")));
            }
            let biases = r.alias_tensor()?;
            for _ in 0..4 {
                r.float()?; // learning rate and weight decay multipliers
            }
            let mut has_bias = biases.iter().product::<usize>() == out;
            if tag != "con_4" {
                has_bias &= r.bool()?;
            }
            if tag == "con_6" && r.bool()? {
                return Err(r.error("fused ReLU convolutions are not supported"));
            }
            let n = out * inputs * kernel * kernel;
            if params.len() != n + if has_bias { out } else { 0 } && params.len() != n + out {
                return Err(r.error("convolution parameters do not match its shape"));
            }
            let bias = if has_bias {
                params[n..n + out].to_vec()
            } else {
                vec![0.0; out]
            };
            let mut weights = params;
            weights.truncate(n);
            Layer::Conv {
                out,
                kernel,
                stride,
                padding,
                weights,
                bias,
            }
        }
        Kind::Affine => {
            let tag = r.expect_tag(&["affine_", "affine_2"])?;
            let (_, params) = r.tensor()?;
            let gamma = r.alias_tensor()?;
            r.alias_tensor()?;
            r.expect_int(0, "affine mode (per channel)")?;
            if tag == "affine_2" && r.bool()? {
                // Disabled: the identity.
                let k = gamma[1];
                return Ok(Layer::Affine {
                    gamma: vec![1.0; k],
                    beta: vec![0.0; k],
                });
            }
            let k = gamma[1];
            if params.len() != 2 * k {
                return Err(r.error("affine parameters do not match its channels"));
            }
            Layer::Affine {
                gamma: params[..k].to_vec(),
                beta: params[k..].to_vec(),
            }
        }
        Kind::Relu => {
            if r.expect_tag(&["relu_", "relu_2"])? == "relu_2" && r.bool()? {
                return Err(r.error("disabled ReLU"));
            }
            Layer::Relu
        }
        Kind::MaxPool { kernel, stride } | Kind::AvgPool { kernel, stride } => {
            let max = matches!(kind, Kind::MaxPool { .. });
            r.expect_tag(&[if max { "max_pool_2" } else { "avg_pool_2" }])?;
            for (want, what) in [
                (kernel, "rows"),
                (kernel, "columns"),
                (stride, "stride y"),
                (stride, "stride x"),
            ] {
                r.expect_int(want as i64, what)?;
            }
            r.expect_int(0, "padding y")?;
            r.expect_int(0, "padding x")?;
            if max {
                Layer::MaxPool { kernel, stride }
            } else {
                Layer::AvgPool { kernel, stride }
            }
        }
        Kind::AddPrev(t) => {
            r.expect_tag(&["add_prev_"])?;
            Layer::AddPrev(t)
        }
        Kind::Fc { out } => {
            let tag = r.expect_tag(&["fc_2", "fc_3"])?;
            r.expect_int(out as i64, "fc outputs")?;
            let inputs = r.count()?;
            let (_, params) = r.tensor()?;
            r.alias_tensor()?;
            r.alias_tensor()?;
            r.expect_int(1, "fc bias mode (no bias)")?;
            for _ in 0..4 {
                r.float()?;
            }
            if tag == "fc_3" {
                r.bool()?;
            }
            if params.len() != inputs * out {
                return Err(r.error("fc parameters do not match its shape"));
            }
            Layer::Fc {
                out,
                weights: params,
            }
        }
    };
    Ok(layer)
}

/// The state dlib writes after each layer's details: three flags, then empty
/// gradient and cache tensors (two in version 1), and for the first layer in
/// version 3 the sample expansion factor.
fn finish(r: &mut Reader, first: bool, version: i64) -> Result<()> {
    for _ in 0..3 {
        r.bool()?;
    }
    let tensors = if first || version == 2 { 3 } else { 2 };
    for _ in 0..tensors {
        r.empty_tensor()?;
    }
    if first && version == 3 {
        r.expect_int(1, "sample expansion factor")?;
    }
    Ok(())
}
