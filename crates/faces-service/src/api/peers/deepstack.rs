//! DeepStack's `POST /v1/vision/face`, which CodeProject.AI Server serves too: the
//! photo in multipart field `image`, optional form fields `min_confidence` and
//! `api_key`. One answer satisfies the clients of both: DeepStack's fields, then the
//! ones Blue Iris and Agent DVR read from CodeProject.AI. Errors and their order are
//! DeepStack's (key, image, `min_confidence`, decoding); docs/api.md lists them all.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::detection::{self, Found, PixelBox, Refusal};
use super::scale;
use crate::error::Fault;
use crate::state::AppState;

/// DeepStack's `min_confidence` when a client sends none.
const DEFAULT_MIN_CONFIDENCE: f32 = 0.55;

/// One face, in whole pixels of the upright image, inside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeepStackPrediction {
    /// On DeepStack's scale (see docs/api.md, "Thresholds").
    #[schema(example = 0.9996)]
    confidence: f64,
    y_min: u32,
    x_min: u32,
    y_max: u32,
    x_max: u32,
}

/// The answer: DeepStack's fields, then CodeProject.AI's.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeepStackFaces {
    /// Always `true` here.
    success: bool,
    /// Best first; empty when no face is found.
    predictions: Vec<DeepStackPrediction>,
    /// DeepStack's field, always 0.
    duration: u64,
    count: usize,
    /// `Found 1 face`, `Found 2 faces`, `Found 0 faces`.
    #[schema(example = "Found 1 face")]
    message: String,
    /// Milliseconds the network ran.
    #[serde(rename = "inferenceMs")]
    inference_ms: u64,
    /// Milliseconds decoding and detection took.
    #[serde(rename = "processMs")]
    process_ms: u64,
    /// Milliseconds from the request's arrival to the answer.
    #[serde(rename = "analysisRoundTripMs")]
    analysis_round_trip_ms: u64,
    #[serde(rename = "moduleId")]
    #[schema(example = "FaceProcessing")]
    module_id: &'static str,
    #[serde(rename = "moduleName")]
    #[schema(example = "Face Processing")]
    module_name: &'static str,
    /// 200.
    code: u16,
    #[schema(example = "detect")]
    command: &'static str,
    #[serde(rename = "requestId")]
    request_id: String,
    #[serde(rename = "inferenceDevice")]
    #[schema(example = "CPU")]
    inference_device: &'static str,
    #[serde(rename = "processedBy")]
    #[schema(example = "localhost")]
    processed_by: &'static str,
    /// RFC 1123, e.g. `Mon, 07 Dec 2026 15:48:03 GMT`.
    #[serde(rename = "timestampUTC")]
    timestamp_utc: String,
}

/// Every error: DeepStack's shape.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"success": false, "error": "Incorrect api key", "duration": 0}))]
pub struct DeepStackError {
    success: bool,
    error: String,
    duration: u64,
    #[serde(skip)]
    status: StatusCode,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl DeepStackError {
    /// The HTTP status it is answered with.
    pub(super) fn status(&self) -> StatusCode {
        self.status
    }

    /// Its sentence.
    pub(super) fn error(&self) -> &str {
        &self.error
    }

    /// A storage or database fault, answered by what it is: `507` for no space,
    /// `503` with `Retry-After` for a busy or unreachable back end.
    pub(super) fn fault(fault: Fault, error: impl std::fmt::Display) -> Self {
        let ours = crate::error::ApiError::fault("detail", fault, error);
        DeepStackError {
            retry_after: ours.retry_after,
            ..DeepStackError::new(ours.status, ours.message)
        }
    }

    pub(super) fn new(status: StatusCode, error: impl Into<String>) -> Self {
        DeepStackError {
            success: false,
            error: error.into(),
            duration: 0,
            status,
            retry_after: None,
        }
    }
}

impl From<Refusal> for DeepStackError {
    fn from(refusal: Refusal) -> Self {
        let error = match refusal {
            Refusal::InvalidImage => "invalid image".to_owned(),
            ref other => other.message().to_owned(),
        };
        DeepStackError {
            retry_after: refusal.retry_after(),
            ..DeepStackError::new(refusal.status(), error)
        }
    }
}

impl IntoResponse for DeepStackError {
    fn into_response(self) -> Response {
        let (status, retry_after) = (self.status, self.retry_after);
        detection::error_response(status, retry_after, Json(self))
    }
}

/// The form: the photo and DeepStack's two optional fields.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DeepStackForm {
    /// Any image format the decoder reads (jpeg, png, gif, bmp, tiff, webp), told
    /// from the bytes: the part's name and content type do not matter.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// 0-1 on DeepStack's scale; default 0.55.
    min_confidence: Option<f64>,
    /// One of the `--api-key` keys, when any is set; clients send `""` otherwise.
    api_key: Option<String>,
}

/// Detect faces, as DeepStack and CodeProject.AI do (also at `/v1/vision/face/`).
///
/// Answered now, from the shared detector; nothing is stored or announced.
#[utoipa::path(
    post,
    operation_id = "deepstack_face_detect",
    path = "/v1/vision/face",
    tag = "peers",
    request_body(content = DeepStackForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The faces found (none: `predictions` empty)", body = DeepStackFaces),
        (status = 400, description = "`No valid image file found`, `Invalid value for min_confidence`, `min_confidence cannot be greater than 1`, `invalid image`, or a body that could not be read", body = DeepStackError),
        (status = 401, description = "API keys are configured and `api_key` is none of them: `Incorrect api key`", body = DeepStackError),
        (status = 413, description = "Over the byte limit, the pixel limit or the memory budget", body = DeepStackError),
        (status = 503, description = "The node is at its limits for photos at once, or has no detection slot free within 5 s", body = DeepStackError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
pub async fn detect(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let started = Instant::now();
    match answer(&state, request).await {
        Ok(found) => Json(detected(found, started, state.config.score_threshold)).into_response(),
        Err(failure) => {
            tracing::info!(status = failure.status.as_u16(), reason = %failure.error, "face detection refused");
            failure.into_response()
        }
    }
}

async fn answer(state: &Arc<AppState>, request: Request) -> Result<Found, DeepStackError> {
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
    let min_confidence = min_confidence(form.value("min_confidence"), DEFAULT_MIN_CONFIDENCE)?;
    let threshold = scale::DEEPSTACK.threshold(min_confidence, state.config.score_threshold);
    Ok(detection::detect(state, image, threshold, false).await?)
}

/// DeepStack's key check: with keys configured, form field `api_key` must be one.
pub(super) fn check_key(state: &AppState, given: Option<&str>) -> Result<(), DeepStackError> {
    let keys = &state.config.api_keys;
    if !keys.is_empty() && !super::super::auth::accepted(keys, given.unwrap_or("")) {
        return Err(DeepStackError::new(
            StatusCode::UNAUTHORIZED,
            "Incorrect api key",
        ));
    }
    Ok(())
}

/// DeepStack's check: absent or empty is `default`; not a number, or over 1, is refused.
pub(super) fn min_confidence(value: Option<&str>, default: f32) -> Result<f32, DeepStackError> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(default);
    };
    match value.parse::<f32>() {
        Ok(parsed) if parsed.is_nan() => Err(DeepStackError::new(
            StatusCode::BAD_REQUEST,
            "Invalid value for min_confidence",
        )),
        Ok(parsed) if parsed > 1.0 => Err(DeepStackError::new(
            StatusCode::BAD_REQUEST,
            "min_confidence cannot be greater than 1",
        )),
        Ok(parsed) => Ok(parsed),
        Err(_) => Err(DeepStackError::new(
            StatusCode::BAD_REQUEST,
            "Invalid value for min_confidence",
        )),
    }
}

fn detected(found: Found, started: Instant, ours: f32) -> DeepStackFaces {
    let predictions: Vec<DeepStackPrediction> = found
        .faces
        .iter()
        .map(|face| {
            let pixels = PixelBox::of(face, found.width, found.height);
            DeepStackPrediction {
                confidence: rounded(scale::DEEPSTACK.confidence(face.score, ours)),
                y_min: pixels.y_min,
                x_min: pixels.x_min,
                y_max: pixels.y_max,
                x_max: pixels.x_max,
            }
        })
        .collect();
    let count = predictions.len();
    DeepStackFaces {
        success: true,
        predictions,
        duration: 0,
        count,
        message: if count == 1 {
            "Found 1 face".to_owned()
        } else {
            format!("Found {count} faces")
        },
        inference_ms: found.inference.as_millis() as u64,
        process_ms: found.process.as_millis() as u64,
        analysis_round_trip_ms: started.elapsed().as_millis() as u64,
        module_id: "FaceProcessing",
        module_name: "Face Processing",
        code: 200,
        command: "detect",
        request_id: uuid::Uuid::new_v4().to_string(),
        inference_device: "CPU",
        processed_by: "localhost",
        timestamp_utc: chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string(),
    }
}

/// Five decimals, as the peers print them.
pub(super) fn rounded(value: f32) -> f64 {
    (f64::from(value) * 100_000.0).round() / 100_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_confidence_is_checked_as_deepstack_does() {
        let min_confidence = |value| min_confidence(value, DEFAULT_MIN_CONFIDENCE);
        assert_eq!(min_confidence(None).unwrap(), 0.55);
        assert_eq!(min_confidence(Some("")).unwrap(), 0.55);
        assert_eq!(min_confidence(Some("0.45")).unwrap(), 0.45);
        assert_eq!(min_confidence(Some("-2")).unwrap(), -2.0);
        let error = |value| min_confidence(Some(value)).unwrap_err().error;
        assert_eq!(error("high"), "Invalid value for min_confidence");
        assert_eq!(error("NaN"), "Invalid value for min_confidence");
        assert_eq!(error("1.5"), "min_confidence cannot be greater than 1");
    }
}
