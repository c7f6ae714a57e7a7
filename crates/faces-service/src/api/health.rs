use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;

use crate::metrics::Gauges;
use crate::state::AppState;

/// Liveness: the process answers. Also at `/healthcheck/`.
#[utoipa::path(get, path = "/healthcheck", tag = "operations",
    responses((status = 200, description = "Alive", content_type = "text/plain", body = String, example = "OK")))]
pub async fn healthcheck() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK")
}

/// Readiness: the database answers and storage takes a write.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = crate::api::openapi::Readiness),
        (status = 503, description = "The database or storage is unreachable", body = crate::api::openapi::Readiness),
    ))]
pub async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let database = state.db.check().await.map_err(|e| e.to_string());
    let storage = state.store.check().await.map_err(|e| e.to_string());
    let status = if database.is_ok() && storage.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let show = |r: Result<(), String>| r.err().unwrap_or_else(|| "ok".into());
    (
        status,
        Json(json!({ "database": show(database), "storage": show(storage) })),
    )
}

/// Prometheus metrics.
///
/// Queue depth by state, jobs done/failed/retried, detection latency, uploads,
/// feed clients, and HTTP requests by route and status.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let depth = state.db.queue_depth().await.unwrap_or_default();
    let body = state.metrics.render(&Gauges {
        queued: depth.queued,
        running: depth.running,
        feed_clients: state.feed.connected_clients(),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
