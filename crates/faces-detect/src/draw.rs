//! Marking faces on a copy of the image and encoding it.

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};

use crate::{DetectError, Face};

const RED: Rgb<u8> = Rgb([255, 0, 0]);

/// Line width for an image: 2 px up to 1000 px, then 1 px more per 500 px of the
/// longer side, rounded up to even (see [`draw_faces`]).
pub fn box_thickness(width: u32, height: u32) -> u32 {
    (2 + width.max(height).saturating_sub(500) / 500).next_multiple_of(2)
}

/// Returns a copy of `image` with a red box drawn inside each face's bounds. Lines
/// start and end on even pixels and are an even number of pixels wide, so that
/// each covers whole 2x2 chroma blocks of the 4:2:0 JPEG and stays pure red.
pub fn draw_faces(image: &RgbImage, faces: &[Face]) -> RgbImage {
    let mut marked = image.clone();
    mark_faces(&mut marked, faces);
    marked
}

/// [`draw_faces`] on `image` itself, for a caller that no longer needs the
/// unmarked pixels (a service worker: one image's worth less memory per job).
pub fn mark_faces(marked: &mut RgbImage, faces: &[Face]) {
    let (width, height) = marked.dimensions();
    let thickness = box_thickness(width, height);
    for face in faces {
        let left = (face.x.round().max(0.0) as u32).next_multiple_of(2);
        let top = (face.y.round().max(0.0) as u32).next_multiple_of(2);
        let right = ((face.x + face.width).round() as u32).min(width) & !1;
        let bottom = ((face.y + face.height).round() as u32).min(height) & !1;
        if left >= right || top >= bottom {
            continue;
        }
        let t = thickness
            .min((right - left).div_ceil(2))
            .min((bottom - top).div_ceil(2));
        fill(marked, left, top, right, top + t);
        fill(marked, left, bottom - t, right, bottom);
        fill(marked, left, top, left + t, bottom);
        fill(marked, right - t, top, right, bottom);
    }
}

fn fill(image: &mut RgbImage, left: u32, top: u32, right: u32, bottom: u32) {
    for y in top..bottom {
        for x in left..right {
            image.put_pixel(x, y, RED);
        }
    }
}

/// JPEG quality of marked copies.
const QUALITY: u8 = 90;

/// Encodes as JPEG at quality 90 with 4:2:0 chroma, as cameras write photos: half
/// the entropy coding of 4:4:4, and the boxes stay red (they are at least 2 px wide).
pub fn encode_jpeg(image: &RgbImage) -> Result<Vec<u8>, DetectError> {
    let (Ok(width), Ok(height)) = (u16::try_from(image.width()), u16::try_from(image.height()))
    else {
        return Err(DetectError::Encode(format!(
            "{}x{} is larger than JPEG allows (65535 px a side)",
            image.width(),
            image.height()
        )));
    };
    let mut out = Vec::with_capacity(image.as_raw().len() / 8);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, QUALITY);
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::R_4_2_0);
    encoder
        .encode(image.as_raw(), width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| DetectError::Encode(e.to_string()))?;
    Ok(out)
}

/// The encoder used before, `image`'s, kept to compare speed and output in tests
/// and benchmarks.
pub fn encode_jpeg_reference(image: &RgbImage) -> Result<Vec<u8>, DetectError> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, QUALITY)
        .encode_image(image)
        .map_err(|e| DetectError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_is_red_inside_and_untouched_outside() {
        let image = RgbImage::from_pixel(100, 100, Rgb([0, 0, 255]));
        let face = Face {
            x: 10.0,
            y: 10.0,
            width: 50.0,
            height: 40.0,
            score: 0.9,
            landmarks: [[0.0; 2]; 5],
        };
        let marked = draw_faces(&image, &[face]);
        assert_eq!(marked.get_pixel(10, 10), &RED);
        assert_eq!(marked.get_pixel(11, 30), &RED, "at least 2 px thick");
        assert_eq!(marked.get_pixel(59, 49), &RED, "inside the box");
        assert_eq!(
            marked.get_pixel(60, 50),
            &Rgb([0, 0, 255]),
            "outside untouched"
        );
        assert_eq!(
            marked.get_pixel(30, 30),
            &Rgb([0, 0, 255]),
            "interior untouched"
        );
        assert_eq!(marked.dimensions(), image.dimensions());
    }

    #[test]
    fn encoded_boxes_stay_red_and_the_photo_close_to_the_old_encoder() {
        // A photo-like gradient, and a face on odd pixels: its box is drawn on the even
        // ones inside (52..152 x 34..110), whole chroma blocks.
        let image = RgbImage::from_fn(331, 217, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        });
        let face = Face {
            x: 51.0,
            y: 33.0,
            width: 101.0,
            height: 77.0,
            score: 0.9,
            landmarks: [[0.0; 2]; 5],
        };
        let marked = draw_faces(&image, &[face]);
        let decode = |bytes: Vec<u8>| image::load_from_memory(&bytes).expect("a JPEG").to_rgb8();
        let new = decode(encode_jpeg(&marked).unwrap());
        let old = decode(encode_jpeg_reference(&marked).unwrap());
        assert_eq!(new.dimensions(), marked.dimensions());
        for (x, y) in [
            (52, 60),
            (53, 60),
            (100, 34),
            (100, 35),
            (151, 80),
            (100, 109),
        ] {
            let [r, g, b] = new.get_pixel(x, y).0;
            assert!(r > 180 && g < 90 && b < 90, "({x}, {y}) is {:?}", [r, g, b]);
        }
        let squared: f64 = new
            .as_raw()
            .iter()
            .zip(old.as_raw())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum();
        let psnr = 10.0 * (255.0f64.powi(2) / (squared / new.as_raw().len() as f64)).log10();
        assert!(psnr > 30.0, "PSNR to the old encoder {psnr:.1} dB");
    }

    #[test]
    fn thickness_grows_with_size() {
        assert_eq!(box_thickness(640, 480), 2);
        assert!(box_thickness(4000, 3000) >= 8);
    }
}
