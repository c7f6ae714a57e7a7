//! API errors, all answered in the documented JSON shape: a body keyed by field
//! with a list of human sentences, never a stack trace.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub use crate::fault::Fault;

/// `Retry-After` while a database or object store is busy or unreachable.
const UNAVAILABLE_RETRY_SECS: u64 = 5;
/// `Retry-After` while the disk is full: space comes back by an operator's hand.
const NO_SPACE_RETRY_SECS: u64 = 60;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The field the message is about (`image`, `limit`, …) or `detail` for the request as a whole.
    pub field: &'static str,
    pub message: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, field: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            field,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header of `seconds` to the answer.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// A 400 about the uploaded image.
    pub fn image(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "image", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "detail", "Not found.")
    }

    /// A storage or database failure, answered by what it is (see [`Fault`]): `507`
    /// for no space, `503` with `Retry-After` for a busy or unreachable back end.
    /// `field` is the error body's key (`image` on uploads).
    pub fn fault(field: &'static str, fault: Fault, error: impl std::fmt::Display) -> Self {
        let (status, message, retry) = match fault {
            Fault::NoSpace => (
                StatusCode::INSUFFICIENT_STORAGE,
                messages::NO_SPACE,
                NO_SPACE_RETRY_SECS,
            ),
            Fault::Database => (
                StatusCode::SERVICE_UNAVAILABLE,
                messages::DATABASE_UNAVAILABLE,
                UNAVAILABLE_RETRY_SECS,
            ),
            Fault::Storage => (
                StatusCode::SERVICE_UNAVAILABLE,
                messages::STORAGE_UNAVAILABLE,
                UNAVAILABLE_RETRY_SECS,
            ),
            Fault::Other => return Self::internal(error),
        };
        crate::fault::warn_limited(fault, &error);
        Self::new(status, field, message).retry_after(retry)
    }

    /// A database error on a request: see [`ApiError::fault`].
    pub fn database(field: &'static str, error: sqlx::Error) -> Self {
        Self::fault(field, Fault::of_database(&error), error)
    }

    /// A failure of ours: logged in full, answered without internals.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "detail",
            "The server could not complete the request. Please try again.",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, Json(json!({ self.field: [self.message] }))).into_response();
        if let Some(seconds) = self.retry_after {
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

/// The answers' sentences: the reference API's validation messages word for word,
/// then this service's own.
pub mod messages {
    pub const NO_FILE: &str = "No file was submitted.";
    pub const EMPTY: &str = "The submitted file is empty.";
    pub const NOT_A_FILE: &str =
        "The submitted data was not a file. Check the encoding type on the form.";
    pub const INVALID_IMAGE: &str =
        "Upload a valid image. The file you uploaded was either not an image or a corrupted image.";
    pub const NO_SPACE: &str =
        "There is no space left to store this upload. Please try again later.";
    pub const DATABASE_UNAVAILABLE: &str =
        "The database is busy or unreachable. Please try again shortly.";
    pub const STORAGE_UNAVAILABLE: &str = "Storage is unreachable. Please try again shortly.";
    pub const ALLOWED: [&str; 4] = ["gif", "jpg", "jpeg", "png"];

    pub fn extension_not_allowed(extension: &str) -> String {
        format!(
            "File extension “{extension}” is not allowed. Allowed extensions are: {}.",
            ALLOWED.join(", ")
        )
    }

    pub fn too_large(limit: u64) -> String {
        format!(
            "The submitted file is too large. The limit is {}.",
            human_bytes(limit)
        )
    }

    pub fn too_many_pixels(width: u32, height: u32, limit: u64) -> String {
        format!(
            "The image is {width}x{height} pixels ({:.1} megapixels). The limit is {:.1} megapixels.",
            (u64::from(width) * u64::from(height)) as f64 / 1e6,
            limit as f64 / 1e6
        )
    }

    pub fn human_bytes(bytes: u64) -> String {
        const MB: u64 = 1024 * 1024;
        if bytes >= MB && bytes.is_multiple_of(MB) {
            format!("{} MB ({bytes} bytes)", bytes / MB)
        } else {
            format!("{bytes} bytes")
        }
    }
}
