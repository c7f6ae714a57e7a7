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

/// How long each readiness probe may take.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Readiness: the database and storage each take a write within 2 s.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = crate::api::schema::Readiness),
        (status = 503, description = "The database or storage refuses writes (full disk, lock held elsewhere) or is unreachable", body = crate::api::schema::Readiness),
    ))]
pub async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    // A probe that waits out a 5 s busy timeout is itself the answer: not ready.
    let timed_out = || format!("no answer within {} s", READY_TIMEOUT.as_secs());
    let (database, storage) = tokio::join!(
        tokio::time::timeout(READY_TIMEOUT, state.db.check()),
        tokio::time::timeout(READY_TIMEOUT, state.store.check()),
    );
    let database = database
        .map_err(|_| timed_out())
        .and_then(|r| r.map_err(|e| e.to_string()));
    let storage = storage
        .map_err(|_| timed_out())
        .and_then(|r| r.map_err(|e| e.to_string()));
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
/// feed clients, the recognition index's size, and HTTP requests by route and status.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let depth = state.db.queue_depth().await.unwrap_or_default();
    let body = state.metrics.render(&Gauges {
        queued: depth.queued,
        running: depth.running,
        feed_clients: state.feed.connected_clients(),
        search_faces: state.index.faces_len(),
        examples: state.index.examples().len(),
    });
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
