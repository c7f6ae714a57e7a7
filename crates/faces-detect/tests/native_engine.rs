//! The native engine finds the same faces as `rten`, the reference engine, on real
//! photos of several sizes (odd, tiny, grayscale, a 4096-px side with tiles) in both
//! modes. Its raw outputs are compared with rten's in the crate's unit tests.

use faces_detect::{decode, DecodeLimits, Detector, DetectorConfig, Engine, Face, Mode, RgbImage};
use image::imageops::{self, FilterType};

fn photo(name: &str) -> RgbImage {
    let path = faces_test_data::path("known_counts").join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode(&bytes, &DecodeLimits::default()).unwrap()
}

fn detector(engine: Engine, mode: Mode) -> Detector {
    Detector::new(DetectorConfig {
        engine,
        mode,
        // Lower than the default, so that more (and weaker) faces are compared.
        score_threshold: 0.3,
        threads: Some(2),
        ..DetectorConfig::default()
    })
    .unwrap()
}

fn assert_same_faces(what: &str, ours: &[Face], reference: &[Face]) {
    assert_eq!(
        ours.len(),
        reference.len(),
        "{what}: {ours:?} vs {reference:?}"
    );
    for face in reference {
        let twin = ours
            .iter()
            .max_by(|a, b| a.iou(face).total_cmp(&b.iou(face)))
            .expect("a face");
        assert!(
            twin.iou(face) > 0.99 && (twin.score - face.score).abs() < 1e-3,
            "{what}: {face:?} has no twin; closest {twin:?}"
        );
    }
}

#[test]
fn native_finds_the_same_faces_as_rten() {
    let group = photo("fr_obama_and_biden.jpg");
    let odd = imageops::crop_imm(&group, 13, 7, 333, 257).to_image();
    let tiny = imageops::resize(&group, 32, 32, FilterType::Triangle);
    let gray = photo("skimage_camera.png");
    let crowd = photo("dlib_bald_guys.jpg");
    let (w, h) = group.dimensions();
    let huge = imageops::resize(&group, 4096, 4096 * h / w, FilterType::Triangle);
    for mode in [Mode::Fast, Mode::Accurate] {
        let (native, rten) = (detector(Engine::Native, mode), detector(Engine::Rten, mode));
        assert_eq!(
            native.engine(),
            Engine::Native,
            "this CPU should run the native engine"
        );
        let mut images = vec![("odd", &odd), ("tiny", &tiny), ("gray", &gray)];
        if mode == Mode::Fast {
            // Coarse pass + tiles. Accurate mode's passes are the same code on both
            // engines, so the small photos above (mirrored, 1.5x, 2x) are enough.
            images.extend([("group", &group), ("crowd", &crowd), ("4096 px", &huge)]);
        }
        for (name, image) in images {
            let what = format!("{name} {}x{} {mode:?}", image.width(), image.height());
            assert_same_faces(
                &what,
                &native.detect(image).unwrap(),
                &rten.detect(image).unwrap(),
            );
        }
    }
}

#[test]
fn native_engine_is_chosen_by_name() {
    assert_eq!("native".parse::<Engine>(), Ok(Engine::Native));
    assert_eq!("rten".parse::<Engine>(), Ok(Engine::Rten));
    assert_eq!(DetectorConfig::default().engine, Engine::Native);
    assert!("tract".parse::<Engine>().is_err());
}
