//! The peers' detection endpoints, so that their clients work unchanged against
//! faces: DeepStack's and CodeProject.AI's `POST /v1/vision/face`
//! ([`deepstack`]) and CompreFace's `POST /api/v1/detection/detect` ([`compreface`]).
//!
//! Each is answered in the request, from the process's shared detector, holding
//! memory and a detection slot as a worker does ([`detection`]); nothing is stored or
//! announced on the feed, as the peers keep nothing either. Their thresholds and
//! scores are on the peer's scale ([`scale`]). docs/api.md lists every answer.

pub(super) mod compreface;
pub(super) mod compreface_faces;
pub(super) mod compreface_verify;
pub(super) mod deepstack;
pub(super) mod deepstack_faces;
pub(super) mod detection;
mod scale;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::state::AppState;

/// The peers' routes. Their bodies are read into memory, bounded by the upload limit
/// (a third more for CompreFace's base64).
pub fn routes(max_upload_bytes: u64) -> Router<Arc<AppState>> {
    let limit = DefaultBodyLimit::max(
        (max_upload_bytes.saturating_mul(4) / 3).saturating_add(1024 * 1024) as usize,
    );
    // Verification sends two photos.
    let verify_limit = DefaultBodyLimit::max(
        (max_upload_bytes.saturating_mul(8) / 3).saturating_add(1024 * 1024) as usize,
    );
    let deepstack = post(deepstack::detect).layer::<_, Infallible>(limit);
    Router::new()
        .route("/v1/vision/face", deepstack.clone())
        .route("/v1/vision/face/", deepstack)
        .route(
            "/v1/vision/face/register",
            post(deepstack_faces::register).layer::<_, Infallible>(limit),
        )
        .route(
            "/v1/vision/face/recognize",
            post(deepstack_faces::recognize).layer::<_, Infallible>(limit),
        )
        .route("/v1/vision/face/list", post(deepstack_faces::list))
        .route("/v1/vision/face/delete", post(deepstack_faces::delete))
        .route(
            "/api/v1/detection/detect",
            post(compreface::detect).layer::<_, Infallible>(limit),
        )
        .route(
            "/api/v1/recognition/subjects",
            post(compreface_faces::add_subject)
                .get(compreface_faces::list_subjects)
                .delete(compreface_faces::delete_subjects),
        )
        .route(
            "/api/v1/recognition/subjects/{subject}",
            axum::routing::put(compreface_faces::rename_subject)
                .delete(compreface_faces::delete_subject),
        )
        .route(
            "/api/v1/recognition/faces",
            post(compreface_faces::add_face)
                .layer::<_, Infallible>(limit)
                .get(compreface_faces::list_faces)
                .delete(compreface_faces::delete_faces),
        )
        .route(
            "/api/v1/recognition/faces/delete",
            post(compreface_faces::delete_several),
        )
        .route(
            "/api/v1/recognition/faces/{image_id}",
            delete(compreface_faces::delete_face),
        )
        .route(
            "/api/v1/recognition/faces/{image_id}/img",
            get(compreface_faces::face_image),
        )
        .route(
            "/api/v1/recognition/faces/{image_id}/verify",
            post(compreface_verify::verify_example).layer::<_, Infallible>(limit),
        )
        .route(
            "/api/v1/verification/verify",
            post(compreface_verify::verify).layer::<_, Infallible>(verify_limit),
        )
        .route(
            "/api/v1/recognition/recognize",
            post(compreface_faces::recognize).layer::<_, Infallible>(limit),
        )
}
