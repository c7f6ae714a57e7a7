//! Our own recognition API: subjects (create, list, show, rename, delete) and their
//! example faces (add an example photo, or a stored face from the gallery; remove
//! one). Errors are the documented JSON shape, keyed by the field at fault;
//! docs/api.md lists every answer.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::examples::{
    add_photo, add_stored, face_count_message, remove_photos, PhotoRefused, StoredExampleRefused,
    StoredRefused,
};
use super::peers::detection::{self, Refusal};
use crate::db::SubjectError;
use crate::error::{messages, ApiError, Fault};
use crate::recognition::{valid_name, Example, Rect, Source, Subject};
use crate::state::AppState;
use crate::submission::timestamp;

/// A JSON body larger than this is refused: names and ids are short.
const MAX_JSON_BYTES: usize = 64 * 1024;

/// A subject as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectView {
    id: Uuid,
    #[schema(example = "Anna")]
    name: String,
    #[schema(format = DateTime)]
    created_at: String,
    /// How many example faces it has.
    examples_count: i64,
    /// Its example faces, oldest first (`GET /subjects/<id>` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    examples: Option<Vec<ExampleView>>,
}

impl SubjectView {
    fn new(subject: Subject, examples: Option<Vec<Example>>) -> Self {
        SubjectView {
            id: subject.id,
            name: subject.name,
            created_at: timestamp(subject.created_at),
            examples_count: subject.examples,
            examples: examples.map(|e| e.into_iter().map(ExampleView::from).collect()),
        }
    }
}

/// One example face of a subject.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExampleView {
    id: Uuid,
    subject_id: Uuid,
    #[schema(format = DateTime)]
    created_at: String,
    /// The stored image it was taken from; `null` for an example photo.
    image_id: Option<Uuid>,
    /// Its index in that image's `faces`; `null` for an example photo.
    face: Option<i64>,
    /// The face's box in its photo.
    #[serde(rename = "box")]
    rect: Rect,
}

impl From<Example> for ExampleView {
    fn from(example: Example) -> Self {
        let (image_id, face) = match example.source {
            Source::Photo(_) => (None, None),
            Source::Stored { submission, face } => (Some(submission), Some(face)),
        };
        ExampleView {
            id: example.id,
            subject_id: example.subject_id,
            created_at: timestamp(example.created_at),
            image_id,
            face,
            rect: example.rect,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubjectList {
    /// By name.
    subjects: Vec<SubjectView>,
}

/// `{"name": …}`: creating or renaming a subject.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NameBody {
    /// 1 to 200 characters, no control characters; leading and trailing spaces are
    /// dropped. Unique whatever the case (`anna` is `Anna`).
    #[schema(example = "Anna")]
    name: String,
}

/// `{"image_id", "face"}`: a stored face as an example ("this is Anna").
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StoredFaceBody {
    /// A processed image (`GET /image/<id>`).
    image_id: Uuid,
    /// The face's index in that image's `faces`, from 0.
    face: u64,
}

/// An example photo: exactly one face in it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ExamplePhotoForm {
    /// Any image format the decoder reads, told from the bytes.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
}

fn database(error: sqlx::Error) -> ApiError {
    ApiError::database("detail", error)
}

fn subject_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found())
}

fn subject_error(error: SubjectError, name: &str) -> ApiError {
    match error {
        SubjectError::NameTaken => ApiError::new(
            StatusCode::CONFLICT,
            "name",
            format!("A subject named “{name}” already exists."),
        ),
        SubjectError::NotFound => ApiError::not_found(),
        SubjectError::Database(error) => database(error),
    }
}

/// The body as JSON (whatever the content type says); `detail` if it is not.
pub async fn json_body(request: Request) -> Result<Value, ApiError> {
    let body = to_bytes(request.into_body(), MAX_JSON_BYTES)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "detail",
                format!("The body is over {MAX_JSON_BYTES} bytes."),
            )
        })?;
    serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "detail",
            "The body is not valid JSON.",
        )
    })
}

/// The valid `name` of a JSON body.
fn name_of(body: &Value) -> Result<String, ApiError> {
    let bad = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "name", message);
    match body.get("name") {
        None | Some(Value::Null) => Err(bad("This field is required.".into())),
        Some(Value::String(name)) => valid_name(name).map_err(bad),
        Some(_) => Err(bad("Enter the name as a string.".into())),
    }
}

/// Every subject, by name.
#[utoipa::path(
    get,
    operation_id = "subjects_list",
    path = "/subjects",
    tag = "recognition",
    responses(
        (status = 200, description = "The subjects", body = SubjectList),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<SubjectList>, ApiError> {
    let subjects = state.db.subjects().await.map_err(database)?;
    Ok(Json(SubjectList {
        subjects: subjects
            .into_iter()
            .map(|s| SubjectView::new(s, None))
            .collect(),
    }))
}

/// Create a subject: a person to recognise, by name.
#[utoipa::path(
    post,
    operation_id = "subject_create",
    path = "/subjects",
    tag = "recognition",
    request_body(content = NameBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = SubjectView),
        (status = 400, description = "`name` missing or invalid, or a body that is not JSON", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 409, description = "Another subject has this name", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn create(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<(StatusCode, Json<SubjectView>), ApiError> {
    let name = name_of(&json_body(request).await?)?;
    let subject = state
        .db
        .create_subject(&name)
        .await
        .map_err(|e| subject_error(e, &name))?;
    crate::refresh::examples_now(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(SubjectView::new(subject, Some(Vec::new()))),
    ))
}

/// One subject with its example faces.
#[utoipa::path(
    get,
    operation_id = "subject_show",
    path = "/subjects/{id}",
    tag = "recognition",
    params(("id" = Uuid, Path, description = "The subject's id")),
    responses(
        (status = 200, description = "The subject", body = SubjectView),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 404, description = "No such subject", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn show(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Json<SubjectView>, ApiError> {
    let id = subject_id(&id)?;
    let subject = state.db.subject(id).await.map_err(database)?;
    let subject = subject.ok_or_else(ApiError::not_found)?;
    let examples = state.db.examples_of(id).await.map_err(database)?;
    Ok(Json(SubjectView::new(subject, Some(examples))))
}

/// Rename a subject: every face named after it is shown with the new name at once.
#[utoipa::path(
    patch,
    operation_id = "subject_rename",
    path = "/subjects/{id}",
    tag = "recognition",
    params(("id" = Uuid, Path, description = "The subject's id")),
    request_body(content = NameBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Renamed", body = SubjectView),
        (status = 400, description = "`name` missing or invalid, or a body that is not JSON", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 404, description = "No such subject", body = crate::api::schema::ErrorBody),
        (status = 409, description = "Another subject has this name", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn rename(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Json<SubjectView>, ApiError> {
    let id = subject_id(&id)?;
    let name = name_of(&json_body(request).await?)?;
    let subject = state
        .db
        .rename_subject(id, &name)
        .await
        .map_err(|e| subject_error(e, &name))?;
    crate::refresh::examples_now(&state).await;
    Ok(Json(SubjectView::new(subject, None)))
}

/// Delete a subject and its example faces (and their photos); its faces go back to
/// unnamed.
#[utoipa::path(
    delete,
    operation_id = "subject_delete",
    path = "/subjects/{id}",
    tag = "recognition",
    params(("id" = Uuid, Path, description = "The subject's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 404, description = "No such subject", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id = subject_id(&id)?;
    let keys = state.db.delete_subject(id).await.map_err(database)?;
    let keys = keys.ok_or_else(ApiError::not_found)?;
    crate::refresh::examples_now(&state).await;
    remove_photos(&state, keys).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Add an example face to a subject: an example photo (multipart, field `image`,
/// exactly one face in it), or a stored face as JSON `{"image_id", "face"}` ("this
/// is Anna", from the gallery).
#[utoipa::path(
    post,
    operation_id = "subject_example_add",
    path = "/subjects/{id}/examples",
    tag = "recognition",
    params(("id" = Uuid, Path, description = "The subject's id")),
    request_body(content(
        (ExamplePhotoForm = "multipart/form-data"),
        (StoredFaceBody = "application/json"),
    )),
    responses(
        (status = 201, description = "Added", body = ExampleView),
        (status = 400, description = "`image`: no file, not an image, or not exactly one face (the sentence says how many); `image_id` / `face`: no such image or face, or not processed", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 404, description = "No such subject", body = crate::api::schema::ErrorBody),
        (status = 413, description = "Over the byte limit, the pixel limit or the memory budget", body = crate::api::schema::ErrorBody),
        (status = 503, description = "The node is busy, or the database or storage unreachable", body = crate::api::schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security((), ("bearer" = []))
)]
pub async fn add_example(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let answer = async {
        let id = subject_id(&id)?;
        if detection::media_type(request.headers()) == "multipart/form-data" {
            photo_example(&state, id, request).await
        } else {
            stored_example(&state, id, json_body(request).await?).await
        }
    };
    match answer.await {
        Ok(example) => (StatusCode::CREATED, Json(ExampleView::from(example))).into_response(),
        Err(error) => closing(error),
    }
}

async fn photo_example(
    state: &Arc<AppState>,
    subject: Uuid,
    request: Request,
) -> Result<Example, ApiError> {
    let _slot = detection::enter(state, &request).map_err(refusal)?;
    let form = detection::read_multipart(request, &["image"], state.config.max_upload_bytes)
        .await
        .map_err(refusal)?;
    let photo = form
        .file("image")
        .ok_or_else(|| ApiError::image(messages::NO_FILE))?;
    if photo.is_empty() {
        return Err(ApiError::image(messages::EMPTY));
    }
    if state.db.subject(subject).await.map_err(database)?.is_none() {
        return Err(ApiError::not_found());
    }
    add_photo(state, subject, photo)
        .await
        .map_err(|refused| match refused {
            PhotoRefused::Photo(r) => refusal(r),
            PhotoRefused::Faces(n) => ApiError::image(face_count_message(n)),
            PhotoRefused::Subject(e) => subject_error(e, ""),
            PhotoRefused::Store(e) => ApiError::fault("image", Fault::of_store(&e), e),
        })
}

async fn stored_example(
    state: &Arc<AppState>,
    subject: Uuid,
    body: Value,
) -> Result<Example, ApiError> {
    let (image, face) = stored_face_of(&body)?;
    if state.db.subject(subject).await.map_err(database)?.is_none() {
        return Err(ApiError::not_found());
    }
    add_stored(state, subject, image, face)
        .await
        .map_err(|refused| match refused {
            StoredExampleRefused::Face(refused) => stored_refusal(refused),
            StoredExampleRefused::Subject(e) => subject_error(e, ""),
        })
}

/// `image_id` and `face` of a JSON body.
pub fn stored_face_of(body: &Value) -> Result<(Uuid, usize), ApiError> {
    let bad = |field, message: &str| ApiError::new(StatusCode::BAD_REQUEST, field, message);
    let image = match body.get("image_id") {
        None | Some(Value::Null) => return Err(bad("image_id", "This field is required.")),
        Some(value) => value
            .as_str()
            .and_then(|text| Uuid::parse_str(text).ok())
            .ok_or_else(|| bad("image_id", "Enter the id of an image."))?,
    };
    let face = match body.get("face") {
        None | Some(Value::Null) => return Err(bad("face", "This field is required.")),
        Some(value) => value.as_u64().ok_or_else(|| {
            bad(
                "face",
                "Enter the face's index in the image's faces, from 0.",
            )
        })?,
    };
    Ok((image, face as usize))
}

/// Our answer to a stored face that cannot be used.
pub fn stored_refusal(refused: StoredRefused) -> ApiError {
    let bad = |field, message: String| ApiError::new(StatusCode::BAD_REQUEST, field, message);
    match refused {
        StoredRefused::NoImage => bad("image_id", "No image has this id.".into()),
        StoredRefused::NotDone(status) => bad(
            "image_id",
            format!(
                "This image is {}, not processed: only a processed image's faces can be used.",
                status.as_str()
            ),
        ),
        StoredRefused::NoFace(0) => bad("face", "This image has no faces.".into()),
        StoredRefused::NoFace(n) => bad(
            "face",
            format!("This image has {n} faces: face must be 0 to {}.", n - 1),
        ),
        StoredRefused::OriginalGone => bad(
            "image_id",
            "This image's original is gone, and its face has no embedding to use.".into(),
        ),
        StoredRefused::Photo(r) => refusal(r),
        StoredRefused::Store(e) => ApiError::fault("detail", Fault::of_store(&e), e),
        StoredRefused::Database(e) => database(e),
    }
}

/// Our answer to a photo that could not be detected.
pub fn refusal(refusal: Refusal) -> ApiError {
    if let Refusal::Failed = refusal {
        return ApiError::internal("detecting a photo in the request failed");
    }
    let error = ApiError::new(refusal.status(), "image", refusal.message());
    match refusal.retry_after() {
        Some(seconds) => error.retry_after(seconds),
        None => error,
    }
}

/// `error` as a response, closing the connection where the photo may not have
/// been read whole (a refusal before or while reading it).
pub fn closing(error: ApiError) -> Response {
    let close = matches!(
        error.status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::SERVICE_UNAVAILABLE
    );
    let mut response = error.into_response();
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Remove an example face from a subject (and its photo, if it has one).
#[utoipa::path(
    delete,
    operation_id = "subject_example_delete",
    path = "/subjects/{id}/examples/{example_id}",
    tag = "recognition",
    params(
        ("id" = Uuid, Path, description = "The subject's id"),
        ("example_id" = Uuid, Path, description = "The example's id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 404, description = "No such subject, or no such example of it", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn delete_example(
    State(state): State<Arc<AppState>>,
    Path((id, example)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (id, example) = (subject_id(&id)?, subject_id(&example)?);
    let deleted = state
        .db
        .delete_example(id, example)
        .await
        .map_err(database)?;
    let key = deleted.ok_or_else(ApiError::not_found)?;
    crate::refresh::examples_now(&state).await;
    remove_photos(&state, key.into_iter().collect()).await;
    Ok(StatusCode::NO_CONTENT)
}
