//! The native engine against `rten` on real photos: raw outputs within 1e-3.

use super::*;
use crate::engine::rten::RtenNetwork;
use crate::model::{model_onnx, to_tensor};

fn photo(path: &str) -> RgbImage {
    let path = faces_test_data::path(path);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn compare(native: &NativeNetwork, rten: &RtenNetwork, image: &RgbImage) {
    let (w, h) = image.dimensions();
    let (pw, ph) = padded_size(image);
    let ours = native.infer(image).unwrap();
    let reference = rten.infer(to_tensor(image, pw, ph), ph, pw).unwrap();
    for (name, (a, b)) in ["boxes", "scores", "landmarks"]
        .iter()
        .zip(ours.iter().zip(&reference))
    {
        assert_eq!(a.len(), b.len(), "{name} at {w}x{h}");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst <= 1e-3, "{name} at {w}x{h}: differs by {worst}");
    }
}

#[test]
fn raw_outputs_match_rten_on_real_photos() {
    let native = NativeNetwork::load(model_onnx(), Some(2)).unwrap();
    let rten = RtenNetwork::load(Some(1)).unwrap();
    let group = photo("known_counts/fr_obama_and_biden.jpg");
    compare(&native, &rten, &group);
    // Odd sizes (padded to 32), the smallest input, and a grayscale photo.
    let odd = image::imageops::crop_imm(&group, 13, 7, 333, 257).to_image();
    compare(&native, &rten, &odd);
    compare(
        &native,
        &rten,
        &image::imageops::resize(&group, 32, 32, image::imageops::FilterType::Triangle),
    );
    compare(&native, &rten, &photo("known_counts/skimage_camera.png"));
    // Shapes alternate, so the arena is resized both ways and reused.
    compare(&native, &rten, &group);
    compare(&native, &rten, &odd);
}

/// The AVX-512 engine (its dense tiles, depthwise rows, split-input first layer)
/// gives the AVX2 engine's outputs bit for bit, on 1 and 2 threads.
#[test]
fn avx512_and_avx2_engines_give_equal_bits() {
    let (Some(avx512), Some(avx2)) = (
        Isa::of_kind(IsaKind::Avx512),
        Isa::of_kind(IsaKind::Avx2Fma),
    ) else {
        // Nothing can run the AVX-512 kernels here. A machine that should have them
        // (FACES_REQUIRE_AVX512=1) fails instead of passing without running.
        let required = std::env::var_os("FACES_REQUIRE_AVX512").is_some_and(|v| v == "1");
        assert!(
            !required,
            "FACES_REQUIRE_AVX512=1 but this CPU lacks AVX-512 F + DQ"
        );
        eprintln!("SKIPPED: this CPU lacks AVX-512 F + DQ, so nothing to compare");
        return;
    };
    // An odd size: padding right of and below the image.
    let image = photo("known_counts/fr_two_people.jpg");
    let image = image::imageops::crop_imm(&image, 3, 5, 401, 257).to_image();
    for threads in [1, 2] {
        let wide = NativeNetwork::load_with(model_onnx(), Some(threads), avx512).unwrap();
        let narrow = NativeNetwork::load_with(model_onnx(), Some(threads), avx2).unwrap();
        assert!(
            wide.infer(&image).unwrap() == narrow.infer(&image).unwrap(),
            "{threads} threads"
        );
    }
}

#[test]
fn one_thread_and_scalar_kernels_agree_with_the_best_isa_on_two_threads() {
    let image = photo("known_counts/fr_two_people.jpg");
    let two = NativeNetwork::load(model_onnx(), Some(2)).unwrap();
    let scalar = NativeNetwork::load_with(model_onnx(), Some(1), Isa::scalar()).unwrap();
    let a = two.infer(&image).unwrap();
    let b = scalar.infer(&image).unwrap();
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
    }
}
