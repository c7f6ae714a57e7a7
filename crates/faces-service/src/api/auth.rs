//! Optional API keys: when any are configured, uploads, reads, marked images, the
//! feeds, subjects and searches need `Authorization: Bearer <key>` (or `?api_key=<key>`, for WebSocket and
//! Socket.IO clients that cannot set headers). Health, metrics and the page stay open.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

fn protected(request: &Request) -> bool {
    let path = request.uri().path();
    if request.method() == Method::OPTIONS {
        return false; // CORS preflights carry no credentials
    }
    match path {
        "/image" | "/image/" => request.method() == Method::POST,
        "/faces" => request.headers().contains_key(header::UPGRADE),
        _ => {
            path.starts_with("/image/")
                || path == "/images"
                || path == "/subjects"
                || path.starts_with("/subjects/")
                || path == "/search"
                || path.starts_with("/static/processed_faces/")
                || path.starts_with("/socket.io")
        }
    }
}

fn presented(request: &Request) -> Option<String> {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match bearer {
        Some(key) => Some(key.to_owned()),
        // Percent-decoded: browsers encode `+`, `/` and `=` of base64 keys.
        None => form_urlencoded::parse(request.uri().query()?.as_bytes())
            .find_map(|(name, value)| (name == "api_key").then(|| value.into_owned())),
    }
}

/// Compares without an early exit, so the time taken does not reveal how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `given` is one of `keys`. Every key is checked, so the time taken does not
/// reveal which one was close. The peers' endpoints use it for the keys they carry in
/// their own places (a form field, an `x-api-key` header).
pub fn accepted(keys: &[String], given: &str) -> bool {
    let given = given.as_bytes();
    keys.iter().fold(false, |ok, key| {
        constant_time_eq(key.as_bytes(), given) | ok
    })
}

pub async fn require_key(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let keys = &state.config.api_keys;
    if keys.is_empty() || !protected(&request) {
        return next.run(request).await;
    }
    let given = presented(&request).unwrap_or_default();
    if accepted(keys, &given) {
        next.run(request).await
    } else {
        let mut response = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "detail",
            "A valid API key is required.",
        )
        .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
