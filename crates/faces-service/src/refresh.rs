//! Keeps this node's recognition index ([`crate::recognition::Index`]) current.
//!
//! Examples: every change to subjects or examples bumps a version in its
//! transaction and, on PostgreSQL, sends `NOTIFY faces_subjects` with the commit.
//! A node reads them all again when it made the change itself, when notified, and
//! whenever the version it sees every [`crate::notify::RELAY_EVERY`] differs from
//! its own: a missed notification delays a rename by at most that.
//!
//! Stored faces: read page by page at start, then added as their submissions pass
//! through the feed's outbox (the relay, [`crate::notify::relay`], hands them over
//! in `seq` order on every API node); retention drops the ones it removes here,
//! and a search confirms its matches against the database for those removed
//! elsewhere. Embeddings a node computes later for a photo processed without them
//! (a face named or searched by) come in through `kept_embeddings` ([`kept`]).

use std::collections::HashMap;
use std::time::Duration;

use faces_detect::Embedding;
use uuid::Uuid;

use crate::fault::{warn_limited, Fault};
use crate::recognition::Examples;
use crate::state::AppState;

/// Stored embeddings read per query at start.
const LOAD_PAGE: i64 = 5_000;
/// `kept_embeddings` rows read per query.
const KEPT_PAGE: i64 = 500;

/// Reads the examples again if the database's version differs from the index's.
pub async fn examples(state: &AppState) {
    match state.db.examples_version().await {
        Ok(version) if version == state.index.examples().version => {}
        Ok(_) => examples_now(state).await,
        Err(error) => warn_limited(Fault::of_database(&error), &error),
    }
}

/// Reads every subject and example now.
pub async fn examples_now(state: &AppState) {
    match state.db.all_examples().await {
        Ok((version, subjects, examples)) => {
            let examples = Examples::new(version, subjects, examples);
            tracing::debug!(version, examples = examples.len(), "examples read");
            state.index.replace_examples(examples);
        }
        Err(error) => warn_limited(Fault::of_database(&error), &error),
    }
}

/// A submission's faces read so far: its id, `created_at` and `(face, embedding)`s.
type Pending = (Uuid, i64, Vec<(u32, Embedding)>);

/// Reads every stored face's embedding into the index, a page at a time, retrying
/// a page while the database is away; marks the index loaded when done.
pub async fn load_faces(state: &AppState) {
    let mut after: Option<(Uuid, u32)> = None;
    // A submission's faces go in together: one cut by a page waits for the next.
    let mut pending: Option<Pending> = None;
    let mut shutdown = state.shutdown.clone();
    loop {
        let page = match state.db.stored_embeddings(after, LOAD_PAGE).await {
            Ok(page) => page,
            Err(error) => {
                warn_limited(Fault::of_database(&error), &error);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        };
        let last_page = (page.len() as i64) < LOAD_PAGE;
        for stored in page {
            after = Some((stored.submission, stored.face));
            match &mut pending {
                Some((submission, _, faces)) if *submission == stored.submission => {
                    faces.push((stored.face, stored.embedding))
                }
                _ => {
                    if let Some((submission, created_at, faces)) = pending.take() {
                        state.index.add_faces(submission, created_at, &faces);
                    }
                    pending = Some((
                        stored.submission,
                        stored.created_at,
                        vec![(stored.face, stored.embedding)],
                    ));
                }
            }
        }
        if last_page {
            break;
        }
    }
    if let Some((submission, created_at, faces)) = pending {
        state.index.add_faces(submission, created_at, &faces);
    }
    state.index.mark_loaded();
    tracing::info!(faces = state.index.faces_len(), "search index loaded");
}

/// Adds the faces of the photos whose embeddings were kept after their processing
/// (by any node) since the last call: every [`crate::notify::RELAY_EVERY`], so a
/// face named or searched by on one node is found by the others' searches within
/// that. The node that kept them added them at once; `add_faces` skips them here.
pub async fn kept(state: &AppState) {
    loop {
        let rows = match state
            .db
            .kept_after(state.index.kept_seen(), KEPT_PAGE)
            .await
        {
            Ok(rows) => rows,
            Err(error) => return warn_limited(Fault::of_database(&error), &error),
        };
        let Some(&(last, _, _)) = rows.last() else {
            return;
        };
        let added: Vec<(Uuid, i64)> = rows
            .iter()
            .filter(|(_, id, _)| !state.index.has_submission(*id))
            .map(|(_, id, created_at)| (*id, *created_at))
            .collect();
        let ids: Vec<Uuid> = added.iter().map(|(id, _)| *id).collect();
        match state.db.embeddings_of(&ids).await {
            Ok(embeddings) => relayed(state, &added, &embeddings),
            Err(error) => return warn_limited(Fault::of_database(&error), &error),
        }
        state.index.set_kept_seen(last);
        if (rows.len() as i64) < KEPT_PAGE {
            return;
        }
    }
}

/// Adds the faces of submissions the relay is sending (`(id, created_at)`), with
/// `embeddings` read for them.
pub fn relayed(
    state: &AppState,
    submissions: &[(Uuid, i64)],
    embeddings: &HashMap<Uuid, Vec<(usize, Embedding)>>,
) {
    for (id, created_at) in submissions {
        if let Some(faces) = embeddings.get(id) {
            let faces: Vec<(u32, Embedding)> = faces.iter().map(|(i, e)| (*i as u32, *e)).collect();
            state.index.add_faces(*id, *created_at, &faces);
        }
    }
}
