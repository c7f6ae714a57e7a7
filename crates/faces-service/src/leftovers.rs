//! What a crash or a fault leaves behind, removed at start and by retention's
//! sweep: uploads that were streaming, half-written `.tmp` files, readiness
//! probes, and stored files whose submission never committed.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::Db;
use crate::store::{submission_of, Store};

/// A file without a row may belong to an upload still in flight on another node
/// (stored, row not yet committed): only files older than this are orphans.
pub const ORPHAN_AGE: Duration = Duration::from_secs(10 * 60);

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    /// Uploads in progress and half-written `.tmp` files in the data dir.
    pub temporary: usize,
    /// Stored originals, marked copies and readiness probes without a submission.
    pub orphans: usize,
}

/// Removes every file in `uploads_dir` and, under a local store's `data_dir`,
/// every `.*.tmp` file. Only for start-up, before this process writes any: the
/// data dir belongs to one process.
pub async fn remove_temporary(uploads_dir: &Path, data_dir: Option<&Path>) -> usize {
    let uploads_dir = uploads_dir.to_owned();
    let data_dir = data_dir.map(Path::to_owned);
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        for entry in std::fs::read_dir(&uploads_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            removed += usize::from(std::fs::remove_file(entry.path()).is_ok());
        }
        let mut dirs: Vec<_> = data_dir.into_iter().collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(path);
                } else if name.starts_with('.') && name.ends_with(".tmp") {
                    removed += usize::from(std::fs::remove_file(&path).is_ok());
                }
            }
        }
        removed
    })
    .await;
    removed.unwrap_or_default()
}

/// Removes stored files last written before `cutoff` that no row names:
/// originals and marked copies of uploads whose row never committed (or whose row
/// retention removed when deleting the file failed), example photos likewise, and
/// readiness probes a fault kept from being deleted.
pub async fn remove_orphans(
    db: &Db,
    store: &Store,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut removed = 0;
    for listed in store.list("readiness").await? {
        if listed.modified < cutoff && store.delete(&listed.key).await.is_ok() {
            removed += 1;
        }
    }
    for prefix in ["faces", "processed_faces"] {
        let candidates: Vec<_> = store
            .list(prefix)
            .await?
            .into_iter()
            .filter(|listed| listed.modified < cutoff)
            .filter_map(|listed| Some((submission_of(&listed.key)?, listed.key)))
            .collect();
        let ids: Vec<_> = candidates.iter().map(|(id, _)| *id).collect();
        let existing = db.existing_submissions(&ids).await?;
        removed += remove_unnamed(store, candidates, &existing).await;
    }
    // Example photos whose example never committed, or whose deletion failed.
    let candidates: Vec<_> = store
        .list("examples")
        .await?
        .into_iter()
        .filter(|listed| listed.modified < cutoff)
        .filter_map(|listed| Some((submission_of(&listed.key)?, listed.key)))
        .collect();
    let ids: Vec<_> = candidates.iter().map(|(id, _)| *id).collect();
    let existing = db.existing_examples(&ids).await?;
    removed += remove_unnamed(store, candidates, &existing).await;
    Ok(removed)
}

/// Deletes the keys of `candidates` whose id is not in `existing`; returns how many went.
async fn remove_unnamed(
    store: &Store,
    candidates: Vec<(uuid::Uuid, String)>,
    existing: &std::collections::HashSet<uuid::Uuid>,
) -> usize {
    let mut removed = 0;
    for (id, key) in candidates {
        if !existing.contains(&id) {
            match store.delete(&key).await {
                Ok(()) => removed += 1,
                Err(error) => tracing::warn!(%key, %error, "could not remove an orphan"),
            }
        }
    }
    removed
}
