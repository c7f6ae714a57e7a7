//! CompreFace's recognition service, as compreface-sdk and double-take call it:
//! subjects (`/api/v1/recognition/subjects`), their example faces
//! (`/api/v1/recognition/faces`; CompreFace's `image_id` is our example's id) and
//! `/api/v1/recognition/recognize`. Names are compared whatever their case;
//! similarities come from the distance through [`scale::similarity`]. The key is
//! header `x-api-key`, errors CompreFace's `{"message", "code"}`; docs/api.md lists
//! every answer.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::compreface::{
    self, code, detect_now, detected, key_header, photo_request, CompreFaceError, CompreFaceFaces,
    CompreFaceSubject, Matches,
};
use super::detection::{self, Refusal};
use super::scale;
use crate::api::examples::{self, PhotoRefused};
use crate::db::SubjectError;
use crate::error::Fault;
use crate::recognition::{valid_name, Source};
use crate::state::AppState;

/// The service's word in the answer to an unknown key.
const SERVICE: &str = "Recognition";
/// CompreFace's longest subject name.
const MAX_SUBJECT_CHARS: usize = 50;
/// A JSON body larger than this is refused: names and ids are short.
const MAX_JSON_BYTES: usize = 64 * 1024;
/// `GET /faces`'s page size unless asked.
const DEFAULT_PAGE_SIZE: i64 = 20;
const MAX_PAGE_SIZE: i64 = 1000;

pub(super) fn answer<T: Serialize>(
    result: Result<T, CompreFaceError>,
    status: StatusCode,
) -> Response {
    match result {
        Ok(body) => (status, Json(body)).into_response(),
        Err(failure) => {
            tracing::info!(status = failure.status().as_u16(), reason = %failure.message(), "CompreFace recognition refused");
            failure.into_response()
        }
    }
}

pub(super) fn database(error: sqlx::Error) -> CompreFaceError {
    CompreFaceError::fault(Fault::of_database(&error), error)
}

/// The key of a request without a photo: missing (code 20) or unknown (code 10).
fn key(state: &AppState, headers: &HeaderMap) -> Result<(), CompreFaceError> {
    let given = key_header(state, headers)?;
    compreface::check_key(state, given, SERVICE)
}

/// A subject name as CompreFace accepts one (code 26 otherwise), trimmed.
fn subject_name(name: Option<&str>) -> Result<String, CompreFaceError> {
    let name = name.map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(CompreFaceError::invalid("Subject name cannot be empty"));
    }
    if name.chars().count() > MAX_SUBJECT_CHARS {
        return Err(CompreFaceError::invalid(format!(
            "Subject name size must be between 1 and {MAX_SUBJECT_CHARS}"
        )));
    }
    if name.contains([';', '/', '\\']) {
        return Err(CompreFaceError::invalid(
            "The name cannot contain the following special characters: ';', '/', '\\'",
        ));
    }
    valid_name(name).map_err(CompreFaceError::invalid)
}

fn subject_not_found(name: &str) -> CompreFaceError {
    CompreFaceError::new(
        StatusCode::NOT_FOUND,
        code::SUBJECT_NOT_FOUND,
        format!("Subject {name} not found"),
    )
}

/// A JSON body; code 26 if it is not JSON.
async fn json(request: Request) -> Result<Value, CompreFaceError> {
    let body = to_bytes(request.into_body(), MAX_JSON_BYTES)
        .await
        .map_err(|_| {
            CompreFaceError::invalid(format!("The body is over {MAX_JSON_BYTES} bytes."))
        })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&body)
        .map_err(|_| CompreFaceError::invalid("The request body is not valid JSON."))
}

/// A query parameter's first value, decoded (`+` is a space).
fn parameter(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceSubjectName {
    #[schema(example = "Kit Harington")]
    subject: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceSubjects {
    /// By name, with or without examples.
    subjects: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceUpdated {
    /// `false` when the new name is empty or the same as the old.
    updated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceDeleted {
    /// How many subjects (or examples) were removed.
    deleted: i64,
}

/// An example face: CompreFace's `image_id` is the example's id.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceExample {
    image_id: Uuid,
    #[schema(example = "Kit Harington")]
    subject: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceExamples {
    /// Oldest first.
    faces: Vec<CompreFaceExample>,
    total_pages: i64,
    total_elements: i64,
    /// From 0.
    page_number: i64,
    page_size: i64,
}

/// `{"subject": …}`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CompreFaceSubjectBody {
    /// 1 to 50 characters, none of `;`, `/`, `\`; unique whatever the case.
    subject: String,
}

/// Add a subject.
#[utoipa::path(
    post,
    operation_id = "compreface_subject_add",
    path = "/api/v1/recognition/subjects",
    tag = "peers",
    request_body(content = CompreFaceSubjectBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Added", body = CompreFaceSubjectName),
        (status = 400, description = "Code 43: a subject has this name (any case); 26: a bad name or body; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn add_subject(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let added = async {
        key(&state, request.headers())?;
        let body = json(request).await?;
        let name = subject_name(body.get("subject").and_then(Value::as_str))?;
        let subject = state
            .db
            .create_subject(&name)
            .await
            .map_err(|error| match error {
                SubjectError::NameTaken => CompreFaceError::new(
                    StatusCode::BAD_REQUEST,
                    code::SUBJECT_EXISTS,
                    "Subject already exists",
                ),
                SubjectError::NotFound => subject_not_found(&name),
                SubjectError::Database(error) => database(error),
            })?;
        crate::refresh::examples_now(&state).await;
        Ok(CompreFaceSubjectName {
            subject: subject.name,
        })
    };
    answer(added.await, StatusCode::CREATED)
}

/// List the subjects.
#[utoipa::path(
    get,
    operation_id = "compreface_subject_list",
    path = "/api/v1/recognition/subjects",
    tag = "peers",
    responses(
        (status = 200, description = "Every subject", body = CompreFaceSubjects),
        (status = 400, description = "Code 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn list_subjects(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let listed = async {
        key(&state, &headers)?;
        let subjects = state.db.subjects().await.map_err(database)?;
        Ok(CompreFaceSubjects {
            subjects: subjects.into_iter().map(|s| s.name).collect(),
        })
    };
    answer(listed.await, StatusCode::OK)
}

/// Rename a subject; to the name of another subject, the two become one.
#[utoipa::path(
    put,
    operation_id = "compreface_subject_rename",
    path = "/api/v1/recognition/subjects/{subject}",
    tag = "peers",
    params(("subject" = String, Path, description = "The subject's name, any case")),
    request_body(content = CompreFaceSubjectBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Renamed (or merged); `updated: false` for an empty or unchanged name", body = CompreFaceUpdated),
        (status = 400, description = "Code 26: a bad name or body; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 42: no such subject; 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn rename_subject(
    State(state): State<Arc<AppState>>,
    Path(old): Path<String>,
    request: Request,
) -> Response {
    let renamed = async {
        key(&state, request.headers())?;
        let body = json(request).await?;
        let new = body
            .get("subject")
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default();
        if state
            .db
            .subject_named(&old)
            .await
            .map_err(database)?
            .is_none()
        {
            return Err(subject_not_found(&old));
        }
        if new.is_empty() || new == old {
            return Ok(CompreFaceUpdated { updated: false });
        }
        let new = subject_name(Some(new))?;
        state
            .db
            .rename_named(&old, &new)
            .await
            .map_err(|error| match error {
                SubjectError::Database(error) => database(error),
                _ => subject_not_found(&old),
            })?;
        crate::refresh::examples_now(&state).await;
        Ok(CompreFaceUpdated { updated: true })
    };
    answer(renamed.await, StatusCode::OK)
}

/// Delete a subject and its examples.
#[utoipa::path(
    delete,
    operation_id = "compreface_subject_delete",
    path = "/api/v1/recognition/subjects/{subject}",
    tag = "peers",
    params(("subject" = String, Path, description = "The subject's name, any case")),
    responses(
        (status = 200, description = "Deleted: its name as stored", body = CompreFaceSubjectName),
        (status = 400, description = "Code 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 42: no such subject; 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn delete_subject(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let deleted = async {
        key(&state, &headers)?;
        let removed = state
            .db
            .delete_subjects_named(Some(&name))
            .await
            .map_err(database)?;
        let Some(subject) = removed.subjects.first().cloned() else {
            return Err(subject_not_found(&name));
        };
        crate::refresh::examples_now(&state).await;
        examples::remove_photos(&state, removed.photo_keys).await;
        Ok(CompreFaceSubjectName { subject })
    };
    answer(deleted.await, StatusCode::OK)
}

/// Delete every subject and every example.
#[utoipa::path(
    delete,
    operation_id = "compreface_subject_delete_all",
    path = "/api/v1/recognition/subjects",
    tag = "peers",
    responses(
        (status = 200, description = "How many subjects went", body = CompreFaceDeleted),
        (status = 400, description = "Code 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn delete_subjects(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let deleted = async {
        key(&state, &headers)?;
        let removed = state
            .db
            .delete_subjects_named(None)
            .await
            .map_err(database)?;
        crate::refresh::examples_now(&state).await;
        examples::remove_photos(&state, removed.photo_keys).await;
        Ok(CompreFaceDeleted {
            deleted: removed.subjects.len() as i64,
        })
    };
    answer(deleted.await, StatusCode::OK)
}

/// Add an example face to `subject` (created if there is none): one face in the photo.
#[utoipa::path(
    post,
    operation_id = "compreface_face_add",
    path = "/api/v1/recognition/faces",
    tag = "peers",
    params(
        ("subject" = String, Query, description = "The subject's name, any case; created if new"),
        ("det_prob_threshold" = Option<f64>, Query, minimum = 0, maximum = 1, description = "Minimum face probability on CompreFace's scale; default 0.8"),
    ),
    request_body(content = super::compreface::CompreFaceForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Added", body = CompreFaceExample),
        (status = 400, description = "Code 28: no face; 31: more than one; 33: no `subject`; 26: a bad name or parameter; 34: no `file`; 21: not an image or not Base64; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
        (status = 413, description = "Code 26: over the byte limit, the pixel limit or the memory budget", body = CompreFaceError),
        (status = 503, description = "The node is busy, or the database or storage unreachable", body = CompreFaceError),
    ),
)]
pub async fn add_face(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let added = async {
        let _slot = detection::enter(&state, &request)?;
        let query = request.uri().query().map(str::to_owned);
        let (image, options) = photo_request(&state, request, SERVICE).await?;
        let Some(name) = parameter(query.as_deref(), "subject") else {
            return Err(CompreFaceError::new(
                StatusCode::BAD_REQUEST,
                code::MISSING_PARAMETER,
                "Required parameter subject is missing",
            ));
        };
        let name = subject_name(Some(&name))?;
        let threshold =
            scale::COMPREFACE.threshold(options.threshold, state.config.score_threshold);
        let refused = |refused| match refused {
            PhotoRefused::Photo(refusal) => CompreFaceError::from(refusal),
            PhotoRefused::Faces(0) => compreface::no_face(),
            PhotoRefused::Faces(_) => CompreFaceError::new(
                StatusCode::BAD_REQUEST,
                code::TOO_MANY_FACES,
                "More than one face in the source image",
            ),
            PhotoRefused::Subject(SubjectError::Database(error)) => database(error),
            PhotoRefused::Subject(other) => {
                tracing::error!(?other, "adding an example failed");
                CompreFaceError::from(Refusal::Failed)
            }
            PhotoRefused::Store(error) => CompreFaceError::fault(Fault::of_store(&error), error),
        };
        let (face, embedding) = examples::one_face(&state, image.clone(), threshold)
            .await
            .map_err(refused)?;
        let (added, _) = examples::add_photos_named(&state, &name, vec![(image, face, embedding)])
            .await
            .map_err(refused)?;
        let example = added.first().map(|e| e.id).unwrap_or_default();
        Ok(CompreFaceExample {
            image_id: example,
            subject: name,
        })
    };
    answer(added.await, StatusCode::CREATED)
}

/// List example faces, a page at a time.
#[utoipa::path(
    get,
    operation_id = "compreface_face_list",
    path = "/api/v1/recognition/faces",
    tag = "peers",
    params(
        ("page" = Option<i64>, Query, description = "From 0 (default)"),
        ("size" = Option<i64>, Query, description = "1 to 1000, default 20"),
        ("subject" = Option<String>, Query, description = "Only this subject's (any case)"),
    ),
    responses(
        (status = 200, description = "A page of examples", body = CompreFaceExamples),
        (status = 400, description = "Code 26: a bad `page` or `size`; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn list_faces(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let listed = async {
        key(&state, &headers)?;
        let number = |name: &str, default: i64, least: i64, most: i64| match parameter(
            query.as_deref(),
            name,
        ) {
            None => Ok(default),
            Some(text) => text
                .trim()
                .parse::<i64>()
                .ok()
                .filter(|n| (least..=most).contains(n))
                .ok_or_else(|| {
                    CompreFaceError::invalid(format!(
                        "{name}: must be a whole number from {least} to {most}"
                    ))
                }),
        };
        let page = number("page", 0, 0, i64::from(i32::MAX))?;
        let size = number("size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)?;
        let subject = parameter(query.as_deref(), "subject").filter(|s| !s.trim().is_empty());
        let (faces, total) = state
            .db
            .examples_page(subject.as_deref().map(str::trim), page * size, size)
            .await
            .map_err(database)?;
        Ok(CompreFaceExamples {
            faces: faces
                .into_iter()
                .map(|(image_id, subject)| CompreFaceExample { image_id, subject })
                .collect(),
            total_pages: (total + size - 1) / size,
            total_elements: total,
            page_number: page,
            page_size: size,
        })
    };
    answer(listed.await, StatusCode::OK)
}

/// Delete the examples of `subject`, and the subject (none: a success, 0); without
/// `subject`, every example of every subject.
#[utoipa::path(
    delete,
    operation_id = "compreface_face_delete_all",
    path = "/api/v1/recognition/faces",
    tag = "peers",
    params(("subject" = Option<String>, Query, description = "The subject's name, any case")),
    responses(
        (status = 200, description = "How many examples went", body = CompreFaceDeleted),
        (status = 400, description = "Code 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn delete_faces(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let deleted = async {
        key(&state, &headers)?;
        let removed = match parameter(query.as_deref(), "subject") {
            Some(subject) => state
                .db
                .delete_subjects_named(Some(subject.trim()))
                .await
                .map_err(database)?,
            None => state.db.delete_all_examples().await.map_err(database)?,
        };
        crate::refresh::examples_now(&state).await;
        examples::remove_photos(&state, removed.photo_keys).await;
        Ok(CompreFaceDeleted {
            deleted: removed.examples,
        })
    };
    answer(deleted.await, StatusCode::OK)
}

/// Delete one example face by its `image_id`.
#[utoipa::path(
    delete,
    operation_id = "compreface_face_delete",
    path = "/api/v1/recognition/faces/{image_id}",
    tag = "peers",
    params(("image_id" = Uuid, Path, description = "The example's id")),
    responses(
        (status = 200, description = "Deleted", body = CompreFaceExample),
        (status = 400, description = "Code 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 44: no such example; 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn delete_face(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let deleted = async {
        key(&state, &headers)?;
        let not_found = || {
            CompreFaceError::new(
                StatusCode::NOT_FOUND,
                code::IMAGE_NOT_FOUND,
                format!("Image {id} not found"),
            )
        };
        let example = Uuid::parse_str(&id).map_err(|_| not_found())?;
        let removed = delete_example(&state, example).await?;
        removed.ok_or_else(not_found)
    };
    answer(deleted.await, StatusCode::OK)
}

/// Deletes one example; `None` if there is none.
async fn delete_example(
    state: &AppState,
    id: Uuid,
) -> Result<Option<CompreFaceExample>, CompreFaceError> {
    let Some((subject, key)) = state.db.delete_example_by_id(id).await.map_err(database)? else {
        return Ok(None);
    };
    crate::refresh::examples_now(state).await;
    examples::remove_photos(state, key.into_iter().collect()).await;
    Ok(Some(CompreFaceExample {
        image_id: id,
        subject,
    }))
}

/// Delete several example faces by `image_id` (a JSON array); unknown ids are skipped.
#[utoipa::path(
    post,
    operation_id = "compreface_face_delete_several",
    path = "/api/v1/recognition/faces/delete",
    tag = "peers",
    request_body(content = Vec<Uuid>, content_type = "application/json"),
    responses(
        (status = 200, description = "Those deleted", body = Vec<CompreFaceExample>),
        (status = 400, description = "Code 26: not a JSON array; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
    ),
)]
pub async fn delete_several(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let deleted = async {
        key(&state, request.headers())?;
        let Value::Array(ids) = json(request).await? else {
            return Err(CompreFaceError::invalid(
                "The body must be a JSON array of image ids.",
            ));
        };
        let mut removed = Vec::new();
        for id in ids.iter().filter_map(Value::as_str) {
            if let Ok(id) = Uuid::parse_str(id) {
                removed.extend(delete_example(&state, id).await?);
            }
        }
        Ok(removed)
    };
    answer(deleted.await, StatusCode::OK)
}

/// An example's photo as it was sent (for a face taken from a stored image, that
/// image's original); an unknown id gets an empty body, as CompreFace answers.
#[utoipa::path(
    get,
    operation_id = "compreface_face_image",
    path = "/api/v1/recognition/faces/{image_id}/img",
    tag = "peers",
    params(("image_id" = Uuid, Path, description = "The example's id")),
    responses(
        (status = 200, description = "The photo's bytes; empty for an unknown id", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Code 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
        (status = 503, description = "Storage or the database is unreachable", body = CompreFaceError),
    ),
)]
pub async fn face_image(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let photo = async {
        key(&state, &headers)?;
        let Ok(id) = Uuid::parse_str(&id) else {
            return Ok(bytes::Bytes::new());
        };
        let key = match state.db.example(id).await.map_err(database)? {
            None => return Ok(bytes::Bytes::new()),
            Some((example, _)) => match example.source {
                Source::Photo(key) => key,
                Source::Stored { submission, .. } => {
                    match state.db.submission(submission).await.map_err(database)? {
                        Some(submission) => submission.original_key,
                        None => return Ok(bytes::Bytes::new()),
                    }
                }
            },
        };
        match state.store.get(&key).await {
            Ok(bytes) => Ok(bytes),
            Err(crate::store::StoreError::NotFound(_)) => Ok(bytes::Bytes::new()),
            Err(error) => Err(CompreFaceError::fault(Fault::of_store(&error), error)),
        }
    };
    match photo.await {
        Ok(bytes) => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000"),
            );
            response
        }
        Err(failure) => failure.into_response(),
    }
}

/// Recognize the faces in a photo: each with the subjects that have an example
/// within the match distance, nearest first.
#[utoipa::path(
    post,
    operation_id = "compreface_recognize",
    path = "/api/v1/recognition/recognize",
    tag = "peers",
    request_body(content = super::compreface::CompreFaceForm, content_type = "multipart/form-data"),
    params(
        ("x-api-key" = Option<String>, Header, description = "One of the `--api-key` keys; needed only when any is set"),
        ("limit" = Option<u64>, Query, description = "Faces answered at most, the largest first; 0 (default) for all"),
        ("prediction_count" = Option<u64>, Query, minimum = 1, description = "Subjects listed per face at most, default 1"),
        ("det_prob_threshold" = Option<f64>, Query, minimum = 0, maximum = 1, description = "Minimum face probability on CompreFace's scale; default 0.8"),
        ("face_plugins" = Option<String>, Query, description = "Comma-separated; `landmarks` adds each face's 5 landmarks, `calculator` its embedding; others are ignored"),
        ("status" = Option<bool>, Query, description = "`true` adds `execution_time` per face and `plugins_versions`"),
        ("detect_faces" = Option<bool>, Query, description = "`false`: the whole photo is one face (a face crop); its box is the image, no landmarks"),
    ),
    responses(
        (status = 200, description = "The faces with their subjects", body = CompreFaceFaces),
        (status = 400, description = "Code 28: no face; 26: a bad parameter; 34: no `file`; 21: not an image or not Base64; 20: the key is missing", body = CompreFaceError),
        (status = 404, description = "Code 10: an unknown key", body = CompreFaceError),
        (status = 413, description = "Code 26: over the byte limit, the pixel limit or the memory budget", body = CompreFaceError),
        (status = 503, description = "Code 41: the node is busy", body = CompreFaceError),
    ),
)]
pub async fn recognize(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let recognized = async {
        let _slot = detection::enter(&state, &request)?;
        let (image, mut options) = photo_request(&state, request, SERVICE).await?;
        let found = if options.detect_faces {
            detect_now(&state, image, &options, true).await?
        } else {
            // The photo is a face already; nothing located its landmarks.
            options.landmarks = false;
            detection::whole(&state, image).await?
        };
        let (examples, within) = (state.index.examples(), state.config.match_distance);
        let subjects = found
            .embeddings
            .iter()
            .map(|embedding| {
                examples
                    .by_subject(embedding, within)
                    .into_iter()
                    .take(options.prediction_count)
                    .filter_map(|nearest| {
                        let similarity = scale::similarity(nearest.distance, within)?;
                        Some(CompreFaceSubject::new(nearest.name, similarity))
                    })
                    .collect()
            })
            .collect();
        Ok(detected(
            found,
            options,
            state.config.score_threshold,
            Matches::Subjects(subjects),
        ))
    };
    answer(recognized.await, StatusCode::OK)
}
