//! Reading results: one submission, or a newest-first page of them.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;
use crate::names::Names;
use crate::recognition::FaceView;
use crate::state::AppState;
use crate::submission::{timestamp, Options, Status, Submission};

const DEFAULT_PAGE: i64 = 20;
const MAX_PAGE: i64 = 100;

/// A submission as `GET /image/<id>` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubmissionView {
    id: Uuid,
    #[schema(value_type = Status)]
    status: &'static str,
    #[schema(format = DateTime)]
    created_at: String,
    /// When it was done or failed.
    #[schema(format = DateTime)]
    processed_at: Option<String>,
    faces_count: Option<usize>,
    /// Each face's box, score and landmarks, then who it is (`subject`, `distance`).
    faces: Option<Vec<FaceView>>,
    /// The marked copy; `null` until done, and for photos without faces.
    image_url: Option<String>,
    /// Why it failed.
    error: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    /// Processing attempts so far.
    attempts: i64,
    /// An earlier submission with identical bytes whose result was reused.
    duplicate_of: Option<Uuid>,
    #[serde(flatten)]
    options: Options,
}

impl SubmissionView {
    /// `s` with its `faces` named (see [`crate::names`]).
    pub fn new(s: Submission, faces: Option<Vec<FaceView>>, public_url: &str) -> Self {
        Self {
            id: s.id,
            status: s.status.as_str(),
            created_at: timestamp(s.created_at),
            processed_at: s.processed_at.map(timestamp),
            faces_count: faces.as_ref().map(Vec::len),
            faces,
            image_url: s
                .processed_key
                .map(|key| format!("{public_url}/static/{key}")),
            error: s.error,
            width: s.width,
            height: s.height,
            attempts: s.attempts,
            duplicate_of: s.duplicate_of,
            options: s.options,
        }
    }
}

/// One submission: its status and, once done, the faces found.
#[utoipa::path(
    get,
    path = "/image/{id}",
    tag = "images",
    params(("id" = Uuid, Path, description = "The id from the 202 answer")),
    responses(
        (status = 200, description = "The submission", body = SubmissionView),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 404, description = "No such submission", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<SubmissionView>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found())?;
    let submission = state
        .db
        .submission(id)
        .await
        .map_err(|e| ApiError::database("detail", e))?;
    let submission = submission.ok_or_else(ApiError::not_found)?;
    let names = Names::read(&state, &[&submission])
        .await
        .map_err(|e| ApiError::database("detail", e))?;
    let faces = names.faces(&submission);
    Ok(Json(SubmissionView::new(
        submission,
        faces,
        state.config.public_url(),
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page {
    images: Vec<SubmissionView>,
    /// Pass as `before` to get the next (older) page; `null` on the last page.
    next_before: Option<Uuid>,
}

/// Submissions, newest first, a page at a time.
#[utoipa::path(
    get,
    path = "/images",
    tag = "images",
    params(
        ("limit" = Option<i64>, Query, description = "Page size, 1 to 100 (default 20)", minimum = 1, maximum = 100),
        ("before" = Option<Uuid>, Query, description = "`next_before` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of submissions", body = Page),
        (status = 400, description = "A bad `limit` or `before`", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Page>, ApiError> {
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        None => DEFAULT_PAGE,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "limit",
                    format!("Enter a whole number from 1 to {MAX_PAGE}."),
                )
            })?,
    };
    let before = match query.get("before").filter(|b| !b.is_empty()) {
        None => None,
        Some(text) => Some(Uuid::parse_str(text).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "before",
                "Enter the id of a submission.",
            )
        })?),
    };
    let submissions = state
        .db
        .list_submissions(limit, before)
        .await
        .map_err(|e| ApiError::database("detail", e))?;
    let next_before = (submissions.len() as i64 == limit)
        .then(|| submissions.last().map(|s| s.id))
        .flatten();
    let names = Names::read(&state, &submissions.iter().collect::<Vec<_>>())
        .await
        .map_err(|e| ApiError::database("detail", e))?;
    let public_url = state.config.public_url();
    Ok(Json(Page {
        images: submissions
            .into_iter()
            .map(|s| {
                let faces = names.faces(&s);
                SubmissionView::new(s, faces, public_url)
            })
            .collect(),
        next_before,
    }))
}
