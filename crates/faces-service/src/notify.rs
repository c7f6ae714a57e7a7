//! Telling other processes: a finished detection must reach the feed clients of
//! every API node, and a new job should wake an idle worker on any node.
//!
//! Feed events are rows of the `events` outbox, written in the result's
//! transaction; each API node relays the rows it has not sent yet to its own
//! clients, in `seq` order. With SQLite everything runs in one process and the
//! worker's commit prompts the relay. With PostgreSQL, `NOTIFY` (in the same
//! transaction) carries only the submission id and prompts every API node's relay:
//! every client of every node gets each event once, in the same order.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::db::Dialect;
use crate::fault::{warn_limited, Fault};
use crate::feed::detection;
use crate::names::Names;
use crate::state::AppState;
use crate::submission::Submission;

const EVENTS: &str = crate::db::EVENTS_CHANNEL;
const SUBJECTS: &str = crate::db::SUBJECTS_CHANNEL;
const JOBS: &str = "faces_jobs";

/// Outbox rows read per query while relaying.
const RELAY_BATCH: i64 = 256;
/// How often the relay reads the outbox unprompted: after a missed notification
/// (a listener reconnecting) events still go out, at most this late.
pub const RELAY_EVERY: Duration = Duration::from_secs(2);

/// Sends this node's feed clients every outbox event it has not sent yet, in
/// `seq` order. Called after each local commit, on each database notification and
/// every [`RELAY_EVERY`]; whoever holds the lock sends, so nothing goes out twice.
pub async fn relay(state: &AppState) {
    let mut relayed = state.relayed.lock().await;
    loop {
        let events = match state.db.events_after(*relayed, RELAY_BATCH).await {
            Ok(events) => events,
            // Relayed again on the next tick; one warning per interval while it lasts.
            Err(error) => return warn_limited(Fault::of_database(&error), &error),
        };
        let full = events.len() as i64 == RELAY_BATCH;
        let submissions: Vec<&Submission> = events.iter().map(|(_, s)| s).collect();
        let names = match Names::read(state, &submissions).await {
            Ok(names) => names,
            Err(error) => return warn_limited(Fault::of_database(&error), &error),
        };
        let added: Vec<(Uuid, i64)> = submissions
            .iter()
            .map(|s| (s.id, s.created_at.timestamp_micros()))
            .collect();
        crate::refresh::relayed(state, &added, &names.embeddings);
        for (seq, submission) in events {
            let faces = names.faces(&submission);
            if let Some((detection, path)) =
                detection(seq, &submission, faces, state.config.public_url())
            {
                state.feed.publish(&detection, &path);
            }
            *relayed = seq;
        }
        if !full {
            return;
        }
    }
}

/// Relays the outbox, and looks for changed examples and kept embeddings, every
/// [`RELAY_EVERY`] until shutdown.
pub async fn relay_periodically(state: Arc<AppState>) {
    let mut shutdown = state.shutdown.clone();
    let stopped = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(RELAY_EVERY) => {
                relay(&state).await;
                crate::refresh::examples(&state).await;
                crate::refresh::kept(&state).await;
            }
            _ = &mut stopped => return,
        }
    }
}

/// A submission committed as done or failed: wakes this node's uploads waiting
/// on it and relays the outbox to the feed.
async fn finished(state: &AppState, id: Uuid) {
    // No receiver (nobody waiting) is fine.
    let _ = state.finished.send(id);
    relay(state).await;
}

/// Announces a submission just committed as done or failed. On SQLite there is
/// one process, so this is the whole story. On PostgreSQL the commit itself sent
/// the `NOTIFY` (see `Db::complete_job`) and every API node's listener, this
/// one's included, relays; the outbox row means even a worker dying right after
/// its commit loses no event.
pub async fn announce(state: &AppState, id: Uuid) {
    if state.db.dialect() == Dialect::Sqlite {
        finished(state, id).await;
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
                warn_limited(Fault::of_database(&error), &error);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        };
        let channels: &[&str] = if events {
            &[EVENTS, SUBJECTS, JOBS]
        } else {
            &[JOBS]
        };
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
                Ok(n) if n.channel() == SUBJECTS => crate::refresh::examples(&state).await,
                Ok(n) => match Uuid::parse_str(n.payload()) {
                    Ok(id) => finished(&state, id).await,
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
