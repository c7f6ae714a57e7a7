//! Marking faces on a copy of the image and encoding it.

use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};

use crate::{DetectError, Face};

const RED: Rgb<u8> = Rgb([255, 0, 0]);

/// Line width for an image: 2 px up to 1000 px, then 1 px more per 500 px of the longer side.
pub fn box_thickness(width: u32, height: u32) -> u32 {
    2 + width.max(height).saturating_sub(500) / 500
}

/// Returns a copy of `image` with a red box drawn inside each face's bounds.
pub fn draw_faces(image: &RgbImage, faces: &[Face]) -> RgbImage {
    let mut marked = image.clone();
    let (width, height) = image.dimensions();
    let thickness = box_thickness(width, height);
    for face in faces {
        let left = face.x.round().max(0.0) as u32;
        let top = face.y.round().max(0.0) as u32;
        let right = ((face.x + face.width).round() as u32).min(width);
        let bottom = ((face.y + face.height).round() as u32).min(height);
        if left >= right || top >= bottom {
            continue;
        }
        let t = thickness
            .min((right - left).div_ceil(2))
            .min((bottom - top).div_ceil(2));
        fill(&mut marked, left, top, right, top + t);
        fill(&mut marked, left, bottom - t, right, bottom);
        fill(&mut marked, left, top, left + t, bottom);
        fill(&mut marked, right - t, top, right, bottom);
    }
    marked
}

fn fill(image: &mut RgbImage, left: u32, top: u32, right: u32, bottom: u32) {
    for y in top..bottom {
        for x in left..right {
            image.put_pixel(x, y, RED);
        }
    }
}

/// Encodes as JPEG at quality 90.
pub fn encode_jpeg(image: &RgbImage) -> Result<Vec<u8>, DetectError> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 90)
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
    fn thickness_grows_with_size() {
        assert_eq!(box_thickness(640, 480), 2);
        assert!(box_thickness(4000, 3000) >= 8);
    }
}
