//! Which views of an image the network sees, and merging what it finds in them.
//!
//! A whole-image *coarse* pass (shrunk so its longer side is at most
//! [`COARSE_SIDE`]) finds large faces. When that pass had to shrink the image, a
//! *fine* pass runs at full resolution (2x in [`Mode::Accurate`], both capped by
//! `max_input_side`) over overlapping tiles, so that faces of 16 px stay findable in
//! a 4000x3000 photo without running one huge tensor. Tiles keep only the small
//! faces whose centre lies in their own core; the coarse pass owns the rest.

use std::borrow::Cow;
use std::str::FromStr;

use image::imageops::{self, FilterType};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::geometry::nms;
use crate::native::NativeNetwork;
use crate::retinaface::{RetinaFace, RtenNetwork};
use crate::{DetectError, Face};

/// Longest side of the whole-image pass.
const COARSE_SIDE: u32 = 1280;
/// Longest side of one tile of the fine pass.
const TILE_SIDE: u32 = 2048;
/// Candidates kept per view before NMS, highest scores first.
const MAX_CANDIDATES: usize = 5000;

/// Speed/recall trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The image at its own size (large images: coarse pass + full-size tiles).
    #[default]
    Fast,
    /// Adds a pass at twice the size, merged by NMS: finds more small faces, ~4x slower.
    Accurate,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "fast" => Ok(Mode::Fast),
            "accurate" => Ok(Mode::Accurate),
            other => Err(format!("unknown mode {other:?}: use fast or accurate")),
        }
    }
}

/// The inference engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// This network written out in Rust over AVX2 + FMA kernels (the default). On a
    /// CPU without them the detector runs `rten` instead; [`Detector::engine`] says which.
    #[default]
    Native,
    /// The `rten` ONNX engine, pure Rust, runs anywhere; the reference the native
    /// engine is tested against.
    Rten,
    /// ONNX Runtime's shared library, loaded at run time from `ORT_DYLIB_PATH`
    /// (the `onnxruntime` PyPI wheel ships one). Needs the `onnxruntime` cargo feature.
    OnnxRuntime,
}

impl FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "native" => Ok(Engine::Native),
            "rten" => Ok(Engine::Rten),
            "onnxruntime" | "ort" => Ok(Engine::OnnxRuntime),
            other => Err(format!(
                "unknown engine {other:?}: use native, rten or onnxruntime"
            )),
        }
    }
}

/// Detector settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Faces scoring below this are dropped (0..1).
    pub score_threshold: f32,
    /// Boxes overlapping a better one by more than this IoU are dropped.
    pub nms_threshold: f32,
    pub mode: Mode,
    /// Longest side the network is run at, summed over tiles (bounds work on huge images).
    pub max_input_side: u32,
    /// Inference threads; `None` uses one per core (native: per CPU the OS reports; rten: per physical core).
    pub threads: Option<usize>,
    pub engine: Engine,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            score_threshold: 0.5,
            nms_threshold: 0.4,
            mode: Mode::Fast,
            max_input_side: 4096,
            threads: None,
            engine: Engine::Native,
        }
    }
}

/// A loaded model plus settings. Cheap to share behind an `Arc`; `detect` takes `&self`
/// and may run from several threads at once.
pub struct Detector {
    network: RetinaFace,
    config: DetectorConfig,
    /// The engine that runs: the configured one, or `rten` where the native engine
    /// cannot run on this CPU.
    engine: Engine,
}

/// One region of the image at one scale.
struct View {
    scale: f32,
    /// Region of the original image, in original pixels.
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    /// Keep only faces no larger than this (scaled pixels) whose centre is inside
    /// `core` (original pixels: left, top, right, bottom). `None` keeps all.
    keep: Option<(f32, [f32; 4])>,
}

impl Detector {
    /// Loads the bundled model (a few milliseconds) and checks its outputs.
    pub fn new(config: DetectorConfig) -> Result<Self, DetectError> {
        let mut engine = config.engine;
        if engine == Engine::Native && !crate::native::available() {
            engine = Engine::Rten;
        }
        let network = match engine {
            Engine::Native => RetinaFace::Native(Box::new(NativeNetwork::load(
                crate::retinaface::model_onnx(),
                config.threads,
            )?)),
            Engine::Rten => RetinaFace::Rten(Box::new(RtenNetwork::load(config.threads)?)),
            #[cfg(feature = "onnxruntime")]
            Engine::OnnxRuntime => {
                RetinaFace::OnnxRuntime(crate::onnxruntime::OrtNetwork::load(config.threads)?)
            }
            #[cfg(not(feature = "onnxruntime"))]
            Engine::OnnxRuntime => {
                return Err(DetectError::Inference(
                    "this build has no onnxruntime engine (build with --features onnxruntime)"
                        .into(),
                ))
            }
        };
        Ok(Self {
            network,
            config,
            engine,
        })
    }

    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    /// The engine running the network: `config().engine`, except that `Native`
    /// becomes `Rten` on a CPU without AVX2 and FMA.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Why the engine running is not the configured one, for the log; `None` when it is.
    pub fn engine_fallback(&self) -> Option<String> {
        (self.engine != self.config.engine).then(|| {
            format!(
                "engine {:?} needs AVX2 and FMA, which this CPU lacks; running {:?}",
                self.config.engine, self.engine
            )
        })
    }

    /// One network pass over `image` at its own size with each layer kind timed
    /// (the native engine only; `None` on the others). For benchmarks.
    pub fn profile(&self, image: &RgbImage) -> Result<Option<Vec<crate::LayerTime>>, DetectError> {
        self.network.profile(image)
    }

    /// Finds the faces in an upright RGB image, best first. CPU-bound: call it
    /// from a blocking thread, not an async task.
    pub fn detect(&self, image: &RgbImage) -> Result<Vec<Face>, DetectError> {
        let (width, height) = image.dimensions();
        let mut found = Vec::new();
        for view in self.views(width, height) {
            // Copy pixels only where the view needs it: the whole image at its own size is used as is.
            let region = imageops::crop_imm(image, view.x, view.y, view.width, view.height);
            let input = if view.scale != 1.0 {
                let w = ((view.width as f32 * view.scale).round() as u32).max(1);
                let h = ((view.height as f32 * view.scale).round() as u32).max(1);
                Cow::Owned(imageops::resize(&*region, w, h, FilterType::Triangle))
            } else if (view.width, view.height) == (width, height) {
                Cow::Borrowed(image)
            } else {
                Cow::Owned(region.to_image())
            };
            let mut candidates = self
                .network
                .candidates(&input, self.config.score_threshold)?;
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
            candidates.truncate(MAX_CANDIDATES);
            for face in candidates {
                if let Some((max_size, _)) = view.keep {
                    if face.width.max(face.height) > max_size {
                        continue;
                    }
                }
                let face = face.to_image(view.scale, view.x as f32, view.y as f32);
                if let Some((_, [left, top, right, bottom])) = view.keep {
                    let (cx, cy) = (face.x + face.width / 2.0, face.y + face.height / 2.0);
                    if cx < left || cx >= right || cy < top || cy >= bottom {
                        continue;
                    }
                }
                found.push(face);
            }
        }
        Ok(nms(found, self.config.nms_threshold)
            .into_iter()
            .filter_map(|face| face.clipped(width, height))
            .collect())
    }

    fn views(&self, width: u32, height: u32) -> Vec<View> {
        let longest = width.max(height) as f32;
        let cap = self.config.max_input_side.max(32) as f32 / longest;
        let coarse = (COARSE_SIDE as f32 / longest).min(1.0).min(cap);
        let fine_target: f32 = match self.config.mode {
            Mode::Fast => 1.0,
            Mode::Accurate => 2.0,
        };
        let fine = fine_target.min(cap);
        let mut views = vec![View {
            scale: coarse,
            x: 0,
            y: 0,
            width,
            height,
            keep: None,
        }];
        if fine <= coarse * 1.01 {
            return views;
        }
        // Faces the coarse pass reliably sees are >= 16 px there; tiles must cover
        // everything smaller, with an overlap wide enough to hold such a face whole.
        let smallest_coarse = 24.0 * fine / coarse;
        let overlap = (smallest_coarse * 1.5).max(128.0).ceil() as u32;
        let xs = tiles(width, fine, overlap);
        let ys = tiles(height, fine, overlap);
        let single = xs.len() == 1 && ys.len() == 1;
        for &(y, h, top, bottom) in &ys {
            for &(x, w, left, right) in &xs {
                views.push(View {
                    scale: fine,
                    x,
                    y,
                    width: w,
                    height: h,
                    keep: (!single).then_some((overlap as f32, [left, top, right, bottom])),
                });
            }
        }
        views
    }
}

/// Splits one axis of `length` original pixels into overlapping tiles whose scaled
/// length is at most [`TILE_SIDE`]. Returns (start, length, core start, core end).
fn tiles(length: u32, scale: f32, overlap_scaled: u32) -> Vec<(u32, u32, f32, f32)> {
    let scaled = (length as f32 * scale).ceil() as u32;
    if scaled <= TILE_SIDE {
        return vec![(0, length, 0.0, length as f32)];
    }
    let count = (scaled - overlap_scaled).div_ceil(TILE_SIDE - overlap_scaled);
    let overlap = (overlap_scaled as f32 / scale).ceil() as u32;
    let step = (length - overlap).div_ceil(count);
    (0..count)
        .map(|i| {
            // Tile i spans its core plus half the overlap on each side, so neighbouring cores meet exactly.
            let start = i * step;
            let end = (start + step + overlap).min(length);
            let core_start = if i == 0 {
                0.0
            } else {
                start as f32 + overlap as f32 / 2.0
            };
            let core_end = if i + 1 == count {
                length as f32
            } else {
                end as f32 - overlap as f32 / 2.0
            };
            (start, end - start, core_start, core_end)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_cores_partition_the_axis_and_tiles_fit() {
        for (length, scale) in [
            (4000u32, 1.0f32),
            (3000, 1.0),
            (2049, 1.0),
            (8000, 0.512),
            (1500, 2.0),
        ] {
            let t = tiles(length, scale, 128);
            assert!(t.len() > 1, "{length} should be split");
            assert_eq!(t[0].2, 0.0);
            assert_eq!(t.last().map(|t| t.3), Some(length as f32));
            for w in t.windows(2) {
                assert_eq!(w[0].3, w[1].2, "cores must meet");
                assert!(
                    ((w[0].0 + w[0].1 - w[1].0) as f32 * scale) >= 127.0,
                    "tiles must overlap by the scaled overlap"
                );
            }
            for (start, len, ..) in &t {
                assert!(start + len <= length);
                assert!((*len as f32 * scale).ceil() as u32 <= TILE_SIDE + 1);
            }
        }
        assert_eq!(tiles(640, 1.0, 128).len(), 1);
    }

    #[test]
    fn mode_parses() {
        assert_eq!("Accurate".parse::<Mode>(), Ok(Mode::Accurate));
        assert!("slow".parse::<Mode>().is_err());
    }
}
