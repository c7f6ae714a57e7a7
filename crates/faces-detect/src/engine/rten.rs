//! The `rten` engine: a general ONNX engine in pure Rust.

use std::sync::Arc;

use image::RgbImage;
use rten::{Model, ModelOptions, NodeId, RunOptions, ThreadPool, Value};

use crate::model::{model_onnx, padded_size, to_tensor};
use crate::DetectError;

/// The `rten` engine: a general ONNX engine in pure Rust that runs on any CPU. Not
/// the default (that is the native engine); the detector runs it where the native
/// engine cannot (no AVX2/FMA), and tests hold the native engine to it. Every
/// inference runs on one thread pool (`pool`, else rten's global one), however many
/// threads call at once: its threads are all the detector computes on.
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
            .load_static_slice(model_onnx())
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

impl super::network::Network for RtenNetwork {
    fn infer(&self, image: &RgbImage) -> Result<[Vec<f32>; 3], DetectError> {
        let (padded_w, padded_h) = padded_size(image);
        RtenNetwork::infer(
            self,
            to_tensor(image, padded_w, padded_h),
            padded_h,
            padded_w,
        )
    }
}
