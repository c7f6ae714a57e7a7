//! DeepStack's (and CodeProject.AI's) face recognition: `POST /v1/vision/face/register`,
//! `/recognize`, `/list` and `/delete`, as deepstack-python, Home Assistant and
//! double-take call them. A DeepStack "userid" is one of our subjects; each image
//! registered is one more example of it (DeepStack replaced the userid's one
//! embedding, which loses all but the last photo double-take trains). Confidences
//! come from the distance through [`scale::similarity`]. Errors are DeepStack's, in
//! its order (key, images, userid); docs/api.md lists them all.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::deepstack::{check_key, min_confidence, rounded, DeepStackError};
use super::detection::{self, PixelBox, Refusal};
use super::scale;
use crate::api::examples::{self, PhotoRefused};
use crate::db::SubjectError;
use crate::error::Fault;
use crate::recognition::valid_name;
use crate::state::AppState;

/// DeepStack's `min_confidence` for recognition when a client sends none.
const DEFAULT_MIN_CONFIDENCE: f32 = scale::NAMED_AT;

/// What CodeProject.AI adds to DeepStack's answers (Blue Iris and Agent DVR read them).
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeProjectFields {
    /// Milliseconds the networks ran.
    #[serde(rename = "inferenceMs")]
    inference_ms: u64,
    /// Milliseconds the whole request took.
    #[serde(rename = "processMs")]
    process_ms: u64,
    #[serde(rename = "moduleId")]
    #[schema(example = "FaceProcessing")]
    module_id: &'static str,
    #[serde(rename = "moduleName")]
    #[schema(example = "Face Processing")]
    module_name: &'static str,
    /// 200.
    code: u16,
    #[schema(example = "recognize")]
    command: &'static str,
    #[serde(rename = "requestId")]
    request_id: String,
    #[serde(rename = "inferenceDevice")]
    #[schema(example = "CPU")]
    inference_device: &'static str,
    /// RFC 1123, e.g. `Mon, 07 Dec 2026 15:48:03 GMT`.
    #[serde(rename = "timestampUTC")]
    timestamp_utc: String,
}

impl CodeProjectFields {
    fn new(command: &'static str, inference_ms: u64, started: Instant) -> Self {
        CodeProjectFields {
            inference_ms,
            process_ms: started.elapsed().as_millis() as u64,
            module_id: "FaceProcessing",
            module_name: "Face Processing",
            code: 200,
            command,
            request_id: uuid::Uuid::new_v4().to_string(),
            inference_device: "CPU",
            timestamp_utc: chrono::Utc::now()
                .format("%a, %d %b %Y %H:%M:%S GMT")
                .to_string(),
        }
    }
}

/// `register`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeepStackRegistered {
    /// Always `true` here.
    success: bool,
    /// `face added` for a new userid, `face updated` when it had examples already.
    #[schema(example = "face added")]
    message: &'static str,
    /// DeepStack's field, always 0.
    duration: u64,
    #[serde(flatten)]
    codeproject: CodeProjectFields,
}

/// One face found by `recognize`, in whole pixels of the upright image.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeepStackRecognized {
    /// From the distance to the userid's nearest example (see docs/api.md,
    /// "Recognition's confidence"); 0 for `unknown`.
    #[schema(example = 0.89931)]
    confidence: f64,
    /// The subject, or `unknown`.
    #[schema(example = "obama")]
    userid: String,
    y_min: u32,
    x_min: u32,
    y_max: u32,
    x_max: u32,
}

/// `recognize`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeepStackRecognition {
    /// Always `true` here.
    success: bool,
    /// One per face found, best detection first; empty when there is no face.
    predictions: Vec<DeepStackRecognized>,
    /// DeepStack's field, always 0.
    duration: u64,
    /// Faces found.
    count: usize,
    /// `A face was recognised` or `No known faces`.
    message: &'static str,
    #[serde(flatten)]
    codeproject: CodeProjectFields,
}

/// `list`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeepStackList {
    success: bool,
    /// Every userid (subject), by name.
    faces: Vec<String>,
    duration: u64,
}

/// `delete`'s answer, whether or not the userid existed.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeepStackDeleted {
    success: bool,
    duration: u64,
}

/// `register`'s form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeepStackRegisterForm {
    /// The subject's name.
    userid: String,
    /// One or more photos, each showing exactly one face: any part with a file name
    /// (whatever its field name), or parts named `image<N>`.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    api_key: Option<String>,
}

/// `recognize`'s form.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeepStackRecognizeForm {
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// The recognition threshold, DeepStack's default 0.67: a face below it is `unknown`.
    min_confidence: Option<f64>,
    api_key: Option<String>,
}

/// `list`'s and `delete`'s form (multipart or urlencoded).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeepStackUserForm {
    /// `delete` only: the subject to delete with all its examples.
    userid: Option<String>,
    api_key: Option<String>,
}

fn answer<T: Serialize>(result: Result<T, DeepStackError>, what: &str) -> Response {
    match result {
        Ok(body) => Json(body).into_response(),
        Err(failure) => {
            tracing::info!(status = failure.status().as_u16(), reason = %failure.error(), "DeepStack {what} refused");
            failure.into_response()
        }
    }
}

fn database(error: sqlx::Error) -> DeepStackError {
    DeepStackError::fault(Fault::of_database(&error), error)
}

/// Register a face: one or more photos of `userid`, each an example of that subject.
///
/// Each photo must show exactly one face; all are added or none.
#[utoipa::path(
    post,
    operation_id = "deepstack_face_register",
    path = "/v1/vision/face/register",
    tag = "peers",
    request_body(content = DeepStackRegisterForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Added", body = DeepStackRegistered),
        (status = 400, description = "`No valid image file found`, `userid not specified`, `invalid image`, `no face detected`, several faces, or a body that could not be read", body = DeepStackError),
        (status = 401, description = "`Incorrect api key`", body = DeepStackError),
        (status = 413, description = "Over the byte limit, the pixel limit or the memory budget", body = DeepStackError),
        (status = 503, description = "The node is busy, or the database or storage unreachable", body = DeepStackError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "No space left", body = DeepStackError),
    ),
)]
pub async fn register(State(state): State<Arc<AppState>>, request: Request) -> Response {
    answer(registered(&state, request).await, "register")
}

async fn registered(
    state: &Arc<AppState>,
    request: Request,
) -> Result<DeepStackRegistered, DeepStackError> {
    let started = Instant::now();
    let _slot = detection::enter(state, &request)?;
    let form = detection::read_form(request, state.config.max_upload_bytes).await?;
    check_key(state, form.value("api_key"))?;
    if form.files.is_empty() {
        return Err(DeepStackError::new(
            StatusCode::BAD_REQUEST,
            "No valid image file found",
        ));
    }
    let userid = form.value("userid").map(str::trim).unwrap_or_default();
    if userid.is_empty() {
        return Err(DeepStackError::new(
            StatusCode::BAD_REQUEST,
            "userid not specified",
        ));
    }
    let userid = valid_name(userid)
        .map_err(|sentence| DeepStackError::new(StatusCode::BAD_REQUEST, sentence))?;
    let threshold = state.config.score_threshold;
    let mut photos = Vec::new();
    for (n, photo) in form.files.iter().enumerate() {
        let (face, embedding) = examples::one_face(state, photo.clone(), threshold)
            .await
            .map_err(|refused| photo_refused(refused, n, form.files.len()))?;
        photos.push((photo.clone(), face, embedding));
    }
    let inference = started.elapsed().as_millis() as u64;
    let (_, created) = examples::add_photos_named(state, &userid, photos)
        .await
        .map_err(|refused| photo_refused(refused, 0, 1))?;
    Ok(DeepStackRegistered {
        success: true,
        message: if created {
            "face added"
        } else {
            "face updated"
        },
        duration: 0,
        codeproject: CodeProjectFields::new("register", inference, started),
    })
}

/// DeepStack's answer to photo `n` of `of` that could not be an example.
fn photo_refused(refused: PhotoRefused, n: usize, of: usize) -> DeepStackError {
    match refused {
        PhotoRefused::Photo(refusal) => DeepStackError::from(refusal),
        PhotoRefused::Faces(0) => DeepStackError::new(StatusCode::BAD_REQUEST, "no face detected"),
        PhotoRefused::Faces(faces) => {
            let which = if of > 1 {
                format!("image {} of {of}", n + 1)
            } else {
                "the image".to_owned()
            };
            DeepStackError::new(
                StatusCode::BAD_REQUEST,
                format!("{faces} faces detected in {which}; an image to register must show exactly one face"),
            )
        }
        PhotoRefused::Subject(SubjectError::Database(error)) => database(error),
        // A name is taken by the subject it is added to, and no subject goes missing here.
        PhotoRefused::Subject(other) => DeepStackError::from({
            tracing::error!(?other, "registering failed");
            Refusal::Failed
        }),
        PhotoRefused::Store(error) => DeepStackError::fault(Fault::of_store(&error), error),
    }
}

/// Recognize the faces in a photo: each named after the subject of its nearest
/// example if that is within the match distance and its confidence reaches
/// `min_confidence`, else `unknown` with confidence 0.
#[utoipa::path(
    post,
    operation_id = "deepstack_face_recognize",
    path = "/v1/vision/face/recognize",
    tag = "peers",
    request_body(content = DeepStackRecognizeForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The faces found (none: `predictions` empty)", body = DeepStackRecognition),
        (status = 400, description = "`No valid image file found`, `Invalid value for min_confidence`, `min_confidence cannot be greater than 1`, `invalid image`, or a body that could not be read", body = DeepStackError),
        (status = 401, description = "`Incorrect api key`", body = DeepStackError),
        (status = 413, description = "Over the byte limit, the pixel limit or the memory budget", body = DeepStackError),
        (status = 503, description = "The node is at its limits for photos at once", body = DeepStackError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
pub async fn recognize(State(state): State<Arc<AppState>>, request: Request) -> Response {
    answer(recognized(&state, request).await, "recognize")
}

async fn recognized(
    state: &Arc<AppState>,
    request: Request,
) -> Result<DeepStackRecognition, DeepStackError> {
    let started = Instant::now();
    let _slot = detection::enter(state, &request)?;
    let form =
        detection::read_multipart(request, &["image"], state.config.max_upload_bytes).await?;
    check_key(state, form.value("api_key"))?;
    let Some(image) = form.file("image") else {
        return Err(DeepStackError::new(
            StatusCode::BAD_REQUEST,
            "No valid image file found",
        ));
    };
    let threshold = min_confidence(form.value("min_confidence"), DEFAULT_MIN_CONFIDENCE)?;
    let found = detection::detect(state, image, state.config.score_threshold, true).await?;
    let (examples, within) = (state.index.examples(), state.config.match_distance);
    let predictions: Vec<DeepStackRecognized> = found
        .faces
        .iter()
        .zip(&found.embeddings)
        .map(|(face, embedding)| {
            let named = examples.nearest(embedding, within).and_then(|nearest| {
                let confidence = scale::similarity(nearest.distance, within)?;
                (confidence >= threshold).then_some((nearest.name, confidence))
            });
            let (userid, confidence) = named.unwrap_or_else(|| ("unknown".to_owned(), 0.0));
            let pixels = PixelBox::of(face, found.width, found.height);
            DeepStackRecognized {
                confidence: rounded(confidence),
                userid,
                y_min: pixels.y_min,
                x_min: pixels.x_min,
                y_max: pixels.y_max,
                x_max: pixels.x_max,
            }
        })
        .collect();
    let known = predictions.iter().any(|p| p.userid != "unknown");
    Ok(DeepStackRecognition {
        success: true,
        count: predictions.len(),
        predictions,
        duration: 0,
        message: if known {
            "A face was recognised"
        } else {
            "No known faces"
        },
        codeproject: CodeProjectFields::new("recognize", found.process.as_millis() as u64, started),
    })
}

/// List the registered userids (the subjects), multipart or urlencoded.
#[utoipa::path(
    post,
    operation_id = "deepstack_face_list",
    path = "/v1/vision/face/list",
    tag = "peers",
    request_body(content = DeepStackUserForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The userids", body = DeepStackList),
        (status = 401, description = "`Incorrect api key`", body = DeepStackError),
        (status = 503, description = "The database is unreachable", body = DeepStackError),
    ),
)]
pub async fn list(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let listed = async {
        let form = detection::read_form(request, 1024 * 1024).await?;
        check_key(&state, form.value("api_key"))?;
        let subjects = state.db.subjects().await.map_err(database)?;
        Ok(DeepStackList {
            success: true,
            faces: subjects.into_iter().map(|s| s.name).collect(),
            duration: 0,
        })
    };
    answer(listed.await, "list")
}

/// Delete a userid (the subject and all its examples); a success also when there
/// was none, as in DeepStack.
#[utoipa::path(
    post,
    operation_id = "deepstack_face_delete",
    path = "/v1/vision/face/delete",
    tag = "peers",
    request_body(content = DeepStackUserForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Deleted, or there was none", body = DeepStackDeleted),
        (status = 400, description = "`userid not specified`", body = DeepStackError),
        (status = 401, description = "`Incorrect api key`", body = DeepStackError),
        (status = 503, description = "The database is unreachable", body = DeepStackError),
    ),
)]
pub async fn delete(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let deleted = async {
        let form = detection::read_form(request, 1024 * 1024).await?;
        check_key(&state, form.value("api_key"))?;
        let userid = form.value("userid").map(str::trim).unwrap_or_default();
        if userid.is_empty() {
            return Err(DeepStackError::new(
                StatusCode::BAD_REQUEST,
                "userid not specified",
            ));
        }
        let removed = state
            .db
            .delete_subjects_named(Some(userid))
            .await
            .map_err(database)?;
        crate::refresh::examples_now(&state).await;
        examples::remove_photos(&state, removed.photo_keys).await;
        Ok(DeepStackDeleted {
            success: true,
            duration: 0,
        })
    };
    answer(deleted.await, "delete")
}
