//! HTTP routes: one router that tests and `faces serve` both build.

mod auth;
mod feed;
mod health;
mod images;
mod page;
mod processed;
pub mod socketio;
mod upload;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Method};
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::app::AppState;

/// The routes, with Socket.IO mounted through `socket_io`.
pub fn router(state: Arc<AppState>, socket_io: socketioxide::layer::SocketIoLayer) -> Router {
    // The upload handler counts bytes itself; the framework's 2 MB default must not cut in first.
    let body_limit = DefaultBodyLimit::max(state.config.max_upload_bytes as usize + 1024 * 1024);
    Router::new()
        .route("/healthcheck", get(health::healthcheck))
        .route("/healthcheck/", get(health::healthcheck))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/", get(page::index))
        .route("/static/app.js", get(page::app_js))
        .route("/static/style.css", get(page::style_css))
        .route(
            "/image",
            post(upload::upload).layer(body_limit).get(page::index),
        )
        .route(
            "/image/",
            post(upload::upload).layer(body_limit).get(page::index),
        )
        .route("/image/{id}", get(images::show))
        .route("/images", get(images::list))
        .route("/faces", get(feed::feed))
        .route(
            "/static/processed_faces/{aa}/{bb}/{file}",
            get(processed::serve),
        )
        .fallback(|| async { crate::error::ApiError::not_found() })
        .layer(socket_io)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(cors(&state.config.cors_origins))
        .layer(
            TraceLayer::new_for_http()
                // The path only: a query may carry an API key, which is never logged.
                .make_span_with(|request: &axum::extract::Request| {
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}

/// Cross-origin access for the listed origins only (none by default).
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
}
