//! `faces bench recognition`: the embedding's cost per face (landmarks, then chip
//! and network), one thread, on every face the detector finds in the shared
//! `known_counts` photos; optionally beside `face_recognition`'s own time on the
//! same faces (`--compare-dlib PYTHON`, the reference virtualenv's python); and
//! the time to search 10k, 100k and 1M stored embeddings.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use faces_detect::{
    decode, distances, DecodeLimits, Detector, DetectorConfig, Embedding, FaceRect, Recognizer,
    EMBEDDING_LEN,
};
use image::RgbImage;
use serde_json::{json, Value};

#[derive(Debug, Args)]
pub struct RecognitionBenchArgs {
    /// Timed runs per face (the median is kept).
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// Python of a virtualenv with face_recognition 1.3.0, dlib-bin and
    /// face_recognition_models: time `face_encodings` on the same faces.
    #[arg(long)]
    compare_dlib: Option<PathBuf>,
    /// Stored embeddings to search (random, as many as given).
    #[arg(long, num_args = 1.., default_values_t = [10_000usize, 100_000, 1_000_000])]
    search: Vec<usize>,
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

pub fn run(args: RecognitionBenchArgs) -> Result<bool> {
    let dir = faces_test_data::dir().join("known_counts");
    let detector = Detector::new(DetectorConfig {
        threads: Some(1),
        ..DetectorConfig::default()
    })?;
    let recognizer = Recognizer::new()?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e != "jsonl"))
        .collect();
    paths.sort();
    let mut faces: Vec<(PathBuf, usize, FaceRect)> = Vec::new();
    let mut images: Vec<RgbImage> = Vec::new();
    for path in &paths {
        let image = decode(&std::fs::read(path)?, &DecodeLimits::default())?;
        for face in detector.detect(&image)? {
            faces.push((path.clone(), images.len(), FaceRect::of(&face)));
        }
        images.push(image);
    }
    println!(
        "recognition, 1 thread, {} faces of {} photos in {} (median of {} runs per face)",
        faces.len(),
        paths.len(),
        dir.display(),
        args.repeat
    );

    let (mut landmarks_ms, mut total_ms) = (Vec::new(), Vec::new());
    for (_, image, rect) in &faces {
        let image = &images[*image];
        let time = |f: &dyn Fn()| {
            median_ms(
                (0..args.repeat.max(1))
                    .map(|_| {
                        let start = Instant::now();
                        f();
                        start.elapsed()
                    })
                    .collect(),
            )
        };
        landmarks_ms.push(time(&|| {
            std::hint::black_box(recognizer.landmarks(image, *rect));
        }));
        total_ms.push(time(&|| {
            std::hint::black_box(recognizer.recognize(image, *rect));
        }));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let ours = mean(&total_ms);
    println!(
        "faces:  {:.2} ms per face (landmarks {:.2}, chip + network {:.2})",
        ours,
        mean(&landmarks_ms),
        ours - mean(&landmarks_ms)
    );
    if let Some(python) = &args.compare_dlib {
        let dlib = reference_ms(python, &faces, args.repeat)?;
        println!(
            "dlib:   {:.2} ms per face (face_recognition.face_encodings, same faces)",
            mean(&dlib)
        );
        println!("ratio:  {:.2}x dlib's time", ours / mean(&dlib));
    }

    // Search: random stored embeddings, one query, all distances then those within 0.6.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 0.2 - 0.1
    };
    let largest = args.search.iter().copied().max().unwrap_or(0);
    let stored: Vec<Embedding> = (0..largest)
        .map(|_| Embedding(std::array::from_fn(|_| next())))
        .collect();
    let query = Embedding([0.0; EMBEDDING_LEN]);
    let mut out = Vec::new();
    for &n in &args.search {
        let samples = (0..args.repeat.max(1))
            .map(|_| {
                let start = Instant::now();
                distances(&query, &stored[..n], &mut out);
                std::hint::black_box(out.iter().filter(|&&d| d <= 0.6).count());
                start.elapsed()
            })
            .collect();
        println!("search: {n:>9} stored faces {:>8.2} ms", median_ms(samples));
    }
    Ok(true)
}

/// `face_recognition.face_encodings` per face, by tests/recognition/dlib_reference.py.
fn reference_ms(
    python: &PathBuf,
    faces: &[(PathBuf, usize, FaceRect)],
    repeat: usize,
) -> Result<Vec<f64>> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/recognition/dlib_reference.py");
    let request = json!({"faces": faces.iter().map(|(path, _, r)| json!({
        "path": path, "rect": [r.left, r.top, r.right, r.bottom]
    })).collect::<Vec<_>>()});
    let mut child = Command::new(python)
        .arg(&script)
        .args(["--repeat", &repeat.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    child
        .stdin
        .take()
        .context("reference stdin")?
        .write_all(request.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the dlib reference failed");
    let reply: Value = serde_json::from_slice(&out.stdout)?;
    reply["faces"]
        .as_array()
        .context("reference reply")?
        .iter()
        .map(|f| f["ms"].as_f64().context("ms"))
        .collect()
}
