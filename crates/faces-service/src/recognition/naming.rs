//! A stored face, named: the detection's fields, then who it is.

use faces_detect::Embedding;
use serde::Serialize;
use utoipa::ToSchema;

use super::index::Examples;
use crate::submission::FaceBox;

/// A face as the API shows it: the detection's fields, then who it is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FaceView {
    #[serde(flatten)]
    pub face: FaceBox,
    /// The subject of the nearest example within the match distance; `null` if
    /// none is, or the face has no embedding (recognition off when it was processed).
    pub subject: Option<String>,
    /// The distance to that example (Euclidean, 0 = identical); `null` with `subject`.
    #[schema(example = 0.3712)]
    pub distance: Option<f64>,
}

/// The faces of one photo, named: `embeddings` are `(face index, embedding)` of
/// those faces that have one.
pub fn name_faces(
    faces: Vec<FaceBox>,
    embeddings: &[(usize, Embedding)],
    examples: &Examples,
    within: f32,
) -> Vec<FaceView> {
    faces
        .into_iter()
        .enumerate()
        .map(|(index, face)| {
            let nearest = embeddings
                .iter()
                .find(|(i, _)| *i == index)
                .and_then(|(_, embedding)| examples.nearest(embedding, within));
            FaceView {
                face,
                subject: nearest.as_ref().map(|n| n.name.clone()),
                distance: nearest.map(|n| rounded(n.distance)),
            }
        })
        .collect()
}

/// Four decimals, as scores are shown.
pub fn rounded(distance: f32) -> f64 {
    (f64::from(distance) * 10_000.0).round() / 10_000.0
}
