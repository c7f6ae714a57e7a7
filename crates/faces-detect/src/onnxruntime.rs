//! The optional ONNX Runtime engine: the same model, run by the `libonnxruntime`
//! shared library found at `ORT_DYLIB_PATH` (for example the one inside the
//! `onnxruntime` PyPI wheel). Nothing is downloaded; the pure-Rust engine stays the default.

use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use crate::retinaface::model_onnx;
use crate::DetectError;

fn error(e: impl std::fmt::Display) -> DetectError {
    DetectError::Inference(format!("onnxruntime: {e}"))
}

/// One process-wide environment, loaded on first use.
fn environment() -> Result<&'static Environment, DetectError> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let library = std::env::var_os("ORT_DYLIB_PATH").ok_or(
                "set ORT_DYLIB_PATH to libonnxruntime.so (pip install onnxruntime ships one)",
            )?;
            ort::init_from(library)
                .map_err(|e| e.to_string())?
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(error)
}

pub(crate) struct OrtNetwork {
    /// `run` needs `&mut`: one inference at a time per detector (each worker has its own).
    session: Mutex<Session>,
    /// Names of the box, score and landmark outputs.
    outputs: [String; 3],
}

impl OrtNetwork {
    pub(crate) fn load(threads: Option<usize>) -> Result<Self, DetectError> {
        let mut builder = Session::builder(environment()?).map_err(error)?;
        if let Some(n) = threads {
            builder = builder.with_intra_threads(n.max(1)).map_err(error)?;
        }
        let mut session = builder.commit_from_memory(model_onnx()).map_err(error)?;
        // Identify outputs by their last dimension, as for the other engine.
        let probe =
            Tensor::from_array(([1usize, 3, 32, 32], vec![0f32; 3 * 32 * 32])).map_err(error)?;
        let names: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_owned())
            .collect();
        let mut by_width: [Option<String>; 11] = Default::default();
        {
            let values = session.run(ort::inputs![probe]).map_err(error)?;
            for name in &names {
                let (shape, _) = values[name.as_str()]
                    .try_extract_tensor::<f32>()
                    .map_err(error)?;
                if let Some(&last) = shape.last() {
                    if (0..11).contains(&last) {
                        by_width[last as usize] = Some(name.clone());
                    }
                }
            }
        }
        let mut find = |width: usize| {
            by_width[width]
                .take()
                .ok_or_else(|| error(format!("no output of width {width}")))
        };
        let outputs = [find(4)?, find(2)?, find(10)?];
        Ok(Self {
            session: Mutex::new(session),
            outputs,
        })
    }

    pub(crate) fn infer(
        &self,
        input: Vec<f32>,
        height: usize,
        width: usize,
    ) -> Result<[Vec<f32>; 3], DetectError> {
        let tensor = Tensor::from_array(([1usize, 3, height, width], input)).map_err(error)?;
        let mut session = self
            .session
            .lock()
            .map_err(|_| error("session lock poisoned"))?;
        let values = session.run(ort::inputs![tensor]).map_err(error)?;
        let take = |name: &String| -> Result<Vec<f32>, DetectError> {
            Ok(values[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(error)?
                .1
                .to_vec())
        };
        Ok([
            take(&self.outputs[0])?,
            take(&self.outputs[1])?,
            take(&self.outputs[2])?,
        ])
    }
}
