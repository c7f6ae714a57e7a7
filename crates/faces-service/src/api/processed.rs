//! `GET /static/processed_faces/<aa>/<bb>/<uuid>.jpg`: marked copies, immutable once written.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use crate::error::{ApiError, Fault};
use crate::state::AppState;
use crate::store::{processed_key, StoreError};

/// How long a redirect to the object store stays valid.
const PRESIGNED_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// A marked copy (JPEG), as linked by `image_url`.
///
/// Immutable: served with an ETag and a year's caching, or redirected to the
/// object store when so configured.
#[utoipa::path(
    get,
    path = "/static/processed_faces/{aa}/{bb}/{file}",
    tag = "images",
    params(
        ("aa" = String, Path, description = "First two hex digits of the id"),
        ("bb" = String, Path, description = "Next two hex digits of the id"),
        ("file" = String, Path, description = "`<id>.jpg`"),
    ),
    responses(
        (status = 200, description = "The marked JPEG", content_type = "image/jpeg", body = Vec<u8>),
        (status = 304, description = "Not modified (If-None-Match)"),
        (status = 307, description = "Redirect to a presigned object-store URL (`--images-redirect`)"),
        (status = 404, description = "No such image", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []), ("api_key_query" = []))
)]
pub async fn serve(
    State(state): State<Arc<AppState>>,
    Path((aa, bb, file)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Only keys this service could have written; anything else (.., other names) is 404.
    let id = file
        .strip_suffix(".jpg")
        .and_then(|stem| Uuid::parse_str(stem).ok())
        .ok_or_else(ApiError::not_found)?;
    let key = processed_key(id);
    if key != format!("processed_faces/{aa}/{bb}/{file}") {
        return Err(ApiError::not_found());
    }
    let etag = format!("\"{}\"", id.simple());
    let cache = [
        (header::ETAG, etag.clone()),
        (
            header::CACHE_CONTROL,
            "public, max-age=31536000, immutable".to_owned(),
        ),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        })
    {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    if state.config.images_redirect {
        if let Some(url) = state.store.presigned_url(&key, PRESIGNED_FOR).await {
            return Ok(Redirect::temporary(&url).into_response());
        }
    }
    match state.store.get(&key).await {
        Ok(bytes) => Ok((
            cache,
            [(header::CONTENT_TYPE, "image/jpeg".to_owned())],
            bytes,
        )
            .into_response()),
        Err(StoreError::NotFound(_)) => Err(ApiError::not_found()),
        Err(other) => Err(ApiError::fault("detail", Fault::of_store(&other), other)),
    }
}
