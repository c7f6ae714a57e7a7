//! Faces as boxes, and merging the overlapping candidates of one face into one.

use serde::{Deserialize, Serialize};

/// One detected face, in pixels of the upright image. Coordinates stay floats
/// until the caller rounds them: early rounding costs accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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
    pub(crate) fn to_image(self, scale: f32, offset_x: f32, offset_y: f32) -> Face {
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

    /// The same face in the image mirrored left-right (`width`: the image's width):
    /// the box mirrored, and the landmarks mirrored with left and right swapped, so
    /// the right eye stays the right eye.
    pub(crate) fn mirrored(&self, width: f32) -> Face {
        let point = |[x, y]: [f32; 2]| [width - x, y];
        let l = self.landmarks;
        Face {
            x: width - self.x - self.width,
            landmarks: [
                point(l[1]),
                point(l[0]),
                point(l[2]),
                point(l[4]),
                point(l[3]),
            ],
            ..*self
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

/// How the overlapping candidates of one face become one box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suppression {
    /// Greedy non-maximum suppression: the best-scoring box of each group stays as it is.
    Hard,
    /// Box voting (RetinaFace, S3FD): the best box of each group is replaced by the
    /// score-weighted mean of the group's boxes and landmarks, its score kept. The
    /// network's neighbouring anchors each see the face slightly off; their mean sits
    /// closer to it than any one of them.
    #[default]
    Vote,
}

impl std::str::FromStr for Suppression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hard" => Ok(Suppression::Hard),
            "vote" => Ok(Suppression::Vote),
            other => Err(format!("unknown suppression {other:?}: use vote or hard")),
        }
    }
}

/// Groups `items` greedily, best face first: each group is the best face left and
/// every face left overlapping it by more than `iou_threshold`. Calls `merge` with
/// each group, best first, and returns what it gives, by descending score.
pub(crate) fn groups<T: Copy, R>(
    mut items: Vec<T>,
    face: impl Fn(&T) -> &Face,
    iou_threshold: f32,
    mut merge: impl FnMut(&[T]) -> R,
) -> Vec<R> {
    items.sort_by(|a, b| face(b).score.total_cmp(&face(a).score));
    let mut out = Vec::with_capacity(items.len().min(256));
    let mut group = Vec::new();
    while let Some(&best) = items.first() {
        let best = *face(&best);
        group.clear();
        // `retain` keeps the order, so what is left stays sorted by score.
        items.retain(|item| {
            let member = face(item).iou(&best) > iou_threshold;
            if member {
                group.push(*item);
            }
            !member
        });
        out.push(merge(&group));
    }
    out
}

/// Boxes of a group that take part in a vote overlap its best box by at least this
/// much. Boxes overlapping it less (down to the suppression threshold) are often a
/// neighbour's face or part of one, and would drag the mean off; they are only dropped.
const VOTE_IOU: f32 = 0.7;

/// The score-weighted mean of the boxes and landmarks of `group` (best first) that
/// agree with its best box, with the best box's score.
pub(crate) fn vote<T>(group: &[T], face: impl Fn(&T) -> &Face) -> Face {
    let best = *face(&group[0]);
    let voters = || group.iter().map(&face).filter(|f| f.iou(&best) >= VOTE_IOU);
    let total: f32 = voters().map(|f| f.score).sum();
    if total <= 0.0 {
        return best;
    }
    let mean =
        |value: &dyn Fn(&Face) -> f32| voters().map(|f| f.score * value(f)).sum::<f32>() / total;
    let mut landmarks = [[0.0; 2]; 5];
    for (k, point) in landmarks.iter_mut().enumerate() {
        *point = [mean(&|f| f.landmarks[k][0]), mean(&|f| f.landmarks[k][1])];
    }
    Face {
        x: mean(&|f| f.x),
        y: mean(&|f| f.y),
        width: mean(&|f| f.width),
        height: mean(&|f| f.height),
        score: best.score,
        landmarks,
    }
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
    fn groups_hold_the_best_face_and_its_overlaps() {
        let faces = vec![
            face(1.0, 1.0, 10.0, 0.6),
            face(0.0, 0.0, 10.0, 0.9),
            face(50.0, 50.0, 10.0, 0.7),
        ];
        let groups = groups(
            faces,
            |f| f,
            0.4,
            |g| g.iter().map(|f| f.score).collect::<Vec<_>>(),
        );
        assert_eq!(groups, vec![vec![0.9, 0.6], vec![0.7]]);
    }

    #[test]
    fn a_vote_averages_agreeing_boxes_by_score_and_ignores_mere_overlaps() {
        let best = face(10.0, 10.0, 20.0, 0.9);
        let agreeing = face(12.0, 10.0, 20.0, 0.3);
        // IoU 0.54 with the best box: in its group at 0.4, but no voter.
        let neighbour = face(16.0, 10.0, 20.0, 0.8);
        let voted = vote(&[best, neighbour, agreeing], |f| f);
        assert!((voted.x - (10.0 * 0.9 + 12.0 * 0.3) / 1.2).abs() < 1e-5);
        assert_eq!((voted.y, voted.width, voted.score), (10.0, 20.0, 0.9));
        assert_eq!(vote(&[best], |f| f), best);
    }

    #[test]
    fn mirroring_twice_is_identity_and_keeps_eyes_sides() {
        let mut f = face(10.0, 20.0, 30.0, 0.5);
        f.landmarks = [
            [15.0, 25.0],
            [35.0, 25.0],
            [25.0, 35.0],
            [18.0, 42.0],
            [32.0, 42.0],
        ];
        let m = f.mirrored(100.0);
        assert_eq!((m.x, m.y, m.width), (60.0, 20.0, 30.0));
        // The right eye (image left) is still the landmark on the image's left.
        assert_eq!(m.landmarks[0], [65.0, 25.0]);
        assert_eq!(m.landmarks[1], [85.0, 25.0]);
        assert!(m.landmarks[0][0] < m.landmarks[1][0]);
        assert_eq!(m.mirrored(100.0), f);
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
