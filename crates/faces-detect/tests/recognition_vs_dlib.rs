//! Recognition against its reference, dlib itself: on every face our detector finds
//! in `known_counts`, the same rectangle given to `face_recognition` 1.3.0 (dlib's
//! 5-point predictor and ResNet) and to ours must give the same 5 landmarks and an
//! embedding within 0.01; and on the library's own example photos every pair of
//! faces gets the same same-person decision at 0.6 as `compare_faces`.
//!
//! Needs the reference virtualenv (dlib-bin, face_recognition_models,
//! face_recognition 1.3.0), named by `FACES_DLIB_PYTHON`; `.ci/run` makes it and runs
//! these with `--ignored`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use faces_detect::{
    decode, DecodeLimits, Detector, DetectorConfig, Embedding, FaceRect, Recognizer,
};
use serde_json::{json, Value};

struct Case {
    /// The photo as we decode it.
    path: PathBuf,
    /// Our decoded pixels saved as PNG, which the reference reads: both sides then
    /// see the same pixels whatever their JPEG decoders do.
    png: PathBuf,
    rect: FaceRect,
}

fn repo_file(relative: &str) -> PathBuf {
    let manifest =
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
    PathBuf::from(manifest).join("../..").join(relative)
}

/// Every face the detector finds in `known_counts`, as dlib rectangles.
fn cases() -> Vec<Case> {
    let detector = Detector::new(DetectorConfig::default()).unwrap();
    let dir = faces_test_data::dir().join("known_counts");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "jsonl"))
        .collect();
    paths.sort();
    let pngs = std::env::temp_dir().join(format!("faces-recognition-{}", std::process::id()));
    std::fs::create_dir_all(&pngs).unwrap();
    let mut cases = Vec::new();
    for path in paths {
        let image = decode(&std::fs::read(&path).unwrap(), &DecodeLimits::default()).unwrap();
        let png = pngs.join(path.file_name().unwrap()).with_extension("png");
        image.save(&png).unwrap();
        for face in detector.detect(&image).unwrap() {
            cases.push(Case {
                path: path.clone(),
                png: png.clone(),
                rect: FaceRect::of(&face),
            });
        }
    }
    cases
}

/// dlib's landmarks and embedding for each case.
fn reference(cases: &[Case]) -> Vec<Value> {
    let python = std::env::var("FACES_DLIB_PYTHON")
        .expect("FACES_DLIB_PYTHON names the reference virtualenv's python (see .ci/run)");
    let request = json!({"faces": cases.iter().map(|c| json!({
        "path": c.png, "rect": [c.rect.left, c.rect.top, c.rect.right, c.rect.bottom]
    })).collect::<Vec<_>>()});
    let mut child = Command::new(python)
        .arg(repo_file("tests/recognition/dlib_reference.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("reference python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "reference failed");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    reply["faces"].as_array().unwrap().clone()
}

fn embedding(v: &Value) -> Embedding {
    let mut e = [0f32; 128];
    for (x, v) in e.iter_mut().zip(v.as_array().unwrap()) {
        *x = v.as_f64().unwrap() as f32;
    }
    Embedding(e)
}

#[test]
#[ignore = "needs the dlib reference virtualenv (FACES_DLIB_PYTHON); run by .ci/run"]
fn landmarks_and_embeddings_equal_dlibs_on_every_known_counts_face() {
    let cases = cases();
    assert!(cases.len() >= 40, "{} faces", cases.len());
    let dlib = reference(&cases);
    let recognizer = Recognizer::new().unwrap();
    let mut worst = 0f32;
    let mut failures = Vec::new();
    for (case, want) in cases.iter().zip(&dlib) {
        let image = decode(
            &std::fs::read(&case.path).unwrap(),
            &DecodeLimits::default(),
        )
        .unwrap();
        let got = recognizer.recognize(&image, case.rect);
        let want_landmarks: Vec<[i64; 2]> =
            serde_json::from_value(want["landmarks"].clone()).unwrap();
        let d = got.embedding.distance(&embedding(&want["embedding"]));
        worst = worst.max(d);
        let name = case.path.file_name().unwrap().to_string_lossy();
        if got.landmarks.to_vec() != want_landmarks || d > 0.01 {
            failures.push(format!(
                "{name} {:?}: landmarks {:?} dlib {:?}, distance {d:.5}",
                case.rect, got.landmarks, want_landmarks
            ));
        }
    }
    println!(
        "{} faces, largest distance to dlib's embedding {worst:.6}",
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
#[ignore = "needs the dlib reference virtualenv (FACES_DLIB_PYTHON); run by .ci/run"]
fn same_person_decisions_equal_compare_faces_on_the_librarys_example_photos() {
    // face_recognition's own example photos (`fr_*`): Obama, Biden, Alex Lacamoire,
    // Lin-Manuel Miranda, Kit Harington, Rose Leslie, in several photos each. The
    // reference reads the original files with its own decoder, as its users do.
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| {
            c.path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("fr_")
        })
        .map(|c| Case {
            png: c.path.clone(),
            ..c
        })
        .collect();
    assert!(cases.len() >= 15, "{} faces", cases.len());
    let dlib: Vec<Embedding> = reference(&cases)
        .iter()
        .map(|f| embedding(&f["embedding"]))
        .collect();
    let recognizer = Recognizer::new().unwrap();
    let ours: Vec<Embedding> = cases
        .iter()
        .map(|c| {
            let image = decode(&std::fs::read(&c.path).unwrap(), &DecodeLimits::default()).unwrap();
            recognizer.recognize(&image, c.rect).embedding
        })
        .collect();
    // Each side decoding the JPEGs itself (PIL's libjpeg against the image crate)
    // moves a face's embedding a little; how far, for the record.
    let mut moved: Vec<f32> = dlib.iter().zip(&ours).map(|(a, b)| a.distance(b)).collect();
    moved.sort_by(f32::total_cmp);
    println!(
        "ours vs dlib per face, each decoding the file itself: median {:.4}, largest {:.4}",
        moved[moved.len() / 2],
        moved[moved.len() - 1]
    );
    let name = |i: usize| {
        format!(
            "{} {:?}",
            cases[i].path.file_name().unwrap().to_string_lossy(),
            cases[i].rect
        )
    };
    let (mut pairs, mut same, mut differ, mut closest) = (0, 0, Vec::new(), f32::INFINITY);
    for i in 0..cases.len() {
        for j in i + 1..cases.len() {
            let (want, got) = (dlib[i].distance(&dlib[j]), ours[i].distance(&ours[j]));
            pairs += 1;
            same += usize::from(want <= 0.6);
            closest = closest.min((want - 0.6).abs());
            if (want <= 0.6) != (got <= 0.6) {
                differ.push(format!(
                    "{} / {}: dlib {want:.4}, ours {got:.4}",
                    name(i),
                    name(j)
                ));
            }
        }
    }
    println!(
        "{pairs} pairs, {same} the same person by compare_faces; nearest to 0.6: {closest:.4} away"
    );
    assert!(same > 0 && same < pairs, "both decisions occur");
    assert!(
        differ.is_empty(),
        "decisions differ:\n{}",
        differ.join("\n")
    );
}
