//! Telling other processes: a finished detection must reach the feed clients of
//! every API node, and a new job should wake an idle worker on any node.
//!
//! With SQLite everything runs in one process and goes through memory. With
//! PostgreSQL, `NOTIFY` carries only the submission id (payloads are capped at
//! 8000 bytes; a crowd photo's faces are more), and each API node's listener loads
//! the record and publishes it to its own clients: every client of every node gets
//! each event once.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::db::Dialect;
use crate::feed::Detection;
use crate::state::AppState;
use crate::submission::{timestamp, Submission};

const EVENTS: &str = crate::db::EVENTS_CHANNEL;
const JOBS: &str = "faces_jobs";

/// The feed message for a finished submission, if it has a marked copy (at least one face).
pub fn detection(submission: &Submission, public_url: &str) -> Option<(Detection, String)> {
    let key = submission.processed_key.as_ref()?;
    let faces = submission.faces.clone().unwrap_or_default();
    let image_path = format!("/static/{key}");
    Some((
        Detection {
            message: "Successful face detection",
            created_at: timestamp(submission.created_at),
            processed_at: timestamp(submission.processed_at?),
            faces_count: faces.len(),
            image_url: format!("{public_url}{image_path}"),
            id: submission.id.to_string(),
            faces,
        },
        image_path,
    ))
}

/// Tells this process's waiting uploads that a submission finished, and its feed
/// clients what was found.
async fn publish_local(state: &AppState, id: Uuid) {
    // No receiver (nobody waiting) is fine.
    let _ = state.finished.send(id);
    match state.db.submission(id).await {
        Ok(Some(submission)) => {
            if let Some((detection, path)) = detection(&submission, state.config.public_url()) {
                state.feed.publish(&detection, &path);
            }
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%id, %error, "could not load a finished submission for the feed")
        }
    }
}

/// Announces a submission just committed as done or failed to every feed client
/// and waiting upload. On PostgreSQL the commit itself sent the `NOTIFY` (see
/// `Db::complete_job`), so a worker dying right after its commit cannot lose the
/// event; every API node's listener, this one's included, publishes it.
pub async fn announce(state: &AppState, id: Uuid) {
    if state.db.dialect() == Dialect::Sqlite {
        publish_local(state, id).await;
    }
}

/// Wakes an idle worker somewhere: here at once, and on other nodes through the database.
pub async fn job_queued(state: &AppState) {
    state.wake.notify_one();
    if state.db.dialect() == Dialect::Postgres {
        if let Err(error) = state.db.notify(JOBS, "").await {
            tracing::debug!(%error, "could not notify workers; they poll");
        }
    }
}

/// PostgreSQL only: follows both channels until shutdown, reconnecting after errors.
/// `events` is false on worker-only nodes (no feed clients).
pub async fn listen(state: Arc<AppState>, url: String, events: bool) {
    let mut shutdown = state.shutdown.clone();
    loop {
        let mut listener = match PgListener::connect(&url).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "could not listen for notifications; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        };
        let channels: &[&str] = if events { &[EVENTS, JOBS] } else { &[JOBS] };
        if let Err(error) = listener.listen_all(channels.iter().copied()).await {
            tracing::warn!(%error, "LISTEN failed; retrying");
            continue;
        }
        loop {
            let notification = tokio::select! {
                n = listener.recv() => n,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            match notification {
                Ok(n) if n.channel() == JOBS => state.wake.notify_one(),
                Ok(n) => match Uuid::parse_str(n.payload()) {
                    Ok(id) => publish_local(&state, id).await,
                    Err(_) => tracing::warn!(payload = n.payload(), "bad event notification"),
                },
                Err(error) => {
                    tracing::warn!(%error, "notification connection lost; reconnecting");
                    break;
                }
            }
        }
    }
}
