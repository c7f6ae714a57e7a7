//! CompreFace's verification, as compreface-sdk calls it: the faces of a photo
//! against one stored example (`POST /api/v1/recognition/faces/<image_id>/verify`,
//! the SDK's `get_face_collection().verify`) and the one face of a source photo
//! against the faces of a target photo (`POST /api/v1/verification/verify`, its
//! verification service). Every face gets a similarity, however far
//! ([`scale::verification`]): the client decides. Nothing is stored.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use faces_detect::Embedding;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::compreface::{
    code, detect_now, detected, no_face, photo_request, photos_request, CompreFaceError,
    CompreFaceFace, CompreFaceFaces, CompreFacePlugins, Matches,
};
use super::compreface_faces::{answer, database};
use super::detection::{self, Found};
use super::scale;
use crate::state::AppState;

/// Verify the faces of a photo against one stored example face.
///
/// Each face found, the largest first with `limit`, with its similarity to example
/// `image_id` (CompreFace's `image_id` is our example's id).
#[utoipa::path(
    post,
    operation_id = "compreface_verify_example",
    path = "/api/v1/recognition/faces/{image_id}/verify",
    tag = "peers",
    request_body(content = super::compreface::CompreFaceForm, content_type = "multipart/form-data"),
    params(
        ("image_id" = String, Path, description = "The example's id"),
        ("x-api-key" = Option<String>, Header, description = "One of the `--api-key` keys; needed only when any is set"),
        ("limit" = Option<u64>, Query, description = "Faces answered at most, the largest first; 0 (default) for all"),
        ("det_prob_threshold" = Option<f64>, Query, minimum = 0, maximum = 1, description = "Minimum face probability on CompreFace's scale; default 0.8"),
        ("face_plugins" = Option<String>, Query, description = "Comma-separated; `landmarks` adds each face's 5 landmarks, `calculator` its embedding; others are ignored"),
        ("status" = Option<bool>, Query, description = "`true` adds `execution_time` per face and `plugins_versions`"),
    ),
    responses(
        (status = 200, description = "Each face with its `similarity` to the example", body = CompreFaceFaces),
        (status = 400, description = "Code 28: no face; 26: a bad parameter; 34: no `file`; 21: not an image or not Base64; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 44: no such example; 10: an unknown key", body = CompreFaceError),
        (status = 413, description = "Code 26: over the byte limit, the pixel limit or the memory budget", body = CompreFaceError),
        (status = 503, description = "Code 41: the node is busy; code 0: the database is unreachable", body = CompreFaceError),
    ),
)]
pub async fn verify_example(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let verified = async {
        let _slot = detection::enter(&state, &request)?;
        let (image, options) = photo_request(&state, request, "Recognition").await?;
        let not_found = || {
            CompreFaceError::new(
                StatusCode::NOT_FOUND,
                code::IMAGE_NOT_FOUND,
                format!("Image {id} not found"),
            )
        };
        let example = Uuid::parse_str(&id).map_err(|_| not_found())?;
        let (example, _) = state
            .db
            .example(example)
            .await
            .map_err(database)?
            .ok_or_else(not_found)?;
        let found = detect_now(&state, image, &options, true).await?;
        let similarities = similarities(&state, &found, &example.embedding);
        Ok(detected(
            found,
            options,
            state.config.score_threshold,
            Matches::Similarity(similarities),
        ))
    };
    answer(verified.await, StatusCode::OK)
}

/// The verification service's answer: one entry.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceVerification {
    result: [CompreFaceVerified; 1],
}

/// The source photo's face and each face of the target photo with its similarity.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceVerified {
    source_image_face: CompreFaceFace,
    face_matches: Vec<CompreFaceFace>,
    /// With `status=true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    plugins_versions: Option<CompreFacePlugins>,
}

/// The verification service's form: two photos.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CompreFaceVerifyForm {
    /// A photo of exactly one face.
    #[schema(value_type = String, format = Binary)]
    source_image: Vec<u8>,
    /// The photo whose faces are compared with it.
    #[schema(value_type = String, format = Binary)]
    target_image: Vec<u8>,
}

/// Verify the face of one photo against the faces of another, as CompreFace's
/// verification service does.
///
/// `source_image` must show exactly one face; each face of `target_image` (the
/// largest first with `limit`) gets its similarity to it. A JSON body
/// `{"source_image": "<base64>", "target_image": "<base64>"}` is taken too.
#[utoipa::path(
    post,
    operation_id = "compreface_verification",
    path = "/api/v1/verification/verify",
    tag = "peers",
    request_body(content = CompreFaceVerifyForm, content_type = "multipart/form-data"),
    params(
        ("x-api-key" = Option<String>, Header, description = "One of the `--api-key` keys; needed only when any is set"),
        ("limit" = Option<u64>, Query, description = "Target faces answered at most, the largest first; 0 (default) for all"),
        ("det_prob_threshold" = Option<f64>, Query, minimum = 0, maximum = 1, description = "Minimum face probability on CompreFace's scale; default 0.8"),
        ("face_plugins" = Option<String>, Query, description = "Comma-separated; `landmarks` adds each face's 5 landmarks, `calculator` its embedding; others are ignored"),
        ("status" = Option<bool>, Query, description = "`true` adds `execution_time` per face and `plugins_versions`"),
    ),
    responses(
        (status = 200, description = "The source face and the target's faces with their similarity", body = CompreFaceVerification),
        (status = 400, description = "Code 28: no face in either photo; 31: more than one face in the source; 26: a bad parameter; 34: a photo is missing; 21: not an image or not Base64; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
        (status = 413, description = "Code 26: over the byte limit, the pixel limit or the memory budget", body = CompreFaceError),
        (status = 503, description = "Code 41: the node is busy", body = CompreFaceError),
    ),
)]
pub async fn verify(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let verified = async {
        let _slot = detection::enter(&state, &request)?;
        let (photos, options) = photos_request(
            &state,
            request,
            "Verification",
            &["source_image", "target_image"],
        )
        .await?;
        let mut photos = photos.into_iter();
        let (source, target) = (
            photos.next().unwrap_or_default(),
            photos.next().unwrap_or_default(),
        );
        let ours = state.config.score_threshold;
        let source = detect_now(&state, source, &options, true).await?;
        if source.faces.len() > 1 {
            return Err(CompreFaceError::new(
                StatusCode::BAD_REQUEST,
                code::TOO_MANY_FACES,
                "More than one face in the source image",
            ));
        }
        let source_embedding = source.embeddings.first().cloned().ok_or_else(no_face)?;
        let target = detect_now(&state, target, &options, true).await?;
        let similarities = similarities(&state, &target, &source_embedding);
        let source = detected(source, options, ours, Matches::None);
        let target = detected(target, options, ours, Matches::Similarity(similarities));
        let plugins_versions = source.plugins_versions;
        Ok(CompreFaceVerification {
            result: [CompreFaceVerified {
                source_image_face: source.result.into_iter().next().ok_or_else(no_face)?,
                face_matches: target.result,
                plugins_versions,
            }],
        })
    };
    answer(verified.await, StatusCode::OK)
}

/// Each face of `found` against `to`, on verification's scale.
fn similarities(state: &AppState, found: &Found, to: &Embedding) -> Vec<f32> {
    let within = state.config.match_distance;
    found
        .embeddings
        .iter()
        .map(|embedding| scale::verification(embedding.distance(to), within))
        .collect()
}
