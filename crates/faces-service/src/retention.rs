//! Retention: a periodic sweep that removes submissions older than the configured
//! age, their jobs and their files. Only finished work goes; a queued or running
//! job is never touched. Rows go first, then files, so a crash in between leaves
//! at worst an orphaned file, never a record pointing at nothing; each sweep then
//! removes such orphans (see [`crate::leftovers`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use crate::state::AppState;

/// Submissions looked at per database round trip.
const BATCH: i64 = 200;

/// Sweeps every `every` until shutdown; the first sweep runs at start.
pub async fn run(
    state: Arc<AppState>,
    max_age: Duration,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match sweep(&state, max_age, &shutdown).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "retention removed old submissions"),
            Err(error) => tracing::warn!(%error, "retention sweep failed; will try again"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// Removes what is older than `max_age` now; returns how many submissions went.
/// Stops between batches once `shutdown` turns true.
pub async fn sweep(
    state: &AppState,
    max_age: Duration,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<usize> {
    let cutoff = chrono::Duration::from_std(max_age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| anyhow::anyhow!("retention age {max_age:?} is out of range"))?;
    let mut removed = 0;
    while !*shutdown.borrow() {
        let batch = state.db.expired_submissions(cutoff, BATCH).await?;
        let mut removed_in_batch = 0;
        let mut gone = std::collections::HashSet::new();
        for expired in &batch {
            if !state.db.delete_finished(expired.id).await? {
                continue;
            }
            gone.insert(expired.id);
            removed_in_batch += 1;
            let files = std::iter::once(&expired.original_key).chain(&expired.processed_key);
            for key in files {
                if let Err(error) = state.store.delete(key).await {
                    tracing::warn!(%key, %error, "retention could not delete a file");
                }
            }
        }
        // Out of this node's search index (others confirm matches against the database).
        state.index.forget(&gone);
        removed += removed_in_batch;
        state.metrics.retention_removed(removed_in_batch as u64);
        // A short batch is the last; a batch of which nothing could go would repeat.
        if (batch.len() as i64) < BATCH || removed_in_batch == 0 {
            break;
        }
    }
    let cutoff = Utc::now() - crate::leftovers::ORPHAN_AGE;
    let orphans = crate::leftovers::remove_orphans(&state.db, &state.store, cutoff).await?;
    if orphans > 0 {
        tracing::info!(orphans, "retention removed files no submission names");
    }
    Ok(removed)
}
