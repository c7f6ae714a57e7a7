//! Protection of the upload path: the per-address rate limit, and the answers when
//! a cap on uploads streamed at once is reached (per address, counted by
//! [`UploadsInProgress`](crate::client_address::UploadsInProgress); per node, by
//! `AppState::uploads`). Each answers with the API's error body, keyed `image`,
//! and `Retry-After` (see docs/api.md).

use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use governor::middleware::NoOpMiddleware;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::client_address::ClientAddress;
use crate::config::Config;
use crate::error::ApiError;

/// How often addresses that are back to a full allowance are forgotten.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The rate limit counts each upload against its client's address.
impl KeyExtractor for ClientAddress {
    type Key = IpAddr;

    fn extract<T>(&self, request: &Request<T>) -> Result<IpAddr, GovernorError> {
        self.of(request).ok_or(GovernorError::UnableToExtractKey)
    }
}

type UploadLimiter = GovernorLayer<ClientAddress, NoOpMiddleware, Body>;

/// The upload rate limit, or `None` when configured off (`--rate-limit-per-minute 0`).
pub fn upload_rate_limit(config: &Config, client_address: &ClientAddress) -> Option<UploadLimiter> {
    if config.rate_limit_per_minute == 0 {
        return None;
    }
    let period = Duration::from_secs(60) / config.rate_limit_per_minute;
    let governor: Arc<GovernorConfig<ClientAddress, NoOpMiddleware>> = Arc::new(
        GovernorConfigBuilder::default()
            .period(period.max(Duration::from_nanos(1)))
            .burst_size(config.rate_limit_burst.max(1))
            .key_extractor(client_address.clone())
            .finish()?,
    );
    tokio::spawn(forget_idle_addresses(Arc::downgrade(&governor)));
    Some(
        GovernorLayer::new(governor).error_handler(|error| match error {
            GovernorError::TooManyRequests { wait_time, .. } => {
                // The limiter rounds down; a client that waits this long must get in.
                let seconds = wait_time + 1;
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "image",
                    format!("Too many uploads from your address. Try again in {seconds} seconds."),
                )
                .retry_after(seconds)
                .into_response()
            }
            other => ApiError::internal(other).into_response(),
        }),
    )
}

/// Keeps the limiter's memory to the addresses seen recently; ends with the router.
async fn forget_idle_addresses(governor: Weak<GovernorConfig<ClientAddress, NoOpMiddleware>>) {
    let mut tick = tokio::time::interval(FORGET_INTERVAL);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(governor) = governor.upgrade() else {
            return;
        };
        governor.limiter().retain_recent();
        governor.limiter().shrink_to_fit();
    }
}

/// The answer when this client address already has its maximum of uploads in progress.
pub fn too_many_uploads_from_address() -> Response<Body> {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "image",
        "Too many uploads from your address at once. Wait for one to finish.",
    )
    .retry_after(1)
    .into_response()
}

/// The answer when this node already streams its maximum of uploads.
pub fn too_many_uploads() -> Response<Body> {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "image",
        "The server is receiving too many uploads right now. Please try again shortly.",
    )
    .retry_after(1)
    .into_response()
}
