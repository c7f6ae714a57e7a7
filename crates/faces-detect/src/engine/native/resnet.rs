//! dlib-style networks on the native engine: the layers of a dlib `dnn` network
//! (dlib's face recognition ResNet is one) run over the engine's kernels. Each
//! convolution is packed with the affine (frozen batch norm) and ReLU after it; the
//! residual additions, pools and the last fully connected layer are plain loops over
//! the channel-blocked maps (a small share of the work).

use super::kernels::{dense, paired_weights, rows_of, Dense, Isa, IsaKind, Plane, LANES};

/// One of dlib's layers, in the order the network runs them (input first).
#[derive(Debug, Clone)]
pub(crate) enum Layer {
    /// Cross-correlation; `weights` `[out][in][ky][kx]`.
    Conv {
        out: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        weights: Vec<f32>,
        bias: Vec<f32>,
    },
    /// Per channel `gamma * x + beta` (batch normalisation, frozen).
    Affine {
        gamma: Vec<f32>,
        beta: Vec<f32>,
    },
    Relu,
    /// No padding, as in dlib's strided pools.
    MaxPool {
        kernel: usize,
        stride: usize,
    },
    /// No padding; `kernel` 0: the average over the whole map.
    AvgPool {
        kernel: usize,
        stride: usize,
    },
    /// Remembers the current output under a tag.
    Tag(u8),
    /// Continues from the output remembered under a tag.
    Skip(u8),
    /// Adds the output remembered under a tag; where sizes differ, the missing
    /// channels and pixels count as zero (dlib's `add_prev`).
    AddPrev(u8),
    /// Fully connected, no bias; `weights` `[in][out]`.
    Fc {
        out: usize,
        weights: Vec<f32>,
    },
}

/// A network's description: input normalisation and layers.
#[derive(Debug, Clone)]
pub(crate) struct Description {
    /// Subtracted from R, G, B before dividing by 256 (dlib's `input_rgb_image`).
    pub(crate) mean: [f32; 3],
    /// The input's side in pixels.
    pub(crate) size: usize,
    pub(crate) layers: Vec<Layer>,
}

/// A convolution packed for the dense kernel, its affine and ReLU folded in.
struct PackedConv {
    weights: Vec<f32>,
    paired: Vec<f32>,
    bias: Vec<f32>,
    slope: Vec<f32>,
    in_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl PackedConv {
    fn dense(&self) -> Dense<'_> {
        Dense {
            weights: &self.weights,
            paired: &self.paired,
            bias: &self.bias,
            slope: &self.slope,
            in_channels: self.in_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
        }
    }
}

enum Op {
    /// The first convolution, whatever its kernel: the input gathered into
    /// `kernel * kernel * 3` channels per output pixel, then a 1x1 convolution.
    Stem {
        conv: PackedConv,
        kernel: usize,
        stride: usize,
        out_size: usize,
    },
    Conv(PackedConv),
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
    Add {
        tag: u8,
        relu: bool,
    },
    Fc {
        out: usize,
        weights: Vec<f32>,
    },
}

/// A feature map: `channels` in blocks of [`LANES`], each a bordered plane.
#[derive(Clone)]
struct Map {
    data: Vec<f32>,
    plane: Plane,
    channels: usize,
}

impl Map {
    fn zeros(height: usize, width: usize, channels: usize) -> Map {
        let plane = Plane::blocked(height, width);
        Map {
            data: vec![0.0; channels.div_ceil(LANES) * plane.len()],
            plane,
            channels,
        }
    }
    fn at(&self, c: usize, y: usize, x: usize) -> usize {
        self.plane.at(c / LANES, y, x) + c % LANES
    }
}

/// A dlib network ready to run.
pub(crate) struct DlibNetwork {
    isa: Isa,
    mean: [f32; 3],
    size: usize,
    ops: Vec<Op>,
    outputs: usize,
}

impl DlibNetwork {
    /// Packs `description` for the kernels of `isa`. Panics on a layer order the
    /// engine does not run (an affine not after a convolution): descriptions come
    /// from checked model files.
    pub(crate) fn new(isa: Isa, description: &Description) -> DlibNetwork {
        let mut ops = Vec::new();
        let mut channels = 3;
        let mut size = description.size;
        let mut tags: [(usize, usize); 3] = [(0, 0); 3];
        let mut outputs = 0;
        let wide = isa.kind() == IsaKind::Avx512;
        let mut layers = description.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            match layer {
                Layer::Conv {
                    out,
                    kernel,
                    stride,
                    padding,
                    weights,
                    bias,
                } => {
                    let (mut scale, mut shift) = (vec![1.0; *out], vec![0.0; *out]);
                    if let Some(Layer::Affine { gamma, beta }) = layers.peek() {
                        (scale, shift) = (gamma.clone(), beta.clone());
                        layers.next();
                    }
                    let relu = matches!(layers.peek(), Some(Layer::Relu));
                    if relu {
                        layers.next();
                    }
                    let first = ops.is_empty();
                    let out_size = (size + 2 * padding - kernel) / stride + 1;
                    let conv = pack(
                        weights, bias, &scale, &shift, channels, *kernel, relu, first, wide,
                    );
                    ops.push(if first {
                        Op::Stem {
                            conv: PackedConv {
                                stride: 1,
                                padding: 0,
                                kernel: 1,
                                ..conv
                            },
                            kernel: *kernel,
                            stride: *stride,
                            out_size,
                        }
                    } else {
                        Op::Conv(PackedConv {
                            stride: *stride,
                            padding: *padding,
                            ..conv
                        })
                    });
                    channels = *out;
                    size = out_size;
                }
                Layer::Affine { .. } => panic!("an affine layer must follow a convolution"),
                Layer::Relu => panic!("a ReLU must follow a convolution or an addition"),
                Layer::MaxPool { kernel, stride } => {
                    ops.push(Op::MaxPool {
                        kernel: *kernel,
                        stride: *stride,
                    });
                    size = (size - kernel) / stride + 1;
                }
                Layer::AvgPool { kernel, stride } => {
                    ops.push(Op::AvgPool {
                        kernel: *kernel,
                        stride: *stride,
                    });
                    size = if *kernel == 0 {
                        1
                    } else {
                        (size - kernel) / stride + 1
                    };
                }
                Layer::Tag(t) => {
                    tags[*t as usize] = (channels, size);
                    ops.push(Op::Tag(*t));
                }
                Layer::Skip(t) => {
                    (channels, size) = tags[*t as usize];
                    ops.push(Op::Skip(*t));
                }
                Layer::AddPrev(t) => {
                    let relu = matches!(layers.peek(), Some(Layer::Relu));
                    if relu {
                        layers.next();
                    }
                    let (c, s) = tags[*t as usize];
                    (channels, size) = (channels.max(c), size.max(s));
                    ops.push(Op::Add { tag: *t, relu });
                }
                Layer::Fc { out, weights } => {
                    ops.push(Op::Fc {
                        out: *out,
                        weights: weights.clone(),
                    });
                    outputs = *out;
                }
            }
        }
        DlibNetwork {
            isa,
            mean: description.mean,
            size: description.size,
            ops,
            outputs,
        }
    }

    /// The network's outputs for one `size` x `size` RGB image (bytes, row by row).
    pub(crate) fn forward(&self, rgb: &[u8]) -> Vec<f32> {
        assert_eq!(rgb.len(), self.size * self.size * 3);
        let mut map = Map::zeros(0, 0, 0);
        let mut tags: [Option<Map>; 3] = [None, None, None];
        let mut result = Vec::new();
        for op in &self.ops {
            map = match op {
                Op::Stem {
                    conv,
                    kernel,
                    stride,
                    out_size,
                } => {
                    let gathered = self.gather(rgb, *kernel, *stride, *out_size);
                    self.conv(conv, &gathered)
                }
                Op::Conv(conv) => self.conv(conv, &map),
                Op::MaxPool { kernel, stride } => pool(&map, *kernel, *stride, true),
                Op::AvgPool { kernel, stride } => pool(&map, *kernel, *stride, false),
                Op::Tag(t) => {
                    tags[*t as usize] = Some(map.clone());
                    map
                }
                Op::Skip(t) => tags[*t as usize].clone().expect("skip to a tag set before"),
                Op::Add { tag, relu } => add(
                    &map,
                    tags[*tag as usize].as_ref().expect("tag set before"),
                    *relu,
                ),
                Op::Fc { out, weights } => {
                    let inputs = flatten(&map);
                    result = vec![0f32; *out];
                    for (i, x) in inputs.iter().enumerate() {
                        for (r, w) in result.iter_mut().zip(&weights[i * out..][..*out]) {
                            *r += x * w;
                        }
                    }
                    map
                }
            };
        }
        debug_assert_eq!(result.len(), self.outputs);
        result
    }

    /// The input normalised and gathered for the first convolution: output pixel
    /// (y, x) holds, as channel `(c * kernel + ky) * kernel + kx`, input pixel
    /// `(y * stride + ky, x * stride + kx)` of colour c (no padding).
    fn gather(&self, rgb: &[u8], kernel: usize, stride: usize, out_size: usize) -> Map {
        let mut map = Map::zeros(out_size, out_size, 3 * kernel * kernel);
        let norm: Vec<[f32; 3]> = rgb
            .chunks_exact(3)
            .map(|p| std::array::from_fn(|c| (f32::from(p[c]) - self.mean[c]) / 256.0))
            .collect();
        for y in 0..out_size {
            for x in 0..out_size {
                for ky in 0..kernel {
                    for kx in 0..kernel {
                        let pixel = norm[(y * stride + ky) * self.size + x * stride + kx];
                        for (c, v) in pixel.into_iter().enumerate() {
                            let at = map.at((c * kernel + ky) * kernel + kx, y, x);
                            map.data[at] = v;
                        }
                    }
                }
            }
        }
        map
    }

    fn conv(&self, conv: &PackedConv, input: &Map) -> Map {
        let dense_conv = conv.dense();
        let plane = dense_conv.out_plane(input.plane);
        let mut out = Map::zeros(plane.height, plane.width, conv.bias.len());
        rows_of(&mut out.data, plane, plane.interior_rows(), |o| {
            dense(self.isa, &dense_conv, &input.data, input.plane, o, 0)
        });
        out
    }
}

/// `weights` (`[out][in][ky][kx]`) times `scale`, `bias * scale + shift`, packed
/// as the dense kernel reads them (`[out block][tap][in][LANES]`); `as_1x1`: all
/// taps as input channels of one tap (the stem's gathered input); `wide`: with the
/// AVX-512 tiles' paired copy.
#[allow(clippy::too_many_arguments)]
fn pack(
    weights: &[f32],
    bias: &[f32],
    scale: &[f32],
    shift: &[f32],
    in_channels: usize,
    kernel: usize,
    relu: bool,
    as_1x1: bool,
    wide: bool,
) -> PackedConv {
    let out = bias.len();
    let out_padded = out.div_ceil(LANES) * LANES;
    let taps = kernel * kernel;
    let mut packed = vec![0f32; out_padded * taps * in_channels];
    for o in 0..out {
        for i in 0..in_channels {
            for tap in 0..taps {
                let w = weights[(o * in_channels + i) * taps + tap] * scale[o];
                let at = if as_1x1 {
                    // One tap; input channel (i * taps + tap), as `gather` lays them out.
                    ((o / LANES) * in_channels * taps + i * taps + tap) * LANES + o % LANES
                } else {
                    (((o / LANES) * taps + tap) * in_channels + i) * LANES + o % LANES
                };
                packed[at] = w;
            }
        }
    }
    let mut folded = vec![0f32; out_padded];
    for o in 0..out {
        folded[o] = bias[o] * scale[o] + shift[o];
    }
    let out_blocks = out_padded / LANES;
    PackedConv {
        // Only the AVX-512 tiles read the paired copy: elsewhere it would only take memory.
        paired: if wide {
            paired_weights(&packed, out_blocks)
        } else {
            Vec::new()
        },
        weights: packed,
        bias: folded,
        slope: vec![if relu { 0.0 } else { 1.0 }; out_padded],
        in_channels: if as_1x1 {
            in_channels * taps
        } else {
            in_channels
        },
        kernel,
        stride: 1,
        padding: 0,
    }
}

/// Max or average pooling without padding; `kernel` 0 averages the whole map.
fn pool(input: &Map, kernel: usize, stride: usize, max: bool) -> Map {
    let (h, w) = (input.plane.height, input.plane.width);
    let (kh, kw, oh, ow) = if kernel == 0 {
        (h, w, 1, 1)
    } else {
        (
            kernel,
            kernel,
            (h - kernel) / stride + 1,
            (w - kernel) / stride + 1,
        )
    };
    let mut out = Map::zeros(oh, ow, input.channels);
    let count = (kh * kw) as f32;
    for c in 0..input.channels {
        for y in 0..oh {
            for x in 0..ow {
                let mut acc = if max { f32::NEG_INFINITY } else { 0.0 };
                for ky in 0..kh {
                    for kx in 0..kw {
                        let v = input.data[input.at(c, y * stride + ky, x * stride + kx)];
                        acc = if max { acc.max(v) } else { acc + v };
                    }
                }
                let at = out.at(c, y, x);
                out.data[at] = if max { acc } else { acc / count };
            }
        }
    }
    out
}

/// `a + b` over the larger of each size, missing values zero; then ReLU if asked.
fn add(a: &Map, b: &Map, relu: bool) -> Map {
    let (h, w) = (
        a.plane.height.max(b.plane.height),
        a.plane.width.max(b.plane.width),
    );
    let channels = a.channels.max(b.channels);
    let mut out = Map::zeros(h, w, channels);
    let value = |m: &Map, c: usize, y: usize, x: usize| {
        if c < m.channels && y < m.plane.height && x < m.plane.width {
            m.data[m.at(c, y, x)]
        } else {
            0.0
        }
    };
    for c in 0..channels {
        for y in 0..h {
            for x in 0..w {
                let v = value(a, c, y, x) + value(b, c, y, x);
                let at = out.at(c, y, x);
                out.data[at] = if relu { v.max(0.0) } else { v };
            }
        }
    }
    out
}

/// The map's values in dlib's order: channel, row, column.
fn flatten(map: &Map) -> Vec<f32> {
    let mut v = Vec::with_capacity(map.channels * map.plane.height * map.plane.width);
    for c in 0..map.channels {
        for y in 0..map.plane.height {
            for x in 0..map.plane.width {
                v.push(map.data[map.at(c, y, x)]);
            }
        }
    }
    v
}

/// The plain reference: dlib's layers as dlib defines them, one at a time, over
/// NCHW arrays (no packing, folding, Winograd or channel blocks).
#[cfg(test)]
pub(crate) fn reference_forward(description: &Description, rgb: &[u8]) -> Vec<f32> {
    #[derive(Clone)]
    struct T {
        c: usize,
        h: usize,
        w: usize,
        v: Vec<f32>,
    }
    let n = description.size;
    let mut x = T {
        c: 3,
        h: n,
        w: n,
        v: vec![0.0; 3 * n * n],
    };
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        for (c, v) in p.iter().enumerate() {
            x.v[c * n * n + i] = (f32::from(*v) - description.mean[c]) / 256.0;
        }
    }
    let mut tags: Vec<Option<T>> = vec![None; 3];
    for layer in &description.layers {
        x = match layer {
            Layer::Conv {
                out,
                kernel,
                stride,
                padding,
                weights,
                bias,
            } => {
                let (k, s, p) = (*kernel, *stride, *padding);
                let (h, w) = ((x.h + 2 * p - k) / s + 1, (x.w + 2 * p - k) / s + 1);
                let mut v = vec![0f32; out * h * w];
                for o in 0..*out {
                    for y in 0..h {
                        for xx in 0..w {
                            let mut sum = bias[o];
                            for c in 0..x.c {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let (iy, ix) = (
                                            (y * s + ky) as isize - p as isize,
                                            (xx * s + kx) as isize - p as isize,
                                        );
                                        if iy >= 0
                                            && ix >= 0
                                            && (iy as usize) < x.h
                                            && (ix as usize) < x.w
                                        {
                                            sum += weights[((o * x.c + c) * k + ky) * k + kx]
                                                * x.v[(c * x.h + iy as usize) * x.w + ix as usize];
                                        }
                                    }
                                }
                            }
                            v[(o * h + y) * w + xx] = sum;
                        }
                    }
                }
                T { c: *out, h, w, v }
            }
            Layer::Affine { gamma, beta } => {
                let plane = x.h * x.w;
                let v =
                    x.v.iter()
                        .enumerate()
                        .map(|(i, v)| gamma[i / plane] * v + beta[i / plane])
                        .collect();
                T { v, ..x }
            }
            Layer::Relu => T {
                v: x.v.iter().map(|v| v.max(0.0)).collect(),
                ..x
            },
            Layer::MaxPool { kernel, stride } | Layer::AvgPool { kernel, stride } => {
                let max = matches!(layer, Layer::MaxPool { .. });
                let (k, s) = (*kernel, *stride);
                let (kh, kw, h, w) = if k == 0 {
                    (x.h, x.w, 1, 1)
                } else {
                    (k, k, (x.h - k) / s + 1, (x.w - k) / s + 1)
                };
                let mut v = Vec::with_capacity(x.c * h * w);
                for c in 0..x.c {
                    for y in 0..h {
                        for xx in 0..w {
                            let window = (0..kh).flat_map(|ky| (0..kw).map(move |kx| (ky, kx)));
                            let values = window
                                .map(|(ky, kx)| x.v[(c * x.h + y * s + ky) * x.w + xx * s + kx]);
                            v.push(if max {
                                values.fold(f32::NEG_INFINITY, f32::max)
                            } else {
                                values.sum::<f32>() / (kh * kw) as f32
                            });
                        }
                    }
                }
                T { c: x.c, h, w, v }
            }
            Layer::Tag(t) => {
                tags[*t as usize] = Some(x.clone());
                x
            }
            Layer::Skip(t) => tags[*t as usize].clone().unwrap(),
            Layer::AddPrev(t) => {
                let y = tags[*t as usize].as_ref().unwrap();
                let (c, h, w) = (x.c.max(y.c), x.h.max(y.h), x.w.max(y.w));
                let get = |m: &T, ci: usize, yi: usize, xi: usize| {
                    if ci < m.c && yi < m.h && xi < m.w {
                        m.v[(ci * m.h + yi) * m.w + xi]
                    } else {
                        0.0
                    }
                };
                let mut v = Vec::with_capacity(c * h * w);
                for ci in 0..c {
                    for yi in 0..h {
                        for xi in 0..w {
                            v.push(get(&x, ci, yi, xi) + get(y, ci, yi, xi));
                        }
                    }
                }
                T { c, h, w, v }
            }
            Layer::Fc { out, weights } => {
                let v = (0..*out)
                    .map(|o| {
                        x.v.iter()
                            .enumerate()
                            .map(|(i, xi)| xi * weights[i * out + o])
                            .sum()
                    })
                    .collect();
                T {
                    c: *out,
                    h: 1,
                    w: 1,
                    v,
                }
            }
        };
    }
    x.v
}
