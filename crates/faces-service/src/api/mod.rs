//! HTTP routes: one router that tests and `faces serve` both build.

mod auth;
mod examples;
mod feed;
mod health;
mod images;
pub mod limits;
pub mod openapi;
mod page;
mod part_headers;
mod peers;
mod png_structure;
mod processed;
mod request_options;
mod schema;
mod search;
pub mod socketio;
mod subjects;
mod upload;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::state::AppState;

/// The routes, with Socket.IO mounted through `socket_io`.
pub fn router(state: Arc<AppState>, socket_io: socketioxide::layer::SocketIoLayer) -> Router {
    // The upload handler counts bytes itself; the framework's 2 MB default must not cut in first.
    let body_limit = DefaultBodyLimit::max(state.config.max_upload_bytes as usize + 1024 * 1024);
    let upload = match limits::upload_rate_limit(&state.config, &state.client_address) {
        Some(rate_limit) => post(upload::upload)
            .layer::<_, Infallible>(body_limit)
            .layer::<_, Infallible>(rate_limit),
        None => post(upload::upload).layer(body_limit),
    };
    // Example photos and photos to search by are read into memory, within the upload limit.
    let photo_limit = body_limit;
    let body_timeout = Duration::from_secs(state.config.body_timeout_secs.max(1));
    Router::new()
        .route("/healthcheck", get(health::healthcheck))
        .route("/healthcheck/", get(health::healthcheck))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route("/", get(page::index))
        .route("/static/app.js", get(page::app_js))
        .route("/static/style.css", get(page::style_css))
        .route("/image", upload.clone().get(page::index))
        .route("/image/", upload.get(page::index))
        .route("/image/{id}", get(images::show))
        .route("/images", get(images::list))
        .route("/faces", get(feed::feed))
        .route(
            "/static/processed_faces/{aa}/{bb}/{file}",
            get(processed::serve),
        )
        .route("/subjects", get(subjects::list).post(subjects::create))
        .route(
            "/subjects/{id}",
            get(subjects::show)
                .patch(subjects::rename)
                .delete(subjects::delete),
        )
        .route(
            "/subjects/{id}/examples",
            post(subjects::add_example).layer(photo_limit),
        )
        .route(
            "/subjects/{id}/examples/{example_id}",
            delete(subjects::delete_example),
        )
        .route(
            "/search",
            get(search::by_stored_face).post(search::by_photo).layer(photo_limit),
        )
        .merge(peers::routes(state.config.max_upload_bytes))
        .merge(openapi::routes())
        .fallback(|| async { crate::error::ApiError::not_found() })
        .layer(socket_io)
        .layer(RequestBodyTimeoutLayer::new(body_timeout))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ))
        .layer(cors(&state.config.cors_origins))
        // Marked copies and pages are what they say they are: no browser sniffing.
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        // Outside auth and CORS, so that 401s and preflights are counted too.
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
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

/// Counts each answered request by route pattern and status for `/metrics`.
async fn count_request(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => path.as_str().to_owned(),
        None if request.uri().path().starts_with("/socket.io") => "/socket.io/".to_owned(),
        None => "unmatched".to_owned(),
    };
    // Methods are client-chosen tokens: only the known ones get a series of their own.
    let method = match *request.method() {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(
        &route,
        method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Cross-origin access for the listed origins only (none by default).
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
}
