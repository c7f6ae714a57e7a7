//! `GET /faces`: the live feed over WebSocket, or the gallery page without an upgrade.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::state::AppState;

const PING_EVERY: Duration = Duration::from_secs(30);
/// A client that cannot take a message within this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The live feed (WebSocket), or the gallery page without an upgrade.
///
/// One text message, a `Detection`, per photo in which faces were found. The API
/// key may be given as `?api_key=`: browsers cannot set headers on WebSockets.
#[utoipa::path(
    get,
    path = "/faces",
    tag = "feed",
    responses(
        (status = 101, description = "WebSocket upgrade; each message is a Detection", body = crate::feed::Detection),
        (status = 200, description = "The gallery page (no upgrade requested)", content_type = "text/html", body = String),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::openapi::ErrorBody),
    ),
    security((), ("bearer" = []), ("api_key_query" = []))
)]
pub async fn feed(
    State(state): State<Arc<AppState>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    match upgrade {
        Ok(upgrade) => upgrade
            .on_upgrade(move |socket| client(state, socket))
            .into_response(),
        Err(_) => super::page::index().await.into_response(),
    }
}

async fn client(state: Arc<AppState>, socket: WebSocket) {
    let (mut sender, mut receiver) = socket.split();
    let (mut events, _guard) = state.feed.subscribe();
    let stopped = stopped(state.shutdown.clone());
    tokio::pin!(stopped);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let close = |code, reason: &'static str| {
        Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
    };
    loop {
        let outgoing = tokio::select! {
            event = events.recv() => match event {
                Ok(event) => Message::Text(event.json.as_ref().into()),
                Err(RecvError::Lagged(_)) => {
                    let _ = sender.send(close(close_code::POLICY, "too slow; reconnect")).await;
                    break;
                }
                Err(RecvError::Closed) => break,
            },
            incoming = receiver.next() => match incoming {
                // Clients' messages are ignored; pings are answered by the library.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
            _ = ping.tick() => Message::Ping(Default::default()),
            _ = &mut stopped => {
                let _ = sender.send(close(close_code::AWAY, "server shutting down")).await;
                break;
            }
        };
        match tokio::time::timeout(SEND_TIMEOUT, sender.send(outgoing)).await {
            Ok(Ok(())) => {}
            _ => break,
        }
    }
}

async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
