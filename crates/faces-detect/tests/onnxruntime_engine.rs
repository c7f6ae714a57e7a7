//! The optional ONNX Runtime engine gives the same faces as the pure-Rust ones.
//! Runs with `--features onnxruntime` and `ORT_DYLIB_PATH` pointing at libonnxruntime.
#![cfg(feature = "onnxruntime")]

use faces_detect::{decode, DecodeLimits, Detector, DetectorConfig, Engine};

#[test]
fn onnxruntime_native_and_rten_agree_on_real_photos() {
    let data = faces_test_data::path("known_counts");
    let native = Detector::new(DetectorConfig::default()).unwrap();
    let rten = Detector::new(DetectorConfig {
        engine: Engine::Rten,
        ..DetectorConfig::default()
    })
    .unwrap();
    let ort = Detector::new(DetectorConfig {
        engine: Engine::OnnxRuntime,
        ..DetectorConfig::default()
    })
    .expect("ORT_DYLIB_PATH must name libonnxruntime");
    for name in [
        "fr_two_people.jpg",
        "dlib_bald_guys.jpg",
        "fr_obama_and_biden.jpg",
        "skimage_camera.png",
    ] {
        let image = decode(
            &std::fs::read(data.join(name)).unwrap(),
            &DecodeLimits::default(),
        )
        .unwrap();
        let b = ort.detect(&image).unwrap();
        for a in [native.detect(&image).unwrap(), rten.detect(&image).unwrap()] {
            assert_eq!(a.len(), b.len(), "{name}");
            for face in &a {
                let best = b.iter().map(|other| other.iou(face)).fold(0.0, f32::max);
                assert!(best > 0.98, "{name}: {face:?} has no twin (IoU {best})");
            }
        }
    }
}
