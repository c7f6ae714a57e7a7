//! Submission records: inserted with their job, read by the API, removed by retention.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;
use uuid::Uuid;

use super::connection::{from_micros, micros, parse_uuid, Db};
use crate::submission::{FaceBox, Options, Status, Submission};

/// A submission old enough for retention to remove, with its files.
#[derive(Debug, Clone)]
pub struct Expired {
    pub id: Uuid,
    pub original_key: String,
    pub processed_key: Option<String>,
}

const SUBMISSION_COLUMNS: &str =
    "s.id, s.status, s.created_at, s.processed_at, s.original_key, s.processed_key, \
     s.content_hash, s.byte_size, s.width, s.height, s.faces, s.duplicate_of, s.error, s.mode, s.threshold, s.mark, s.decode_bytes, \
     COALESCE(j.attempts, 0) AS attempts";

impl Db {
    /// Records an accepted upload and queues its job in one transaction.
    pub async fn insert_submission(&self, s: &Submission) -> sqlx::Result<()> {
        self.transaction(async |tx| {
        sqlx::query(
            "INSERT INTO submissions (id, status, created_at, original_key, content_hash, byte_size, width, height, mode, threshold, mark, decode_bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(s.id.to_string())
        .bind(s.status.as_str())
        .bind(micros(s.created_at))
        .bind(&s.original_key)
        .bind(&s.content_hash)
        .bind(s.byte_size)
        .bind(s.width)
        .bind(s.height)
        .bind(s.options.mode.as_str())
        .bind(s.options.threshold)
        .bind(s.options.mark.as_str())
        .bind(s.decode_bytes)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO jobs (submission_id, state, attempts, run_at) VALUES ($1, 'queued', 0, $2)")
            .bind(s.id.to_string())
            .bind(micros(s.created_at))
            .execute(&mut *tx)
            .await?;
        Ok(())
        })
        .await
    }

    pub async fn submission(&self, id: Uuid) -> sqlx::Result<Option<Submission>> {
        let sql = format!(
            "SELECT {SUBMISSION_COLUMNS} FROM submissions s LEFT JOIN jobs j ON j.submission_id = s.id WHERE s.id = $1"
        );
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| submission_from_row(&r)).transpose()
    }

    /// Newest first; `before` is the id of the last submission of the previous page.
    pub async fn list_submissions(
        &self,
        limit: i64,
        before: Option<Uuid>,
    ) -> sqlx::Result<Vec<Submission>> {
        let rows = match before {
            None => {
                let sql = format!(
                    "SELECT {SUBMISSION_COLUMNS} FROM submissions s LEFT JOIN jobs j ON j.submission_id = s.id \
                     ORDER BY s.created_at DESC, s.id DESC LIMIT $1"
                );
                sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?
            }
            Some(before) => {
                let sql = format!(
                    "SELECT {SUBMISSION_COLUMNS} FROM submissions s LEFT JOIN jobs j ON j.submission_id = s.id, \
                     submissions b WHERE b.id = $1 \
                     AND (s.created_at < b.created_at OR (s.created_at = b.created_at AND s.id < b.id)) \
                     ORDER BY s.created_at DESC, s.id DESC LIMIT $2"
                );
                sqlx::query(&sql)
                    .bind(before.to_string())
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(submission_from_row).collect()
    }

    /// The newest finished submission with the same bytes and options, whose result
    /// can be reused (the newest, as retention removes the oldest first).
    pub async fn done_with_hash(&self, like: &Submission) -> sqlx::Result<Option<Submission>> {
        let sql = format!(
            "SELECT {SUBMISSION_COLUMNS} FROM submissions s LEFT JOIN jobs j ON j.submission_id = s.id \
             WHERE s.content_hash = $1 AND s.status = 'done' AND s.id <> $2 \
             AND s.mode = $3 AND s.threshold = $4 AND s.mark = $5 \
             ORDER BY s.created_at DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(&like.content_hash)
            .bind(like.id.to_string())
            .bind(like.options.mode.as_str())
            .bind(like.options.threshold)
            .bind(like.options.mark.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| submission_from_row(&r)).transpose()
    }

    /// Up to `limit` feed events after `seq`, oldest first, with their submissions.
    pub async fn events_after(&self, seq: i64, limit: i64) -> sqlx::Result<Vec<(i64, Submission)>> {
        let sql = format!(
            "SELECT e.seq, {SUBMISSION_COLUMNS} FROM events e JOIN submissions s ON s.id = e.submission_id \
             LEFT JOIN jobs j ON j.submission_id = s.id WHERE e.seq > $1 ORDER BY e.seq LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("seq")?, submission_from_row(row)?)))
            .collect()
    }

    /// Which of `ids` have a submission row: the sweep of leftovers keeps their files.
    pub async fn existing_submissions(
        &self,
        ids: &[Uuid],
    ) -> sqlx::Result<std::collections::HashSet<Uuid>> {
        self.existing_ids("submissions", ids).await
    }

    /// Which of `ids` are the `id` of a row of `table` (a name from this crate).
    pub(super) async fn existing_ids(
        &self,
        table: &'static str,
        ids: &[Uuid],
    ) -> sqlx::Result<std::collections::HashSet<Uuid>> {
        let mut existing = std::collections::HashSet::new();
        // Well under SQLite's and PostgreSQL's limits on bound parameters.
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT id FROM {table} WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                existing.insert(parse_uuid(&row.try_get::<String, _>("id")?)?);
            }
        }
        Ok(existing)
    }

    /// The newest event's `seq` (0 before the first).
    pub async fn last_event_seq(&self) -> sqlx::Result<i64> {
        let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS seq FROM events")
            .fetch_one(&self.pool)
            .await?;
        row.try_get("seq")
    }

    /// Up to `limit` submissions created before `cutoff` whose jobs are finished,
    /// oldest first: what retention may remove.
    pub async fn expired_submissions(
        &self,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> sqlx::Result<Vec<Expired>> {
        let rows = sqlx::query(
            "SELECT s.id, s.original_key, s.processed_key FROM submissions s \
             LEFT JOIN jobs j ON j.submission_id = s.id \
             WHERE s.created_at < $1 AND s.status IN ('done', 'failed') \
             AND (j.state IS NULL OR j.state IN ('done', 'failed')) \
             ORDER BY s.created_at LIMIT $2",
        )
        .bind(micros(cutoff))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Expired {
                    id: parse_uuid(&row.try_get::<String, _>("id")?)?,
                    original_key: row.try_get("original_key")?,
                    processed_key: row.try_get("processed_key")?,
                })
            })
            .collect()
    }

    /// Deletes a finished submission and its job in one transaction. Returns false,
    /// deleting nothing, if its job is queued or running again.
    pub async fn delete_finished(&self, id: Uuid) -> sqlx::Result<bool> {
        self.transaction(async |tx| {
            let in_flight = sqlx::query(
            "SELECT 1 AS one FROM jobs WHERE submission_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
            if in_flight.is_some() {
                return Ok(false);
            }
            for table in ["events", "face_embeddings", "kept_embeddings"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE submission_id = $1"))
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM jobs WHERE submission_id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query(
                "DELETE FROM submissions WHERE id = $1 AND status IN ('done', 'failed')",
            )
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            Ok(deleted == 1)
        })
        .await
    }
}

fn submission_from_row(row: &AnyRow) -> sqlx::Result<Submission> {
    let status: String = row.try_get("status")?;
    let faces: Option<String> = row.try_get("faces")?;
    let faces = faces
        .map(|f| serde_json::from_str::<Vec<FaceBox>>(&f))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let duplicate_of: Option<String> = row.try_get("duplicate_of")?;
    let mode: String = row.try_get("mode")?;
    let mark: String = row.try_get("mark")?;
    Ok(Submission {
        id: parse_uuid(&row.try_get::<String, _>("id")?)?,
        status: Status::parse(&status)
            .ok_or_else(|| sqlx::Error::Decode(format!("bad status {status}").into()))?,
        created_at: from_micros(row.try_get("created_at")?),
        processed_at: row
            .try_get::<Option<i64>, _>("processed_at")?
            .map(from_micros),
        original_key: row.try_get("original_key")?,
        processed_key: row.try_get("processed_key")?,
        content_hash: row.try_get("content_hash")?,
        byte_size: row.try_get("byte_size")?,
        width: row.try_get("width")?,
        height: row.try_get("height")?,
        faces,
        duplicate_of: duplicate_of.as_deref().map(parse_uuid).transpose()?,
        error: row.try_get("error")?,
        attempts: row.try_get("attempts")?,
        decode_bytes: row.try_get("decode_bytes")?,
        options: Options {
            mode: mode
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
            threshold: row.try_get("threshold")?,
            mark: mark
                .parse()
                .map_err(|e: String| sqlx::Error::Decode(e.into()))?,
        },
    })
}
