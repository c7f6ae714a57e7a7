//! "Find this person": every stored face within a distance of a face, newest
//! first, from this node's in-memory index ([`crate::recognition::Index`]). The
//! face is a photo's one face (`POST /search`) or a stored one (`GET
//! /search?image_id=&face=`). Matches are confirmed against the database, so a
//! photo removed on another node is never answered.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use faces_detect::Embedding;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::examples::{face_count_message, faces_in, stored_face};
use super::peers::detection;
use super::subjects::{closing, refusal, stored_refusal};
use crate::error::{messages, ApiError};
use crate::recognition::{parse_distance, rounded, Match};
use crate::state::AppState;
use crate::store::processed_key;
use crate::submission::timestamp;

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// How long a search waits for the index to finish loading after a start.
const LOADING_WAIT: Duration = Duration::from_secs(10);

/// A stored face found by a search.
#[derive(Debug, Serialize, ToSchema)]
pub struct Found {
    image_id: Uuid,
    /// The face's index in the image's `faces`.
    face: u32,
    #[schema(example = 0.3712)]
    distance: f64,
    /// When the image was submitted.
    #[schema(format = DateTime)]
    created_at: String,
    /// The image's marked copy.
    image_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResult {
    /// Newest image first, then by face; an image's matches are never split between pages.
    matches: Vec<Found>,
    /// The distance searched within.
    #[schema(example = 0.6)]
    distance: f64,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    next_before: Option<Uuid>,
}

/// A search's paging and distance, from the query string.
struct Query {
    distance: f32,
    limit: usize,
    before: Option<Uuid>,
    image_id: Option<String>,
    face: Option<String>,
}

fn query(state: &AppState, text: Option<&str>) -> Result<Query, ApiError> {
    let mut query = Query {
        distance: state.config.match_distance,
        limit: DEFAULT_LIMIT,
        before: None,
        image_id: None,
        face: None,
    };
    let bad = |field, message: String| ApiError::new(StatusCode::BAD_REQUEST, field, message);
    for (name, value) in form_urlencoded::parse(text.unwrap_or_default().as_bytes()) {
        if value.is_empty() {
            continue;
        }
        match name.as_ref() {
            "distance" => {
                query.distance = parse_distance(&value).map_err(|m| bad("distance", m))?
            }
            "limit" => {
                query.limit = value
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        bad(
                            "limit",
                            format!("Enter a whole number from 1 to {MAX_LIMIT}."),
                        )
                    })?
            }
            "before" => {
                query.before = Some(
                    Uuid::parse_str(&value)
                        .map_err(|_| bad("before", "Enter the id of an image.".into()))?,
                )
            }
            "image_id" => query.image_id = Some(value.into_owned()),
            "face" => query.face = Some(value.into_owned()),
            _ => {}
        }
    }
    Ok(query)
}

/// Find this person, by a stored face: every stored face within `distance` of face
/// `face` of image `image_id`, newest first.
#[utoipa::path(
    get,
    operation_id = "search_by_stored_face",
    path = "/search",
    tag = "recognition",
    params(
        ("image_id" = Uuid, Query, description = "A processed image"),
        ("face" = u64, Query, description = "The face's index in that image's `faces`, from 0"),
        ("distance" = Option<f64>, Query, description = "Match faces at this distance or less; default `--match-distance` (0.6)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Matches per page, 1 to 1000 (default 100)"),
        ("before" = Option<Uuid>, Query, description = "`next_before` of the previous page"),
    ),
    responses(
        (status = 200, description = "The matches (the face itself among them)", body = SearchResult),
        (status = 400, description = "A bad or missing parameter, no such image or face", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 503, description = "The search index is still loading after a start, or the database is unreachable", body = crate::api::schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_stored_face(
    State(state): State<Arc<AppState>>,
    RawQuery(text): RawQuery,
) -> Response {
    let answer = async {
        let query = query(&state, text.as_deref())?;
        let bad = |field, message| ApiError::new(StatusCode::BAD_REQUEST, field, message);
        let image = query
            .image_id
            .as_deref()
            .ok_or_else(|| bad("image_id", "This field is required."))?;
        let image =
            Uuid::parse_str(image).map_err(|_| bad("image_id", "Enter the id of an image."))?;
        let face = query
            .face
            .as_deref()
            .ok_or_else(|| bad("face", "This field is required."))?;
        let face = face.parse::<usize>().map_err(|_| {
            bad(
                "face",
                "Enter the face's index in the image's faces, from 0.",
            )
        })?;
        let (_, embedding) = stored_face(&state, image, face)
            .await
            .map_err(stored_refusal)?;
        search(&state, &embedding, &query).await
    };
    match answer.await {
        Ok(result) => Json(result).into_response(),
        Err(error) => closing(error),
    }
}

/// Find this person, by a photo: every stored face within `distance` of the
/// photo's one face, newest first. The photo is not stored.
#[utoipa::path(
    post,
    operation_id = "search_by_photo",
    path = "/search",
    tag = "recognition",
    request_body(content = super::subjects::ExamplePhotoForm, content_type = "multipart/form-data"),
    params(
        ("distance" = Option<f64>, Query, description = "Match faces at this distance or less; default `--match-distance` (0.6)"),
        ("limit" = Option<u64>, Query, minimum = 1, maximum = 1000, description = "Matches per page, 1 to 1000 (default 100)"),
        ("before" = Option<Uuid>, Query, description = "`next_before` of the previous page"),
    ),
    responses(
        (status = 200, description = "The matches", body = SearchResult),
        (status = 400, description = "A bad parameter; `image`: no file, not an image, or not exactly one face (the sentence says how many)", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 413, description = "Over the byte limit, the pixel limit or the memory budget", body = crate::api::schema::ErrorBody),
        (status = 503, description = "The node is busy, the search index is still loading after a start, or the database is unreachable", body = crate::api::schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security((), ("bearer" = []))
)]
pub async fn by_photo(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let answer = async {
        let query = query(&state, request.uri().query())?;
        let _slot = detection::enter(&state, &request).map_err(refusal)?;
        let form = detection::read_multipart(request, &["image"], state.config.max_upload_bytes)
            .await
            .map_err(refusal)?;
        let photo = form
            .file("image")
            .ok_or_else(|| ApiError::image(messages::NO_FILE))?;
        if photo.is_empty() {
            return Err(ApiError::image(messages::EMPTY));
        }
        let faces = faces_in(&state, photo, state.config.score_threshold)
            .await
            .map_err(refusal)?;
        let [(_, embedding)] = faces[..] else {
            return Err(ApiError::image(face_count_message(faces.len()).replace(
                "an example photo must show",
                "a photo to search by must show",
            )));
        };
        search(&state, &embedding, &query).await
    };
    match answer.await {
        Ok(result) => Json(result).into_response(),
        Err(error) => closing(error),
    }
}

/// One page of the stored faces within the query's distance of `embedding`.
async fn search(
    state: &Arc<AppState>,
    embedding: &Embedding,
    query: &Query,
) -> Result<SearchResult, ApiError> {
    let database = |e| ApiError::database("detail", e);
    let cursor = match query.before {
        None => None,
        Some(before) => {
            let submission = state.db.submission(before).await.map_err(database)?;
            let submission = submission.ok_or_else(|| {
                ApiError::new(StatusCode::BAD_REQUEST, "before", "No image has this id.")
            })?;
            Some((submission.created_at.timestamp_micros(), before))
        }
    };
    let deadline = tokio::time::Instant::now() + LOADING_WAIT;
    while !state.index.is_loaded() {
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "detail",
                "The search index is still loading. Please try again shortly.",
            )
            .retry_after(5));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (searching, query_embedding, within) = (state.clone(), *embedding, query.distance);
    let matches =
        tokio::task::spawn_blocking(move || searching.index.search(&query_embedding, within))
            .await
            .map_err(ApiError::internal)?;
    // The matches after the cursor, an image's matches together.
    let mut images: Vec<(Uuid, Vec<Match>)> = Vec::new();
    for found in matches {
        if cursor.is_some_and(|cursor| (found.created_at, found.submission) >= cursor) {
            continue;
        }
        match images.last_mut() {
            Some((id, group)) if *id == found.submission => group.push(found),
            _ => images.push((found.submission, vec![found])),
        }
    }
    let mut page: Vec<Match> = Vec::new();
    let mut last = None;
    let mut more = false;
    let mut remaining = images.as_slice();
    'pages: while !remaining.is_empty() {
        // Confirmed a batch at a time: a few more than the page, for removed ones.
        let take = remaining.len().min(query.limit + 16);
        let (batch, rest) = remaining.split_at(take);
        remaining = rest;
        let ids: Vec<Uuid> = batch.iter().map(|(id, _)| *id).collect();
        let existing = state
            .db
            .existing_submissions(&ids)
            .await
            .map_err(database)?;
        let gone: std::collections::HashSet<Uuid> = ids
            .iter()
            .filter(|id| !existing.contains(id))
            .copied()
            .collect();
        state.index.forget(&gone);
        for (index, (id, group)) in batch.iter().enumerate() {
            if gone.contains(id) {
                continue;
            }
            if !page.is_empty() && page.len() + group.len() > query.limit {
                more = true;
                break 'pages;
            }
            page.extend(group);
            last = Some(*id);
            if page.len() >= query.limit {
                more = index + 1 < batch.len() || !remaining.is_empty();
                break 'pages;
            }
        }
    }
    let public_url = state.config.public_url();
    Ok(SearchResult {
        matches: page
            .iter()
            .map(|m| Found {
                image_id: m.submission,
                face: m.face,
                distance: rounded(m.distance),
                created_at: chrono::DateTime::from_timestamp_micros(m.created_at)
                    .map(timestamp)
                    .unwrap_or_default(),
                image_url: format!("{public_url}/static/{}", processed_key(m.submission)),
            })
            .collect(),
        distance: rounded(query.distance),
        next_before: last.filter(|_| more),
    })
}
