//! The face box convention dlib's models expect.

use crate::Face;

/// A face box as the integer rectangle dlib is given (`dlib.rectangle(left, top,
/// right, bottom)`): the right and bottom edges are inside, so a box `x, y, width,
/// height` in whole pixels is `x, y, x + width - 1, y + height - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaceRect {
    pub left: i64,
    pub top: i64,
    pub right: i64,
    pub bottom: i64,
}

impl FaceRect {
    /// The rectangle of a detected face, from its box rounded to whole pixels the
    /// way the service reports it (each of x, y, width, height rounded).
    pub fn of(face: &Face) -> FaceRect {
        let px = |v: f32| v.round() as i64;
        Self::from_box(px(face.x), px(face.y), px(face.width), px(face.height))
    }

    /// The rectangle of a box `x, y, width, height` in whole pixels.
    pub fn from_box(x: i64, y: i64, width: i64, height: i64) -> FaceRect {
        FaceRect {
            left: x,
            top: y,
            right: x + width.max(1) - 1,
            bottom: y + height.max(1) - 1,
        }
    }
}
