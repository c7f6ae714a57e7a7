//! Faces as boxes, and non-maximum suppression over them.

use serde::{Deserialize, Serialize};

/// One detected face, in pixels of the upright image. Coordinates stay floats
/// until the caller rounds them: early rounding costs accuracy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
    /// Confidence in 0..1.
    pub score: f32,
    /// Right eye, left eye, nose, right and left mouth corner, as (x, y).
    pub landmarks: [[f32; 2]; 5],
}

impl Face {
    fn area(&self) -> f32 {
        self.width.max(0.0) * self.height.max(0.0)
    }

    /// Intersection over union of two boxes.
    pub fn iou(&self, other: &Face) -> f32 {
        let left = self.x.max(other.x);
        let top = self.y.max(other.y);
        let right = (self.x + self.width).min(other.x + other.width);
        let bottom = (self.y + self.height).min(other.y + other.height);
        let intersection = (right - left).max(0.0) * (bottom - top).max(0.0);
        let union = self.area() + other.area() - intersection;
        if union <= 0.0 {
            0.0
        } else {
            intersection / union
        }
    }

    /// Maps a face found in a scaled, offset view back to the original image.
    pub(crate) fn to_image(&self, scale: f32, offset_x: f32, offset_y: f32) -> Face {
        let map = |x: f32, offset: f32| x / scale + offset;
        Face {
            x: map(self.x, offset_x),
            y: map(self.y, offset_y),
            width: self.width / scale,
            height: self.height / scale,
            score: self.score,
            landmarks: self
                .landmarks
                .map(|[x, y]| [map(x, offset_x), map(y, offset_y)]),
        }
    }

    /// Clips the box to the image; returns `None` if nothing is left of it.
    pub(crate) fn clipped(mut self, width: u32, height: u32) -> Option<Face> {
        let (w, h) = (width as f32, height as f32);
        let right = (self.x + self.width).min(w);
        let bottom = (self.y + self.height).min(h);
        self.x = self.x.max(0.0);
        self.y = self.y.max(0.0);
        self.width = right - self.x;
        self.height = bottom - self.y;
        (self.width >= 1.0 && self.height >= 1.0).then_some(self)
    }
}

/// Greedy non-maximum suppression: keeps the best-scoring face of each group
/// overlapping by more than `iou_threshold`. Returns faces by descending score.
pub fn nms(mut faces: Vec<Face>, iou_threshold: f32) -> Vec<Face> {
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Face> = Vec::with_capacity(faces.len().min(256));
    for face in faces {
        if kept.iter().all(|k| k.iou(&face) <= iou_threshold) {
            kept.push(face);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, size: f32, score: f32) -> Face {
        Face {
            x,
            y,
            width: size,
            height: size,
            score,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        assert_eq!(
            face(0.0, 0.0, 10.0, 1.0).iou(&face(0.0, 0.0, 10.0, 1.0)),
            1.0
        );
        assert_eq!(
            face(0.0, 0.0, 10.0, 1.0).iou(&face(20.0, 0.0, 10.0, 1.0)),
            0.0
        );
        let half = face(0.0, 0.0, 10.0, 1.0).iou(&face(5.0, 0.0, 10.0, 1.0));
        assert!((half - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_best_of_overlapping_and_all_of_separate() {
        let kept = nms(
            vec![
                face(1.0, 1.0, 10.0, 0.6),
                face(0.0, 0.0, 10.0, 0.9),
                face(50.0, 50.0, 10.0, 0.7),
            ],
            0.4,
        );
        let scores: Vec<f32> = kept.iter().map(|f| f.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
    }

    #[test]
    fn mapping_back_and_clipping() {
        let f = face(10.0, 20.0, 30.0, 0.5).to_image(2.0, 100.0, 0.0);
        assert_eq!((f.x, f.y, f.width), (105.0, 10.0, 15.0));
        let c = face(-5.0, -5.0, 10.0, 0.5).clipped(100, 100).unwrap();
        assert_eq!((c.x, c.y, c.width, c.height), (0.0, 0.0, 5.0, 5.0));
        assert!(face(200.0, 0.0, 10.0, 0.5).clipped(100, 100).is_none());
    }
}
