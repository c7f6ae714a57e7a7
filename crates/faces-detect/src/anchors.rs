//! The network's anchors and how its raw outputs become faces: for each feature
//! map stride, two square anchors per cell; box and landmark offsets relative to
//! the anchor, scaled by the variances the model was trained with.

use crate::{DetectError, Face};

/// Feature map strides and the two anchor sizes of each.
const ANCHORS: [(usize, [f32; 2]); 3] =
    [(8, [16.0, 32.0]), (16, [64.0, 128.0]), (32, [256.0, 512.0])];
const CENTER_VARIANCE: f32 = 0.1;
const SIZE_VARIANCE: f32 = 0.2;

/// Every candidate scoring at least `threshold` in the outputs of one pass over a
/// `padded_w` x `padded_h` input (boxes, scores, landmarks, flattened over the
/// anchors in stride, row, column, size order), in input pixels.
pub(crate) fn decode(
    [boxes, scores, landmarks]: [Vec<f32>; 3],
    (padded_w, padded_h): (usize, usize),
    threshold: f32,
) -> Result<Vec<Face>, DetectError> {
    let inference = |e: &dyn std::fmt::Display| DetectError::Inference(e.to_string());
    let mut faces = Vec::new();
    let mut index = 0;
    for (stride, sizes) in ANCHORS {
        let (rows, cols) = (padded_h / stride, padded_w / stride);
        for row in 0..rows {
            for col in 0..cols {
                for size in sizes {
                    let i = index;
                    index += 1;
                    let score = *scores
                        .get(i * 2 + 1)
                        .ok_or_else(|| inference(&"short score output"))?;
                    if score < threshold {
                        continue;
                    }
                    let cx = (col as f32 + 0.5) * stride as f32;
                    let cy = (row as f32 + 0.5) * stride as f32;
                    let b = &boxes[i * 4..i * 4 + 4];
                    let l = &landmarks[i * 10..i * 10 + 10];
                    let center_x = cx + b[0] * CENTER_VARIANCE * size;
                    let center_y = cy + b[1] * CENTER_VARIANCE * size;
                    let w = size * (b[2] * SIZE_VARIANCE).exp();
                    let h = size * (b[3] * SIZE_VARIANCE).exp();
                    let point = |k: usize| {
                        [
                            cx + l[2 * k] * CENTER_VARIANCE * size,
                            cy + l[2 * k + 1] * CENTER_VARIANCE * size,
                        ]
                    };
                    faces.push(Face {
                        x: center_x - w / 2.0,
                        y: center_y - h / 2.0,
                        width: w,
                        height: h,
                        score,
                        landmarks: [point(0), point(1), point(2), point(3), point(4)],
                    });
                }
            }
        }
    }
    if index * 2 != scores.len() {
        return Err(inference(&format!(
            "expected {index} anchors, model gave {}",
            scores.len() / 2
        )));
    }
    Ok(faces)
}
