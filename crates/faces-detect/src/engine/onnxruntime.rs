//! The optional ONNX Runtime engine: the same model, run by the `libonnxruntime`
//! shared library found at `ORT_DYLIB_PATH` (for example the one inside the
//! `onnxruntime` PyPI wheel). Nothing is downloaded; the native engine stays the
//! default.

use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;

use image::RgbImage;

use crate::model::{model_onnx, padded_size, to_tensor};
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

/// The network on ONNX Runtime. A session runs one inference at a time (`run`
/// takes `&mut`), and one detector serves every thread that detects at once (all
/// of a service's workers share one), so the sessions are a pool: an inference
/// borrows an idle one, or starts a new one when every session is busy, and gives
/// it back. The pool grows to the most inferences ever run at once (in the
/// service, at most `--max-concurrent-decodes`) and keeps them.
pub(crate) struct OrtNetwork {
    /// Sessions not running an inference now.
    idle: Mutex<Vec<Session>>,
    /// Intra-op threads of each session (`None`: ONNX Runtime's default).
    threads: Option<usize>,
    /// Names of the box, score and landmark outputs.
    outputs: [String; 3],
}

/// A session loaded with the model, `threads` intra-op threads of its own.
fn session(threads: Option<usize>) -> Result<Session, DetectError> {
    let mut builder = Session::builder(environment()?).map_err(error)?;
    if let Some(n) = threads {
        builder = builder.with_intra_threads(n.max(1)).map_err(error)?;
    }
    builder.commit_from_memory(model_onnx()).map_err(error)
}

/// Runs `session` on `tensor`; returns the `outputs`, flattened, in their order.
fn run(
    session: &mut Session,
    outputs: &[String; 3],
    tensor: Tensor<f32>,
) -> Result<[Vec<f32>; 3], DetectError> {
    let values = session.run(ort::inputs![tensor]).map_err(error)?;
    let take = |name: &String| -> Result<Vec<f32>, DetectError> {
        Ok(values[name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(error)?
            .1
            .to_vec())
    };
    Ok([take(&outputs[0])?, take(&outputs[1])?, take(&outputs[2])?])
}

impl OrtNetwork {
    /// Loads one session and identifies the outputs; more sessions are loaded as
    /// inferences run at once.
    pub(crate) fn load(threads: Option<usize>) -> Result<Self, DetectError> {
        let mut session = session(threads)?;
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
            idle: Mutex::new(vec![session]),
            threads,
            outputs,
        })
    }

    /// The idle sessions (a panic while one was lent leaves the rest usable).
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle session, or a new one when all are busy. Give it back with
    /// [`OrtNetwork::give_back`].
    fn lend(&self) -> Result<Session, DetectError> {
        let idle = self.idle().pop();
        match idle {
            Some(session) => Ok(session),
            None => session(self.threads),
        }
    }

    fn give_back(&self, session: Session) {
        self.idle().push(session);
    }

    /// Runs the model on an NCHW tensor; returns boxes, scores and landmarks,
    /// flattened. Several threads may call it at once: each runs on a session of
    /// its own.
    pub(crate) fn infer(
        &self,
        input: Vec<f32>,
        height: usize,
        width: usize,
    ) -> Result<[Vec<f32>; 3], DetectError> {
        let tensor = Tensor::from_array(([1usize, 3, height, width], input)).map_err(error)?;
        let mut session = self.lend()?;
        let result = run(&mut session, &self.outputs, tensor);
        self.give_back(session);
        result
    }
}

impl super::network::Network for OrtNetwork {
    fn infer(&self, image: &RgbImage) -> Result<[Vec<f32>; 3], DetectError> {
        let (padded_w, padded_h) = padded_size(image);
        OrtNetwork::infer(
            self,
            to_tensor(image, padded_w, padded_h),
            padded_h,
            padded_w,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;

    fn input() -> Vec<f32> {
        (0..3 * 64 * 64).map(|i| (i % 251) as f32 - 125.0).collect()
    }

    /// Needs `ORT_DYLIB_PATH`, as `tests/onnxruntime_engine.rs` does.
    fn network() -> OrtNetwork {
        OrtNetwork::load(Some(1)).expect("ORT_DYLIB_PATH must name libonnxruntime")
    }

    #[test]
    fn a_busy_session_is_not_waited_for_and_comes_back() {
        let network = network();
        let first = network.lend().unwrap();
        // The only session is lent: the next caller gets a new one, not a wait.
        let second = network.lend().unwrap();
        assert_eq!(network.idle().len(), 0);
        network.give_back(first);
        network.give_back(second);
        assert_eq!(network.idle().len(), 2);
        network.infer(input(), 64, 64).unwrap();
        assert_eq!(network.idle().len(), 2, "an idle session is reused");
    }

    #[test]
    fn inferences_at_once_agree_with_one_at_a_time() {
        let network = network();
        let alone = network.infer(input(), 64, 64).unwrap();
        let threads = 4;
        let start = Barrier::new(threads);
        std::thread::scope(|scope| {
            let runs: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        network.infer(input(), 64, 64).unwrap()
                    })
                })
                .collect();
            for run in runs {
                assert_eq!(run.join().unwrap(), alone);
            }
        });
        let sessions = network.idle().len();
        assert!((1..=threads).contains(&sessions), "{sessions} sessions");
    }
}
