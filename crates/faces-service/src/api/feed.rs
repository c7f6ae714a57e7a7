//! `GET /faces`: the live feed over WebSocket, or the gallery page without an upgrade.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use crate::error::ApiError;
use crate::feed::{detection, Event};
use crate::names::Names;
use crate::state::AppState;
use crate::submission::Submission;

/// Outbox rows read per query while replaying.
const REPLAY_BATCH: i64 = 256;

/// Close code for an `after` beyond the newest event's `seq` (an application code:
/// 4000-4999), chosen after HTTP's 409 Conflict.
pub const AFTER_BEYOND_NEWEST: u16 = 4409;

const PING_EVERY: Duration = Duration::from_secs(30);
/// A client that cannot take a message within this long is dropped.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The live feed (WebSocket), or the gallery page without an upgrade.
///
/// One text message, a `Detection`, per photo in which faces were found. With
/// `?after=<seq>` the retained events after that `seq` come first, in order, then
/// the live ones, with no gap and no duplicate between them: a client that
/// reconnects with the last `seq` it saw misses nothing. An `after` beyond the
/// newest `seq` (the database was restored or replaced) is closed at once with
/// code 4409: the client starts afresh without `after`. The API key may be given
/// as `?api_key=`: browsers cannot set headers on WebSockets.
#[utoipa::path(
    get,
    path = "/faces",
    tag = "feed",
    params(("after" = Option<i64>, Query, minimum = 0,
        description = "Replay the retained events after this `seq` first")),
    responses(
        (status = 101, description = "WebSocket upgrade; each message is a Detection", body = crate::feed::Detection),
        (status = 200, description = "The gallery page (no upgrade requested)", content_type = "text/html", body = String),
        (status = 400, description = "A bad `after`", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
    ),
    security((), ("bearer" = []), ("api_key_query" = []))
)]
pub async fn feed(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return super::page::index().await.into_response();
    };
    let after = match query.get("after").map(|a| a.parse::<i64>()) {
        None => None,
        Some(Ok(after)) if after >= 0 => Some(after),
        Some(_) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "after",
                "Enter the seq of a feed message: a whole number, 0 or more.",
            )
            .into_response()
        }
    };
    upgrade
        .on_upgrade(move |socket| client(state, socket, after))
        .into_response()
}

async fn client(state: Arc<AppState>, socket: WebSocket, after: Option<i64>) {
    let (mut sender, mut receiver) = socket.split();
    // Subscribed before the replay reads the outbox: whatever commits meanwhile is
    // either in the replay or in the live channel, and `sent` drops the overlap.
    let (mut events, _guard) = state.feed.subscribe();
    let mut sent = 0;
    if let Some(after) = after {
        match replay(&state, &mut sender, after).await {
            Ok(last) => sent = last,
            Err(()) => return,
        }
    }
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
                Ok(event) if event.seq <= sent => continue,
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

/// Sends the retained events after `after`, in order; returns the last `seq` sent.
/// An `after` beyond the newest event, or an outbox that cannot be read, closes the
/// connection instead.
async fn replay(
    state: &AppState,
    sender: &mut SplitSink<WebSocket, Message>,
    after: i64,
) -> Result<i64, ()> {
    let close = async |sender: &mut SplitSink<WebSocket, Message>, code, reason: String| {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = sender.send(Message::Close(Some(frame))).await;
        Err(())
    };
    let unreadable = |error: sqlx::Error| {
        tracing::warn!(%error, "could not read the outbox for a replay");
        "could not replay; reconnect".to_owned()
    };
    // A seq the outbox never reached (a restored or replaced database) would wait
    // forever for events that were numbered already: tell the client.
    match state.db.last_event_seq().await {
        Ok(newest) if after > newest => {
            let reason =
                format!("after {after} is beyond the newest seq {newest}; reconnect without after");
            return close(sender, AFTER_BEYOND_NEWEST, reason).await;
        }
        Ok(_) => {}
        Err(error) => return close(sender, close_code::ERROR, unreadable(error)).await,
    }
    let mut sent = after;
    loop {
        let events = match state.db.events_after(sent, REPLAY_BATCH).await {
            Ok(events) => events,
            Err(error) => return close(sender, close_code::ERROR, unreadable(error)).await,
        };
        let full = events.len() as i64 == REPLAY_BATCH;
        let submissions: Vec<&Submission> = events.iter().map(|(_, s)| s).collect();
        let names = match Names::read(state, &submissions).await {
            Ok(names) => names,
            Err(error) => return close(sender, close_code::ERROR, unreadable(error)).await,
        };
        for (seq, submission) in events {
            let faces = names.faces(&submission);
            let event = detection(seq, &submission, faces, state.config.public_url())
                .and_then(|(detection, path)| Event::new(&detection, &path));
            if let Some(event) = event {
                let message = Message::Text(event.json.as_ref().into());
                match tokio::time::timeout(SEND_TIMEOUT, sender.send(message)).await {
                    Ok(Ok(())) => {}
                    _ => return Err(()),
                }
            }
            sent = seq;
        }
        if !full {
            return Ok(sent);
        }
    }
}

async fn stopped(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
