//! How a processed copy shows the faces found: a red box (the reference apps' copy),
//! or the face made unrecognisable (blurred or pixelated), or not at all.

use std::str::FromStr;

use image::{imageops, RgbImage};
use serde::{Deserialize, Serialize};

use crate::draw::mark_faces;
use crate::Face;

/// What the processed copy does to each face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// A red box inside the face's bounds.
    #[default]
    Box,
    /// The face's [`region`] blurred past recognition.
    Blur,
    /// The face's [`region`] in coarse blocks of its mean colours.
    Pixelate,
    /// Nothing: the upright image as it is.
    None,
}

impl Mark {
    pub const ALL: [Mark; 4] = [Mark::Box, Mark::Blur, Mark::Pixelate, Mark::None];

    pub fn as_str(self) -> &'static str {
        match self {
            Mark::Box => "box",
            Mark::Blur => "blur",
            Mark::Pixelate => "pixelate",
            Mark::None => "none",
        }
    }
}

impl FromStr for Mark {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mark::ALL
            .into_iter()
            .find(|mark| mark.as_str() == s.trim())
            .ok_or_else(|| format!("unknown mark {s:?}: use box, blur, pixelate or none"))
    }
}

/// Each axis of a face's region is this many times its box's side: enough to take in
/// hair line, ears and chin, which the box (eyebrows to chin) leaves out.
pub const REGION_SCALE: f32 = 1.4;

/// The pixels a face's anonymisation changes: the ellipse centred on its box with
/// axes [`REGION_SCALE`] times the box's sides, within the image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    /// The ellipse's bounding rectangle, clamped to the image: columns `left..right`,
    /// rows `top..bottom`.
    pub left: u32,
    pub top: u32,
    pub right: u32,
    pub bottom: u32,
    centre: (f32, f32),
    radii: (f32, f32),
}

impl Region {
    /// Whether pixel (x, y), by its centre, is inside the ellipse.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        let dx = (x as f32 + 0.5 - self.centre.0) / self.radii.0;
        let dy = (y as f32 + 0.5 - self.centre.1) / self.radii.1;
        dx * dx + dy * dy <= 1.0
    }
}

/// `face`'s region in a `width` x `height` image; `None` where it covers no pixel.
pub fn region(face: &Face, width: u32, height: u32) -> Option<Region> {
    let centre = (face.x + face.width / 2.0, face.y + face.height / 2.0);
    let radii = (
        face.width * REGION_SCALE / 2.0,
        face.height * REGION_SCALE / 2.0,
    );
    if !(radii.0 >= 0.5 && radii.1 >= 0.5) {
        return None;
    }
    let clamp = |v: f32, max: u32| (v.max(0.0) as u32).min(max);
    let region = Region {
        left: clamp((centre.0 - radii.0).floor(), width),
        top: clamp((centre.1 - radii.1).floor(), height),
        right: clamp((centre.0 + radii.0).ceil(), width),
        bottom: clamp((centre.1 + radii.1).ceil(), height),
        centre,
        radii,
    };
    (region.left < region.right && region.top < region.bottom).then_some(region)
}

/// Applies `mark` to every face on `image` itself.
pub fn apply_mark(image: &mut RgbImage, faces: &[Face], mark: Mark) {
    match mark {
        Mark::Box => mark_faces(image, faces),
        Mark::None => {}
        Mark::Blur | Mark::Pixelate => {
            let (width, height) = image.dimensions();
            for region in faces.iter().filter_map(|f| region(f, width, height)) {
                let changed = if mark == Mark::Blur {
                    blurred(image, &region)
                } else {
                    pixelated(image, &region)
                };
                for y in region.top..region.bottom {
                    for x in region.left..region.right {
                        if region.contains(x, y) {
                            let pixel = *changed.get_pixel(x - region.left, y - region.top);
                            image.put_pixel(x, y, pixel);
                        }
                    }
                }
            }
        }
    }
}

/// The region's rectangle, blurred with a standard deviation of a sixth of the face
/// region's larger axis: features (eyes, mouth) spread over the whole face.
fn blurred(image: &RgbImage, region: &Region) -> RgbImage {
    let crop = rectangle(image, region);
    let sigma = (region.radii.0.max(region.radii.1) / 3.0).max(1.0);
    imageops::fast_blur(&crop, sigma)
}

/// Pixels per block: the region is about 6 blocks across its larger axis.
const PIXELATE_BLOCKS: f32 = 6.0;

/// The region's rectangle in square blocks, each its pixels' mean colour.
fn pixelated(image: &RgbImage, region: &Region) -> RgbImage {
    let mut crop = rectangle(image, region);
    let side = 2.0 * region.radii.0.max(region.radii.1);
    let block = ((side / PIXELATE_BLOCKS).ceil() as u32).max(2);
    let (width, height) = crop.dimensions();
    for top in (0..height).step_by(block as usize) {
        for left in (0..width).step_by(block as usize) {
            let (right, bottom) = ((left + block).min(width), (top + block).min(height));
            let mut sum = [0u64; 3];
            for y in top..bottom {
                for x in left..right {
                    for (s, &v) in sum.iter_mut().zip(&crop.get_pixel(x, y).0) {
                        *s += u64::from(v);
                    }
                }
            }
            let count = u64::from((right - left) * (bottom - top));
            let mean = image::Rgb(sum.map(|s| ((s + count / 2) / count) as u8));
            for y in top..bottom {
                for x in left..right {
                    crop.put_pixel(x, y, mean);
                }
            }
        }
    }
    crop
}

fn rectangle(image: &RgbImage, region: &Region) -> RgbImage {
    imageops::crop_imm(
        image,
        region.left,
        region.top,
        region.right - region.left,
        region.bottom - region.top,
    )
    .to_image()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn face(x: f32, y: f32, width: f32, height: f32) -> Face {
        Face {
            x,
            y,
            width,
            height,
            score: 0.9,
            landmarks: [[0.0; 2]; 5],
        }
    }

    /// A noisy image: any change to a pixel shows.
    fn noise(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            let v = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 7;
            Rgb([v as u8, (v >> 8) as u8, (v >> 16) as u8])
        })
    }

    #[test]
    fn marks_parse_from_their_names_only() {
        for mark in Mark::ALL {
            assert_eq!(mark.as_str().parse::<Mark>(), Ok(mark));
        }
        assert!("boxes".parse::<Mark>().is_err());
        assert!("".parse::<Mark>().is_err());
    }

    #[test]
    fn only_the_ellipse_changes_and_all_of_it_does() {
        let original = noise(200, 160);
        let faces = [face(40.0, 30.0, 50.0, 60.0), face(150.0, 120.0, 60.0, 50.0)];
        for mark in [Mark::Blur, Mark::Pixelate] {
            let mut marked = original.clone();
            apply_mark(&mut marked, &faces, mark);
            let regions: Vec<Region> = faces.iter().filter_map(|f| region(f, 200, 160)).collect();
            let (mut inside, mut changed) = (0, 0);
            for (x, y, pixel) in marked.enumerate_pixels() {
                if regions.iter().any(|r| r.contains(x, y)) {
                    inside += 1;
                    changed += usize::from(pixel != original.get_pixel(x, y));
                } else {
                    assert_eq!(pixel, original.get_pixel(x, y), "{mark:?} at ({x}, {y})");
                }
            }
            // Noise averaged over a block or a blur rarely equals one of its pixels.
            assert!(
                changed * 100 >= inside * 95,
                "{mark:?}: {changed} of {inside}"
            );
        }
    }

    #[test]
    fn the_region_is_larger_than_the_box_and_clamped_to_the_image() {
        let r = region(&face(10.0, 20.0, 100.0, 50.0), 1000, 1000).unwrap();
        assert_eq!((r.left, r.top, r.right, r.bottom), (0, 10, 130, 80));
        assert!(r.contains(60, 45) && r.contains(0, 45) && !r.contains(0, 10));
        let edge = region(&face(-30.0, 950.0, 60.0, 60.0), 1000, 1000).unwrap();
        assert_eq!((edge.left, edge.bottom), (0, 1000));
        assert!(region(&face(5.0, 5.0, 0.2, 10.0), 100, 100).is_none());
        assert!(region(&face(500.0, 5.0, 20.0, 10.0), 100, 100).is_none());
    }

    #[test]
    fn none_leaves_the_image_and_box_draws_boxes() {
        let original = noise(64, 64);
        let faces = [face(10.0, 10.0, 30.0, 30.0)];
        let mut unmarked = original.clone();
        apply_mark(&mut unmarked, &faces, Mark::None);
        assert_eq!(unmarked, original);
        let mut boxed = original.clone();
        apply_mark(&mut boxed, &faces, Mark::Box);
        assert_eq!(boxed.get_pixel(10, 10), &Rgb([255, 0, 0]));
    }
}
