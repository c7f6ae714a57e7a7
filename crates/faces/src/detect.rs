//! `faces detect PATH...`: the detector on files and folders, no server.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use faces_detect::{
    apply_mark, decode, encode_jpeg, DecodeLimits, Detector, DetectorConfig, Engine, Face, Mark,
    Mode, Suppression,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Extensions picked up when walking a folder (a file named on the command line is always tried).
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "gif", "bmp", "tif", "tiff", "webp"];

#[derive(Debug, Args)]
pub struct DetectArgs {
    /// Image files or folders (searched recursively).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Write a marked copy of each image (JPEG) into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// What the copies in --out do to each face: box (a red box), blur or pixelate
    /// (an ellipse 1.4x the box made unrecognisable), or none.
    #[arg(long, default_value = "box")]
    mark: Mark,
    /// Minimum face score (0..1). Use a low value such as 0.02 to measure AP.
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.4)]
    nms: f32,
    /// How overlapping boxes of one face become one: vote (score-weighted mean) or hard (best box).
    #[arg(long, default_value = "vote")]
    suppression: Suppression,
    /// fast (own size; photos under 640 px also upscaled to 640) or accurate (mirrored passes, plus 1.5x and 2x).
    #[arg(long, default_value = "fast")]
    mode: Mode,
    /// Longest side the network runs at.
    #[arg(long, default_value_t = 4096)]
    max_input_side: u32,
    /// Inference threads (default: one per CPU the OS reports on the native engine,
    /// one per physical core on rten and onnxruntime).
    #[arg(long)]
    threads: Option<usize>,
    /// Inference engine: native (this network over AVX2 kernels; rten on CPUs
    /// without AVX2/FMA), rten (pure-Rust ONNX engine) or onnxruntime (needs the
    /// `onnxruntime` cargo feature and ORT_DYLIB_PATH).
    #[arg(long, env = "FACES_DETECTOR_ENGINE", default_value = "native")]
    engine: Engine,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, default_value_t = 100_000_000)]
    max_pixels: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// One line of output, in the format `../shared/data/score.py` reads.
#[derive(Serialize)]
struct Line<'a> {
    file: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    faces: Option<Vec<FaceJson>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A face as JSON: coordinates rounded to 1/100 px, landmarks as [x, y] pairs.
#[derive(Serialize)]
pub struct FaceJson {
    x: f32,
    y: f32,
    width: f32,
    height: f32,
    score: f32,
    landmarks: Vec<[f32; 2]>,
}

impl From<&Face> for FaceJson {
    fn from(f: &Face) -> Self {
        let r = |v: f32| (v * 100.0).round() / 100.0;
        FaceJson {
            x: r(f.x),
            y: r(f.y),
            width: r(f.width),
            height: r(f.height),
            score: (f.score * 10_000.0).round() / 10_000.0,
            landmarks: f.landmarks.iter().map(|[x, y]| [r(*x), r(*y)]).collect(),
        }
    }
}

/// Every image under the given paths, with the name to report it by.
/// The files named and those in the folders named (recursively, with one of
/// `extensions`), each with the name to report it by.
pub fn collect(paths: &[PathBuf], extensions: &[&str]) -> Result<Vec<(PathBuf, String)>> {
    fn walk(
        dir: &Path,
        root: &Path,
        extensions: &[&str],
        out: &mut Vec<(PathBuf, String)>,
    ) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, root, extensions, out)?;
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e.to_ascii_lowercase().as_str()))
            {
                let name = path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                out.push((path, name));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, path, extensions, &mut out)?;
        } else {
            out.push((path.clone(), path.to_string_lossy().into_owned()));
        }
    }
    Ok(out)
}

/// Runs the command; returns whether every image was processed.
pub fn run(args: DetectArgs) -> Result<bool> {
    let detector = Detector::new(DetectorConfig {
        score_threshold: args.threshold,
        nms_threshold: args.nms,
        suppression: args.suppression,
        mode: args.mode,
        max_input_side: args.max_input_side,
        threads: args.threads,
        engine: args.engine,
    })?;
    if let Some(fallback) = detector.engine_fallback() {
        eprintln!("note: {fallback}");
    }
    let limits = DecodeLimits {
        max_pixels: args.max_pixels,
    };
    let files = collect(&args.paths, &IMAGE_EXTENSIONS)?;
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let progress =
        if args.quiet || !std::io::stderr().is_terminal() || std::io::stdout().is_terminal() {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(files.len() as u64)
        };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let stdout = std::io::stdout();
    let mut all_ok = true;
    for (path, name) in &files {
        progress.set_message(name.clone());
        let line = match process(
            &detector,
            &limits,
            path,
            args.out.as_deref().map(|o| (o, args.mark)),
            name,
        ) {
            Ok((faces, width, height, latency_ms)) => Line {
                file: name,
                width: Some(width),
                height: Some(height),
                faces: Some(faces.iter().map(FaceJson::from).collect()),
                latency_ms: Some(latency_ms),
                error: None,
            },
            Err(error) => {
                all_ok = false;
                progress.suspend(|| eprintln!("error: {name}: {error:#}"));
                Line {
                    file: name,
                    width: None,
                    height: None,
                    faces: None,
                    latency_ms: None,
                    error: Some(format!("{error:#}")),
                }
            }
        };
        let mut out = stdout.lock();
        serde_json::to_writer(&mut out, &line)?;
        writeln!(out)?;
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(all_ok)
}

fn process(
    detector: &Detector,
    limits: &DecodeLimits,
    path: &Path,
    out: Option<(&Path, Mark)>,
    name: &str,
) -> Result<(Vec<Face>, u32, u32, f64)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let started = Instant::now();
    let image = decode(&bytes, limits)?;
    let faces = detector.detect(&image)?;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Some((out, mark)) = out {
        let file_name = name.replace(['/', '\\'], "__");
        let target = out.join(Path::new(&file_name).with_extension("jpg"));
        let mut marked = image.clone();
        apply_mark(&mut marked, &faces, mark);
        std::fs::write(&target, encode_jpeg(&marked)?)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    Ok((
        faces,
        image.width(),
        image.height(),
        (latency_ms * 100.0).round() / 100.0,
    ))
}
