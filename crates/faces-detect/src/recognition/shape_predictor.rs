//! dlib's shape predictor (Kazemi and Sullivan's ensemble of regression trees,
//! `dlib/image_processing/shape_predictor.h`) for the 5-point model: the two corners
//! of each eye and the bottom of the nose, found from a face box. It runs in the
//! same precision as dlib (f32 shapes, f64 transforms, integer pixel intensities),
//! so that for the same box it puts the same points on the same pixels.

use image::RgbImage;

use super::dlib_format::{Reader, Result};
use super::rect::FaceRect;
use super::transform::{similarity, Point};

/// One split: go left when `feature[a] - feature[b] > threshold`.
struct Split {
    a: u32,
    b: u32,
    threshold: f32,
}

/// A complete binary tree: `splits` in breadth-first order, then one shape delta
/// per leaf (`2 * parts` floats each) in `leaves`.
struct Tree {
    splits: Vec<Split>,
    leaves: Vec<f32>,
}

/// One cascade level: its trees, and the pixels its features read, each as an
/// anchor landmark of the mean shape and an offset from it.
struct Cascade {
    trees: Vec<Tree>,
    anchors: Vec<usize>,
    deltas: Vec<[f32; 2]>,
}

pub(super) struct ShapePredictor {
    /// The mean shape in the unit box: x0, y0, x1, y1, ...
    initial: Vec<f32>,
    cascades: Vec<Cascade>,
}

impl ShapePredictor {
    /// Reads `shape_predictor_5_face_landmarks.dat` (or any dlib shape predictor).
    pub(super) fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        r.expect_int(1, "shape predictor version")?;
        let (rows, cols, initial) = r.float_matrix()?;
        if cols != 1 || rows == 0 || rows % 2 != 0 {
            return Err(r.error("initial shape is not a column of x, y pairs"));
        }
        let shape_len = rows;
        let cascade_count = r.count()?;
        let mut forests = Vec::with_capacity(cascade_count);
        for _ in 0..cascade_count {
            let tree_count = r.count()?;
            let mut trees = Vec::with_capacity(tree_count);
            for _ in 0..tree_count {
                let split_count = r.count()?;
                let splits = (0..split_count)
                    .map(|_| {
                        let a = r.count()?;
                        let b = r.count()?;
                        let threshold = r.float()?;
                        let idx = |v: usize| u32::try_from(v).map_err(|_| r.error("split index"));
                        Ok(Split {
                            a: idx(a)?,
                            b: idx(b)?,
                            threshold,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let leaf_count = r.count()?;
                if leaf_count != split_count + 1 {
                    return Err(r.error("a tree's leaves are not its splits + 1"));
                }
                let mut leaves = Vec::with_capacity(leaf_count * shape_len);
                for _ in 0..leaf_count {
                    let (rows, cols, values) = r.float_matrix()?;
                    if rows != shape_len || cols != 1 {
                        return Err(r.error("a leaf's size is not the shape's"));
                    }
                    leaves.extend(values);
                }
                trees.push(Tree { splits, leaves });
            }
            forests.push(trees);
        }
        let anchor_sets = r.count()?;
        if anchor_sets != cascade_count {
            return Err(r.error("anchor sets do not match the cascades"));
        }
        let anchors: Vec<Vec<usize>> = (0..anchor_sets)
            .map(|_| {
                let n = r.count()?;
                (0..n).map(|_| r.count()).collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        let delta_sets = r.count()?;
        if delta_sets != cascade_count {
            return Err(r.error("delta sets do not match the cascades"));
        }
        let deltas: Vec<Vec<[f32; 2]>> = (0..delta_sets)
            .map(|_| {
                let n = r.count()?;
                (0..n)
                    .map(|_| Ok([r.float()?, r.float()?]))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        if !r.at_end() {
            return Err(r.error("bytes after the shape predictor"));
        }
        let parts = shape_len / 2;
        let mut cascades = Vec::with_capacity(cascade_count);
        for ((trees, anchors), deltas) in forests.into_iter().zip(anchors).zip(deltas) {
            let features = anchors.len();
            if deltas.len() != features || anchors.iter().any(|&a| a >= parts) {
                return Err(r.error("feature pixels do not match the shape"));
            }
            let fits = |t: &Tree| {
                t.splits
                    .iter()
                    .all(|s| (s.a as usize) < features && (s.b as usize) < features)
            };
            if !trees.iter().all(fits) {
                return Err(r.error("a split reads a feature that does not exist"));
            }
            cascades.push(Cascade {
                trees,
                anchors,
                deltas,
            });
        }
        Ok(Self { initial, cascades })
    }

    pub(super) fn parts(&self) -> usize {
        self.initial.len() / 2
    }

    /// The landmarks of the face in `rect`, in whole pixels as dlib returns them.
    pub(super) fn predict(&self, image: &RgbImage, rect: FaceRect) -> Vec<[i64; 2]> {
        let to_image = unnormalizing(rect);
        let mut shape = self.initial.clone();
        let mut features = Vec::new();
        for cascade in &self.cascades {
            self.features(image, &to_image, &shape, cascade, &mut features);
            for tree in &cascade.trees {
                let mut i = 0;
                while i < tree.splits.len() {
                    let s = &tree.splits[i];
                    i = if features[s.a as usize] - features[s.b as usize] > s.threshold {
                        2 * i + 1
                    } else {
                        2 * i + 2
                    };
                }
                let leaf = i - tree.splits.len();
                let delta = &tree.leaves[leaf * shape.len()..][..shape.len()];
                for (v, d) in shape.iter_mut().zip(delta) {
                    *v += d;
                }
            }
        }
        shape
            .chunks_exact(2)
            .map(|p| round_point(to_image(f64::from(p[0]), f64::from(p[1]))))
            .collect()
    }

    /// The intensities of this cascade's feature pixels, placed relative to the
    /// current shape (`extract_feature_pixel_values`).
    fn features(
        &self,
        image: &RgbImage,
        to_image: &impl Fn(f64, f64) -> Point,
        shape: &[f32],
        cascade: &Cascade,
        out: &mut Vec<f32>,
    ) {
        let point = |s: &[f32], i: usize| [f64::from(s[2 * i]), f64::from(s[2 * i + 1])];
        let from: Vec<Point> = (0..self.parts()).map(|i| point(&self.initial, i)).collect();
        let to: Vec<Point> = (0..self.parts()).map(|i| point(shape, i)).collect();
        // Only the rotation and scale, cast to f32 as dlib does.
        let m = similarity(&from, &to).m.map(|row| row.map(|v| v as f32));
        let (w, h) = (i64::from(image.width()), i64::from(image.height()));
        out.clear();
        out.extend(cascade.anchors.iter().zip(&cascade.deltas).map(|(&a, d)| {
            let x = m[0][0] * d[0] + m[0][1] * d[1] + shape[2 * a];
            let y = m[1][0] * d[0] + m[1][1] * d[1] + shape[2 * a + 1];
            let [px, py] = round_point(to_image(f64::from(x), f64::from(y)));
            if (0..w).contains(&px) && (0..h).contains(&py) {
                let p = image.get_pixel(px as u32, py as u32).0;
                // dlib's grey value of an RGB pixel: the integer mean.
                ((u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2])) / 3) as f32
            } else {
                0.0
            }
        }));
    }
}

/// The map from the unit box to `rect`'s corners (dlib's rectangles include their
/// right and bottom edges, so the unit box spans `right - left` pixels).
fn unnormalizing(rect: FaceRect) -> impl Fn(f64, f64) -> Point {
    let (l, t) = (rect.left as f64, rect.top as f64);
    let (w, h) = (
        (rect.right - rect.left) as f64,
        (rect.bottom - rect.top) as f64,
    );
    move |u, v| [w * u + l, h * v + t]
}

/// dlib's conversion of a point to whole pixels: each coordinate rounded half up.
pub(super) fn round_point(p: Point) -> [i64; 2] {
    [(p[0] + 0.5).floor() as i64, (p[1] + 0.5).floor() as i64]
}
