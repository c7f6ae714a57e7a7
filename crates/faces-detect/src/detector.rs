//! Which views of an image the network sees, and merging what it finds in them.
//!
//! A whole-image *coarse* pass (shrunk so its longer side is at most
//! [`COARSE_SIDE`]) finds large faces. When that pass had to shrink the image, a
//! *fine* pass runs at full resolution over overlapping tiles, so that faces of
//! 16 px stay findable in a 4000x3000 photo without running one huge tensor; tiles
//! keep only the faces whose centre lies in their own core. A photo smaller than
//! [`FINE_MIN_SIDE`] gets its fine pass upscaled to that size (at most
//! [`MAX_UPSCALE`]): the network was trained on 640 px crops and misses faces
//! under its 16 px anchors. [`Mode::Accurate`] mirrors every pass and adds passes
//! at 1.5x and 2x the fine pass's scale, merged by box voting.
//!
//! Each pass *owns* the face sizes it sees well (16 to 128 px at its scale; the
//! coarsest pass has no upper bound, the finest no lower one): it reports only
//! those, and only its owners score a face. At one scale a face scores the lower of
//! its plain and mirrored pass (a pass that missed it gives 0): upscaled textures
//! that look like a face one way round seldom do both ways, so a threshold keeps its
//! meaning in both modes. Across scales the best owner counts. Without ownership a
//! 2x pass cuts large faces into several.

use std::borrow::Cow;
use std::str::FromStr;

use fast_image_resize as fr;
use image::imageops;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::engine::native::NativeNetwork;
use crate::engine::rten::RtenNetwork;
use crate::engine::Network;
use crate::geometry::{groups, vote, Suppression};
use crate::model::padded_size;
use crate::{DetectError, Face};

/// Longest side of the whole-image pass.
const COARSE_SIDE: u32 = 1280;
/// Longest side of one tile of the fine pass.
const TILE_SIDE: u32 = 2048;
/// Candidates kept per view before NMS, highest scores first.
const MAX_CANDIDATES: usize = 5000;
/// Lowest score a pass reports when several are merged (a face's score comes from
/// several passes, and is thresholded after).
const FUSION_FLOOR: f32 = 0.05;
/// The face sizes a pass owns, in pixels at its scale: the network's smallest
/// anchor, and the size above which the next coarser pass sees a face at 64 px or more.
const OWN_MIN: f32 = 16.0;
const OWN_MAX: f32 = 128.0;
/// The fine pass brings a photo's longer side up to this many pixels: the size of
/// the crops the network was trained on (RetinaFace's 640x640). Its smallest anchor
/// is 16 px, so a small photo's 10-16 px faces are found only when upscaled
/// (measured on `dev`, mostly 416 px WIDER photos: all-faces AP 0.721 -> 0.788).
const FINE_MIN_SIDE: f32 = 640.0;
/// The most the fine pass upscales a photo: beyond it the network sees blur.
const MAX_UPSCALE: f32 = 2.0;
/// The fine passes of [`Mode::Accurate`], relative to the fine pass's scale (1.0,
/// the fine pass itself, is left out where it is the coarse pass): scale, and
/// whether a mirrored twin runs too (tiles included). Every scale has its twin: a
/// scale without one lets upscaled textures through at full score (a 22x29 px blur
/// at 0.51 in `fr_two_people.jpg` from the plain 1.5x pass). The whole-image pass is
/// mirrored too.
const ACCURATE_PASSES: [(f32, bool); 3] = [(1.0, true), (1.5, true), (2.0, true)];

/// Speed/recall trade-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The image at its own size (large images: coarse pass + full-size tiles;
    /// photos under 640 px: own size + a pass upscaled to 640 px).
    #[default]
    Fast,
    /// Mirrors every pass and adds passes at 1.5x and 2x, merged by box voting:
    /// finds more small faces, about 18x the time of `fast` on a 1024x768 photo.
    Accurate,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fast => "fast",
            Mode::Accurate => "accurate",
        }
    }
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
    /// How overlapping candidates become one box.
    #[serde(default)]
    pub suppression: Suppression,
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
            suppression: Suppression::Vote,
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
    network: Box<dyn Network>,
    config: DetectorConfig,
    /// The engine that runs: the configured one, or `rten` where the native engine
    /// cannot run on this CPU.
    engine: Engine,
}

/// One region of the image at one scale, maybe mirrored.
struct View {
    /// Index into the passes of [`Detector::views`]; a pass's views are its tiles.
    pass: usize,
    scale: f32,
    mirror: bool,
    /// Region of the original image, in original pixels.
    x: u32,
    y: u32,
    width: u32,
    height: u32,
    /// Keep only faces whose centre is inside this core (original pixels: left,
    /// top, right, bottom). `None` keeps all.
    core: Option<[f32; 4]>,
}

impl View {
    fn same_region(&self, other: &View) -> bool {
        (self.scale, self.x, self.y, self.width, self.height)
            == (other.scale, other.x, other.y, other.width, other.height)
    }
}

/// The view's region of `image` at the view's scale: borrowed when that is the
/// whole image at its own size, copied when only cut, else resampled (bilinear; SIMD where the CPU has it).
fn scaled_region<'a>(image: &'a RgbImage, view: &View) -> Result<Cow<'a, RgbImage>, DetectError> {
    let whole = (view.x, view.y, view.width, view.height) == (0, 0, image.width(), image.height());
    if view.scale == 1.0 {
        return Ok(if whole {
            Cow::Borrowed(image)
        } else {
            Cow::Owned(
                imageops::crop_imm(image, view.x, view.y, view.width, view.height).to_image(),
            )
        });
    }
    let width = ((view.width as f32 * view.scale).round() as u32).max(1);
    let height = ((view.height as f32 * view.scale).round() as u32).max(1);
    let resize = |e: &dyn std::fmt::Display| DetectError::Inference(format!("resize: {e}"));
    let source = fr::images::ImageRef::new(
        image.width(),
        image.height(),
        image.as_raw(),
        fr::PixelType::U8x3,
    )
    .map_err(|e| resize(&e))?;
    let mut scaled = fr::images::Image::new(width, height, fr::PixelType::U8x3);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Bilinear))
        .crop(
            view.x.into(),
            view.y.into(),
            view.width.into(),
            view.height.into(),
        );
    fr::Resizer::new()
        .resize(&source, &mut scaled, &options)
        .map_err(|e| resize(&e))?;
    RgbImage::from_raw(width, height, scaled.into_vec())
        .map(Cow::Owned)
        .ok_or_else(|| resize(&"buffer size"))
}

/// A whole look at the image: one scale, maybe mirrored, made of one or more views.
#[derive(Debug, Clone, Copy)]
struct Pass {
    /// A face scores the lowest of the passes of one scale (plain and mirrored);
    /// across scales the best owner counts.
    scale: f32,
    /// Face sizes (longer side, original pixels) this pass owns: it keeps only
    /// these, and only its owners score a face.
    sizes: (f32, f32),
}

impl Pass {
    fn owns(&self, size: f32) -> bool {
        (self.sizes.0..=self.sizes.1).contains(&size)
    }
}

impl Detector {
    /// Loads the bundled model (a few milliseconds) and checks its outputs.
    pub fn new(config: DetectorConfig) -> Result<Self, DetectError> {
        let mut engine = config.engine;
        if engine == Engine::Native && !crate::engine::native::available() {
            engine = Engine::Rten;
        }
        let network: Box<dyn Network> = match engine {
            Engine::Native => Box::new(NativeNetwork::load(
                crate::model::model_onnx(),
                config.threads,
            )?),
            Engine::Rten => Box::new(RtenNetwork::load(config.threads)?),
            #[cfg(feature = "onnxruntime")]
            Engine::OnnxRuntime => Box::new(crate::engine::onnxruntime::OrtNetwork::load(
                config.threads,
            )?),
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
        self.detect_with(image, self.config.mode, self.config.score_threshold)
    }

    /// [`Detector::detect`] in `mode` and at `threshold` instead of the configured
    /// ones (a service's per-request options).
    pub fn detect_with(
        &self,
        image: &RgbImage,
        mode: Mode,
        threshold: f32,
    ) -> Result<Vec<Face>, DetectError> {
        let (width, height) = image.dimensions();
        let (passes, views) = self.views(width, height, mode);
        // With several passes a face's score is theirs combined, so each pass
        // must report faces it scores below the threshold too.
        let candidate_threshold = if passes.len() > 1 {
            threshold.min(FUSION_FLOOR)
        } else {
            threshold
        };
        let mut found = Vec::new();
        // A mirrored view follows its plain twin and flips the same scaled pixels.
        let mut previous: Option<(usize, Cow<RgbImage>)> = None;
        for (index, view) in views.iter().enumerate() {
            let scaled = match previous.take() {
                Some((twin, pixels)) if views[twin].same_region(view) => pixels,
                _ => scaled_region(image, view)?,
            };
            let input = if view.mirror {
                Cow::Owned(imageops::flip_horizontal(&*scaled))
            } else {
                Cow::Borrowed(&*scaled)
            };
            let outputs = self.network.infer(&input)?;
            let mut candidates =
                crate::anchors::decode(outputs, padded_size(&input), candidate_threshold)?;
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
            candidates.truncate(MAX_CANDIDATES);
            let input_width = input.width() as f32;
            drop(input);
            let (min_size, max_size) = passes[view.pass].sizes;
            for face in candidates {
                let face = if view.mirror {
                    face.mirrored(input_width)
                } else {
                    face
                };
                let face = face.to_image(view.scale, view.x as f32, view.y as f32);
                let size = face.width.max(face.height);
                if size < min_size || size > max_size {
                    continue;
                }
                if let Some([left, top, right, bottom]) = view.core {
                    let (cx, cy) = (face.x + face.width / 2.0, face.y + face.height / 2.0);
                    if cx < left || cx >= right || cy < top || cy >= bottom {
                        continue;
                    }
                }
                found.push((face, view.pass));
            }
            previous = Some((index, scaled));
        }
        let faces = fuse(
            &passes,
            found,
            self.config.nms_threshold,
            self.config.suppression,
        );
        Ok(faces
            .into_iter()
            .filter(|face| face.score >= threshold)
            .filter_map(|face| face.clipped(width, height))
            .collect())
    }

    /// The passes over an image of this size and their views.
    fn views(&self, width: u32, height: u32, mode: Mode) -> (Vec<Pass>, Vec<View>) {
        let longest = width.max(height) as f32;
        let cap = self.config.max_input_side.max(32) as f32 / longest;
        let coarse = (COARSE_SIDE as f32 / longest).min(1.0).min(cap);
        // Full resolution, or a small photo brought up to the network's training size.
        let fine = (FINE_MIN_SIDE / longest).clamp(1.0, MAX_UPSCALE);
        let accurate = mode == Mode::Accurate;
        // (scale, mirrored twin) from coarse to fine; a scale the cap makes equal
        // to the one before is left out.
        let mut scales = vec![(coarse, accurate)];
        let finer: &[(f32, bool)] = if accurate {
            &ACCURATE_PASSES
        } else {
            &[(1.0, false)]
        };
        for &(target, mirrored) in finer {
            let scale = (target * fine).min(cap);
            if scale > scales[scales.len() - 1].0 * 1.01 {
                scales.push((scale, mirrored));
            }
        }
        let mut passes = Vec::new();
        let mut views = Vec::new();
        let last = scales.len() - 1;
        for (i, &(scale, mirrored)) in scales.iter().enumerate() {
            let min_size = if i == last { 0.0 } else { OWN_MIN / scale };
            let mut max_size = if i == 0 {
                f32::INFINITY
            } else {
                OWN_MAX / scale
            };
            let (xs, ys) = if i == 0 {
                (
                    vec![(0, width, 0.0, width as f32)],
                    vec![(0, height, 0.0, height as f32)],
                )
            } else {
                // Tiles must hold whole any face the coarse pass cannot see (>= 24 px
                // there), with an overlap wide enough for it.
                let smallest_coarse = 24.0 * scale / coarse;
                let overlap = (smallest_coarse * 1.5).max(128.0).ceil() as u32;
                max_size = max_size.min(overlap as f32 / scale);
                (tiles(width, scale, overlap), tiles(height, scale, overlap))
            };
            let single = xs.len() == 1 && ys.len() == 1;
            // Tiled passes get their mirrored twins too: the twin is what keeps one
            // threshold meaning the same at every scale (an upscaled texture that
            // passes for a face one way round seldom does both ways).
            let mirrors: &[bool] = if mirrored { &[false, true] } else { &[false] };
            let first_pass = passes.len();
            for _ in mirrors {
                passes.push(Pass {
                    scale,
                    sizes: (min_size, max_size),
                });
            }
            // Each tile's mirrored view right after its plain one, so it flips the
            // same scaled pixels.
            for &(y, h, top, bottom) in &ys {
                for &(x, w, left, right) in &xs {
                    for (n, &mirror) in mirrors.iter().enumerate() {
                        views.push(View {
                            pass: first_pass + n,
                            scale,
                            mirror,
                            x,
                            y,
                            width: w,
                            height: h,
                            core: (!single).then_some([left, top, right, bottom]),
                        });
                    }
                }
            }
        }
        (passes, views)
    }
}

/// Merges the faces of all passes, each tagged with its pass: overlapping faces
/// become one box (by `method`), scored by the passes that own its size: the lowest
/// over the passes of one scale (a pass that missed the face gives 0), the best of
/// the scales. One pass gives its faces their own scores. One grouping over all
/// passes, not one per pass first: a face suppressed within its pass by a box that
/// another pass's box then suppresses would be lost.
fn fuse(passes: &[Pass], faces: Vec<(Face, usize)>, iou: f32, method: Suppression) -> Vec<Face> {
    groups(
        faces,
        |(face, _)| face,
        iou,
        |group| {
            let mut face = match method {
                Suppression::Hard => group[0].0,
                Suppression::Vote => vote(group, |(face, _)| face),
            };
            let mut best = vec![0f32; passes.len()];
            for &(member, pass) in group {
                best[pass] = best[pass].max(member.score);
            }
            let size = face.width.max(face.height);
            // `views` pushes the passes of one scale next to each other.
            let by_pass: Vec<(&Pass, f32)> = passes.iter().zip(best).collect();
            let score = by_pass
                .chunk_by(|a, b| a.0.scale == b.0.scale)
                .filter_map(|same_scale| {
                    let mut owners = same_scale.iter().filter(|(p, _)| p.owns(size));
                    let first = owners.next()?.1;
                    Some(owners.fold(first, |low, &(_, s)| low.min(s)))
                })
                .reduce(f32::max);
            // A vote can move a box's size out of every owner's range: keep its best score then.
            face.score = score.unwrap_or(face.score);
            face
        },
    )
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
