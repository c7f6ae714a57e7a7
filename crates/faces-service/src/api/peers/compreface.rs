//! CompreFace's `POST /api/v1/detection/detect`: the photo as multipart part `file`
//! or as JSON `{"file": "<base64>"}`; query `limit`, `det_prob_threshold`,
//! `face_plugins` and `status`; the key in header `x-api-key`. Errors are CompreFace's
//! `{"message", "code"}` with its codes; docs/api.md lists them all, in the order
//! they are checked.

use std::sync::Arc;

use axum::body::to_bytes;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;

use super::detection::{self, pixel_point, Found, PixelBox, Refusal};
use super::scale;
use crate::state::AppState;

/// CompreFace's `det_prob_threshold` when a client sends none.
const DEFAULT_THRESHOLD: f32 = 0.8;
/// What `plugins_versions` names for the detector and the landmarks.
const DETECTOR_VERSION: &str = "faces.RetinaFace-MobileNet0.25";
/// What `plugins_versions` names for the embeddings.
const CALCULATOR_VERSION: &str = "dlib.face_recognition_resnet_model_v1";

/// CompreFace's error codes that these answers use.
pub(super) mod code {
    /// `UNAVAILABLE_FILE_EXTENSION`: CompreFace's code for a file it cannot take as an image.
    pub const NOT_AN_IMAGE: u16 = 21;
    /// `MODEL_NOT_FOUND`: no service with this API key.
    pub const UNKNOWN_KEY: u16 = 10;
    /// `MISSING_REQUEST_HEADER`.
    pub const MISSING_HEADER: u16 = 20;
    /// `VALIDATION_CONSTRAINT_VIOLATION`: a bad parameter, or a body that cannot be read.
    pub const INVALID: u16 = 26;
    /// `NO_FACES_FOUND`.
    pub const NO_FACE: u16 = 28;
    /// `MISSING_REQUEST_PART`.
    pub const MISSING_PART: u16 = 34;
    /// `FACES_SERVICE_EXCEPTION`: the detection could not be run.
    pub const SERVICE: u16 = 41;
    /// `UNDEFINED`: anything else (here: the database or storage is away).
    pub const UNDEFINED: u16 = 0;
    /// `TOO_MANY_FACES`: more than one face in an example photo.
    pub const TOO_MANY_FACES: u16 = 31;
    /// `MISSING_REQUEST_PARAMETER`.
    pub const MISSING_PARAMETER: u16 = 33;
    /// `SUBJECT_NOT_FOUND` (404).
    pub const SUBJECT_NOT_FOUND: u16 = 42;
    /// `SUBJECT_ALREADY_EXISTS`.
    pub const SUBJECT_EXISTS: u16 = 43;
    /// `EMBEDDING_NOT_FOUND` (404): no example with this `image_id`.
    pub const IMAGE_NOT_FOUND: u16 = 44;
}

/// One face: its box, and with the plugins asked for, its landmarks and timing.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceFace {
    #[serde(rename = "box")]
    face_box: CompreFaceBox,
    /// Recognition only: the subjects with an example within the match distance,
    /// nearest first, at most `prediction_count`; `[]` when none is.
    #[serde(skip_serializing_if = "Option::is_none")]
    subjects: Option<Vec<CompreFaceSubject>>,
    /// With `face_plugins=landmarks`: right eye, left eye, nose, right and left mouth corner.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Vec<u32>>>)]
    landmarks: Option<Vec<[u32; 2]>>,
    /// With `face_plugins=calculator`: the face's embedding, dlib's 128 numbers.
    #[serde(skip_serializing_if = "Option::is_none")]
    embedding: Option<Vec<f32>>,
    /// Verification only: how alike this face and the one it is verified against
    /// are (see docs/api.md, "Recognition's confidence"), 0.67 at the match distance.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.97858)]
    similarity: Option<f64>,
    /// With `status=true`: milliseconds per plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_time: Option<CompreFaceExecutionTime>,
}

/// A subject a face may be.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CompreFaceSubject {
    #[schema(example = "Kit Harington")]
    subject: String,
    /// From the distance to the subject's nearest example (see docs/api.md,
    /// "Recognition's confidence"): 0.67 at the match distance, 1 at 0.
    #[schema(example = 0.78812)]
    similarity: f64,
}

impl CompreFaceSubject {
    pub(super) fn new(subject: String, similarity: f32) -> Self {
        CompreFaceSubject {
            subject,
            similarity: rounded(similarity),
        }
    }
}

/// A face's box in whole pixels of the upright image, inside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceBox {
    /// On CompreFace's scale (see docs/api.md, "Thresholds").
    #[schema(example = 0.99051)]
    probability: f64,
    x_max: u32,
    y_max: u32,
    x_min: u32,
    y_min: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceExecutionTime {
    detector: f64,
    /// With `face_plugins=calculator` or recognising: the embeddings' share.
    #[serde(skip_serializing_if = "Option::is_none")]
    calculator: Option<f64>,
}

/// With `status=true`: what ran.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFacePlugins {
    detector: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    landmarks: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calculator: Option<&'static str>,
}

/// The answer when at least one face is found.
#[derive(Debug, Serialize, ToSchema)]
pub struct CompreFaceFaces {
    pub(super) result: Vec<CompreFaceFace>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) plugins_versions: Option<CompreFacePlugins>,
}

/// What recognition or verification adds to each face of [`detected`]'s answer, one
/// per face of the detection, in its order.
pub(super) enum Matches {
    None,
    Subjects(Vec<Vec<CompreFaceSubject>>),
    Similarity(Vec<f32>),
}

/// Every error: CompreFace's shape.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"message": "No face is found in the given image", "code": 28}))]
pub struct CompreFaceError {
    message: String,
    code: u16,
    #[serde(skip)]
    status: StatusCode,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl CompreFaceError {
    /// The HTTP status it is answered with.
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    pub(super) fn message(&self) -> &str {
        &self.message
    }

    /// A storage or database fault, answered by what it is: `507` for no space,
    /// `503` with `Retry-After` for a busy or unreachable back end.
    pub(super) fn fault(fault: crate::error::Fault, error: impl std::fmt::Display) -> Self {
        let ours = crate::error::ApiError::fault("detail", fault, error);
        CompreFaceError {
            retry_after: ours.retry_after,
            ..CompreFaceError::new(ours.status, code::UNDEFINED, ours.message)
        }
    }

    pub(super) fn new(status: StatusCode, code: u16, message: impl Into<String>) -> Self {
        CompreFaceError {
            message: message.into(),
            code,
            status,
            retry_after: None,
        }
    }

    pub(super) fn invalid(message: impl Into<String>) -> Self {
        CompreFaceError::new(StatusCode::BAD_REQUEST, code::INVALID, message)
    }
}

impl From<Refusal> for CompreFaceError {
    fn from(refusal: Refusal) -> Self {
        let code = match refusal {
            Refusal::InvalidImage => code::NOT_AN_IMAGE,
            Refusal::TooLarge(_) | Refusal::Unreadable(..) => code::INVALID,
            Refusal::Busy(_) | Refusal::Failed => code::SERVICE,
        };
        CompreFaceError {
            retry_after: refusal.retry_after(),
            ..CompreFaceError::new(refusal.status(), code, refusal.message())
        }
    }
}

impl IntoResponse for CompreFaceError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        detection::error_response(status, retry_after, Json(self))
    }
}

/// The multipart form (a JSON body `{"file": "<base64>"}` is taken too).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CompreFaceForm {
    /// Any image format the decoder reads, told from the bytes: the part's file name
    /// and content type do not matter.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

/// The query's options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Options {
    /// Faces answered at most, the largest first; 0 for all.
    limit: usize,
    /// On CompreFace's scale.
    pub(super) threshold: f32,
    pub(super) landmarks: bool,
    /// `face_plugins=calculator`: each face's embedding.
    pub(super) calculator: bool,
    status: bool,
    /// Recognition: subjects listed per face, 1 or more.
    pub(super) prediction_count: usize,
    /// Recognition: `false` takes the whole photo as one face (a crop already).
    pub(super) detect_faces: bool,
}

/// Detect faces, as CompreFace's detection service does.
///
/// Answered now, from the shared detector; nothing is stored or announced.
#[utoipa::path(
    post,
    operation_id = "compreface_detect",
    path = "/api/v1/detection/detect",
    tag = "peers",
    request_body(content = CompreFaceForm, content_type = "multipart/form-data"),
    params(
        ("x-api-key" = Option<String>, Header, description = "One of the `--api-key` keys; needed only when any is set"),
        ("limit" = Option<u64>, Query, description = "Faces answered at most, the largest first; 0 (default) for all"),
        ("det_prob_threshold" = Option<f64>, Query, minimum = 0, maximum = 1, description = "Minimum probability on CompreFace's scale; default 0.8"),
        ("face_plugins" = Option<String>, Query, description = "Comma-separated; `landmarks` adds each face's 5 landmarks, `calculator` its embedding (dlib's 128 numbers), others are ignored"),
        ("status" = Option<bool>, Query, description = "`true` adds `execution_time` per face and `plugins_versions`"),
    ),
    responses(
        (status = 200, description = "At least one face found", body = CompreFaceFaces),
        (status = 400, description = "Code 20: keys are configured and `x-api-key` is missing; 26: a bad parameter or an unreadable body; 34: no `file`; 21: not Base64, or not an image; 28: no face found", body = CompreFaceError),
        (status = 404, description = "Code 10: keys are configured and `x-api-key` is none of them", body = CompreFaceError),
        (status = 413, description = "Code 26: over the byte limit, the pixel limit or the memory budget", body = CompreFaceError),
        (status = 503, description = "Code 41: the node is at its limits for photos at once, or has no detection slot free within 5 s", body = CompreFaceError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
pub async fn detect(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match answer(&state, request).await {
        Ok(detected) => Json(detected).into_response(),
        Err(failure) => {
            tracing::info!(status = failure.status.as_u16(), reason = %failure.message, "face detection refused");
            failure.into_response()
        }
    }
}

async fn answer(
    state: &Arc<AppState>,
    request: Request,
) -> Result<CompreFaceFaces, CompreFaceError> {
    let _slot = detection::enter(state, &request)?;
    let (image, options) = photo_request(state, request, "Detection").await?;
    let found = detect_now(state, image, &options, options.calculator).await?;
    Ok(detected(
        found,
        options,
        state.config.score_threshold,
        Matches::None,
    ))
}

/// A request with a photo, as CompreFace reads one: the whole body first (a client
/// still sending its photo must not meet a closed connection), then the key
/// (`service` names the service in the answer to an unknown key), the file, the
/// query's options.
pub(super) async fn photo_request(
    state: &Arc<AppState>,
    request: Request,
    service: &str,
) -> Result<(Bytes, Options), CompreFaceError> {
    let (images, options) = photos_request(state, request, service, &["file"]).await?;
    let image = images.into_iter().next().unwrap_or_default();
    Ok((image, options))
}

/// [`photo_request`] for a request with several photos: the parts (or JSON keys)
/// `names`, each required, in that order.
pub(super) async fn photos_request(
    state: &Arc<AppState>,
    request: Request,
    service: &str,
    names: &[&str],
) -> Result<(Vec<Bytes>, Options), CompreFaceError> {
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let files = read_files(state, request, names).await?;
    let given = key_header(state, &headers)?;
    let files = files
        .into_iter()
        .zip(names)
        .map(|(file, name)| {
            file.ok_or_else(|| {
                CompreFaceError::new(
                    StatusCode::BAD_REQUEST,
                    code::MISSING_PART,
                    format!("Required part {name} is missing"),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let options = options(query.as_deref())?;
    check_key(state, given, service)?;
    let images = files
        .into_iter()
        .map(|file| match file {
            File::Bytes(bytes) => Ok(bytes),
            File::Base64(text) => base64_file(&text),
        })
        .collect::<Result<_, _>>()?;
    Ok((images, options))
}

/// The `x-api-key` header; with keys configured, a missing one is refused (code 20).
pub(super) fn key_header(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<String>, CompreFaceError> {
    let given = headers
        .get("x-api-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if !state.config.api_keys.is_empty() && given.is_none() {
        return Err(CompreFaceError::new(
            StatusCode::BAD_REQUEST,
            code::MISSING_HEADER,
            "Missing header: x-api-key",
        ));
    }
    Ok(given)
}

/// With keys configured, `given` must be one (code 10, 404, naming `service`).
pub(super) fn check_key(
    state: &AppState,
    given: Option<String>,
    service: &str,
) -> Result<(), CompreFaceError> {
    let keys = &state.config.api_keys;
    if let Some(given) = given.filter(|_| !keys.is_empty()) {
        if !super::super::auth::accepted(keys, &given) {
            return Err(CompreFaceError::new(
                StatusCode::NOT_FOUND,
                code::UNKNOWN_KEY,
                format!("{service} service with API Key {given} not found"),
            ));
        }
    }
    Ok(())
}

/// Detects `image` at the options' threshold, with each face's embedding when
/// `embed`; no face is CompreFace's code 28.
pub(super) async fn detect_now(
    state: &Arc<AppState>,
    image: Bytes,
    options: &Options,
    embed: bool,
) -> Result<Found, CompreFaceError> {
    let threshold = scale::COMPREFACE.threshold(options.threshold, state.config.score_threshold);
    let found = detection::detect(state, image, threshold, embed).await?;
    if found.faces.is_empty() {
        return Err(no_face());
    }
    Ok(found)
}

/// CompreFace's answer to a photo without a face.
pub(super) fn no_face() -> CompreFaceError {
    CompreFaceError::new(
        StatusCode::BAD_REQUEST,
        code::NO_FACE,
        "No face is found in the given image",
    )
}

/// The query's options; unknown parameters and empty pairs (the SDK writes `?&k=v`)
/// are ignored, and so are unknown plugins (double-take asks for `undefined`).
pub(super) fn options(query: Option<&str>) -> Result<Options, CompreFaceError> {
    let mut options = Options {
        limit: 0,
        threshold: DEFAULT_THRESHOLD,
        landmarks: false,
        calculator: false,
        status: false,
        prediction_count: 1,
        detect_faces: true,
    };
    for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let value = value.trim();
        match name.as_ref() {
            "limit" => {
                options.limit = value.parse().map_err(|_| {
                    CompreFaceError::invalid("limit: must be a whole number of faces, 0 or more")
                })?
            }
            "det_prob_threshold" => {
                options.threshold = value
                    .parse::<f32>()
                    .ok()
                    .filter(|t| (0.0..=1.0).contains(t))
                    .ok_or_else(|| {
                        CompreFaceError::invalid(
                            "det_prob_threshold: must be a number from 0.0 to 1.0",
                        )
                    })?
            }
            "face_plugins" => {
                let plugins: Vec<&str> = value.split(',').map(str::trim).collect();
                options.landmarks = plugins.contains(&"landmarks");
                options.calculator = plugins.contains(&"calculator");
            }
            "prediction_count" => {
                options.prediction_count =
                    value.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        CompreFaceError::invalid(
                            "prediction_count should be equal or greater than 1; ",
                        )
                    })?
            }
            "status" => {
                options.status = boolean(value)
                    .ok_or_else(|| CompreFaceError::invalid("status: must be true or false"))?
            }
            "detect_faces" => {
                options.detect_faces = boolean(value).ok_or_else(|| {
                    CompreFaceError::invalid("detect_faces: must be true or false")
                })?
            }
            _ => {}
        }
    }
    Ok(options)
}

/// A boolean as Spring reads one.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "yes" | "1" => Some(true),
        "false" | "off" | "no" | "0" | "" => Some(false),
        _ => None,
    }
}

/// The photo as sent: multipart part `file`, or JSON `{"file": "<base64>"}`.
pub(super) enum File {
    Bytes(Bytes),
    Base64(String),
}

/// Reads the body: the photo in each part (or JSON key) of `names`, in that order,
/// `None` where the body has none.
async fn read_files(
    state: &AppState,
    request: Request,
    names: &[&str],
) -> Result<Vec<Option<File>>, CompreFaceError> {
    let limit = state.config.max_upload_bytes;
    if detection::media_type(request.headers()) != "application/json" {
        let form = detection::read_multipart(request, names, limit).await?;
        return Ok(names
            .iter()
            .map(|name| form.file(name).map(File::Bytes))
            .collect());
    }
    let json_limit =
        (limit.saturating_mul(4 * names.len() as u64) / 3).saturating_add(64 * 1024) as usize;
    let body = to_bytes(request.into_body(), json_limit)
        .await
        .map_err(|_| {
            CompreFaceError::from(Refusal::TooLarge(crate::error::messages::too_large(limit)))
        })?;
    let json: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| CompreFaceError::invalid("The request body is not valid JSON."))?;
    Ok(names
        .iter()
        .map(|name| {
            json.get(name)
                .and_then(|f| f.as_str())
                .map(|text| File::Base64(text.to_owned()))
        })
        .collect())
}

/// Standard Base64 with or without padding, line breaks allowed, a `data:` URL prefix too.
pub(super) fn base64_file(text: &str) -> Result<Bytes, CompreFaceError> {
    let text = match text.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => text,
    };
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    engine.decode(compact).map(Bytes::from).map_err(|_| {
        CompreFaceError::new(
            StatusCode::BAD_REQUEST,
            code::NOT_AN_IMAGE,
            "Provided value is not Base64",
        )
    })
}

/// The answer for what `found` holds, each face with its `matches`.
pub(super) fn detected(
    found: Found,
    options: Options,
    ours: f32,
    matches: Matches,
) -> CompreFaceFaces {
    let mut kept: Vec<usize> = (0..found.faces.len()).collect();
    if options.limit > 0 && kept.len() > options.limit {
        // CompreFace keeps the largest faces; the answer stays best first.
        let area = |i: &usize| found.faces[*i].width * found.faces[*i].height;
        let mut by_size = kept.clone();
        by_size.sort_by(|a, b| area(b).total_cmp(&area(a)));
        by_size.truncate(options.limit);
        kept.retain(|i| by_size.contains(i));
    }
    let detector_ms = found.inference.as_secs_f64() * 1000.0;
    let calculator_ms = found.embedding.as_secs_f64() * 1000.0;
    let embedded = !found.embeddings.is_empty();
    let result = kept
        .into_iter()
        .map(|i| {
            let face = &found.faces[i];
            let pixels = PixelBox::of(face, found.width, found.height);
            CompreFaceFace {
                face_box: CompreFaceBox {
                    probability: rounded(scale::COMPREFACE.confidence(face.score, ours)),
                    x_max: pixels.x_max,
                    y_max: pixels.y_max,
                    x_min: pixels.x_min,
                    y_min: pixels.y_min,
                },
                subjects: match &matches {
                    Matches::Subjects(subjects) => Some(subjects[i].clone()),
                    _ => None,
                },
                landmarks: options.landmarks.then(|| {
                    face.landmarks
                        .iter()
                        .map(|point| pixel_point(*point, found.width, found.height))
                        .collect()
                }),
                embedding: (options.calculator && embedded).then(|| found.embeddings[i].0.to_vec()),
                similarity: match &matches {
                    Matches::Similarity(similarities) => Some(rounded(similarities[i])),
                    _ => None,
                },
                execution_time: options.status.then(|| CompreFaceExecutionTime {
                    detector: detector_ms.round(),
                    calculator: embedded.then(|| calculator_ms.round()),
                }),
            }
        })
        .collect();
    CompreFaceFaces {
        result,
        plugins_versions: options.status.then(|| CompreFacePlugins {
            detector: DETECTOR_VERSION,
            landmarks: options.landmarks.then_some(DETECTOR_VERSION),
            calculator: embedded.then_some(CALCULATOR_VERSION),
        }),
    }
}

/// Five decimals, as CompreFace prints them.
fn rounded(value: f32) -> f64 {
    (f64::from(value) * 100_000.0).round() / 100_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdks_query_form_is_read() {
        let read = options(Some(
            "&limit=2&det_prob_threshold=0.6&face_plugins=age,landmarks&status=True",
        ))
        .unwrap();
        assert_eq!(
            read,
            Options {
                limit: 2,
                threshold: 0.6,
                landmarks: true,
                calculator: false,
                status: true,
                prediction_count: 1,
                detect_faces: true,
            }
        );
        assert!(!options(Some("detect_faces=false")).unwrap().detect_faces);
        assert_eq!(options(None).unwrap().threshold, 0.8);
        assert!(!options(Some("face_plugins=age")).unwrap().landmarks);
        for bad in [
            "limit=-1",
            "limit=x",
            "det_prob_threshold=1.5",
            "det_prob_threshold=x",
            "status=maybe",
            "detect_faces=perhaps",
            "prediction_count=0",
        ] {
            let failure = options(Some(bad)).unwrap_err();
            assert_eq!(
                (failure.status, failure.code),
                (StatusCode::BAD_REQUEST, 26),
                "{bad}"
            );
        }
    }

    #[test]
    fn base64_is_read_with_or_without_padding_and_line_breaks() {
        assert_eq!(&base64_file("aGVsbG8=").unwrap()[..], b"hello");
        assert_eq!(&base64_file("aGVs\nbG8").unwrap()[..], b"hello");
        assert_eq!(
            &base64_file("data:image/jpeg;base64,aGVsbG8=").unwrap()[..],
            b"hello"
        );
        let failure = base64_file("not base64!").unwrap_err();
        assert_eq!(
            (failure.code, failure.message.as_str()),
            (21, "Provided value is not Base64")
        );
    }
}
