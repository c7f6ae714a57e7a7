//! The job queue: one row per submission in `jobs`, claimed under a lease so that a
//! dead worker's job returns to the queue, and finished only by its lease holder.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;
use uuid::Uuid;

use super::connection::{micros, parse_uuid, AnyQuery, Db, Dialect, EVENTS_CHANNEL};

/// The PostgreSQL advisory lock that orders event inserts (see migration 0003).
const EVENTS_LOCK: i64 = 728_462;
/// Face embeddings written per statement (two parameters each, well under the limits).
const EMBEDDINGS_PER_INSERT: usize = 100;
use crate::submission::Outcome;

/// Job transitions allowed only to the lease holder ($1 submission id, $2 lease token).
const FINISH_DONE: &str =
    "UPDATE jobs SET state = 'done', lease_until = NULL WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'";
const FINISH_FAILED: &str =
    "UPDATE jobs SET state = 'failed', lease_until = NULL WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'";
const REQUEUE: &str = "UPDATE jobs SET state = 'queued', run_at = $3, last_error = $4, lease_until = NULL, lease_token = NULL \
     WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'";
/// As [`REQUEUE`], giving the attempt back: a fault of the service's own, not the photo's.
const REQUEUE_UNCOUNTED: &str = "UPDATE jobs SET state = 'queued', run_at = $3, last_error = $4, lease_until = NULL, lease_token = NULL, \
     attempts = attempts - 1 WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'";

/// A job a worker holds: only the holder of `lease_token` may finish it.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub submission_id: Uuid,
    pub attempts: u32,
    pub lease_token: String,
}

/// Row counts by job state, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub queued: i64,
    pub running: i64,
    /// Jobs finished (done or failed) and not yet removed by retention.
    pub finished: i64,
}

impl Db {
    /// Takes the next due job (or one whose worker's lease ran out) and marks its
    /// submission `processing`. Atomic: two workers never hold the same job.
    pub async fn claim_job(&self, lease: Duration) -> sqlx::Result<Option<ClaimedJob>> {
        let now = micros(Utc::now());
        let lease_until = now + lease.as_micros() as i64;
        let token = Uuid::new_v4().to_string();
        let lock = match self.dialect {
            Dialect::Sqlite => "",
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_until = $1, lease_token = $2 \
             WHERE submission_id = (SELECT submission_id FROM jobs \
                 WHERE (state = 'queued' AND run_at <= $3) OR (state = 'running' AND lease_until < $3) \
                 ORDER BY run_at LIMIT 1 {lock}) \
             RETURNING submission_id, attempts"
        );
        self.transaction(async |tx| {
            let Some(row) = sqlx::query(&sql)
                .bind(lease_until)
                .bind(&token)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
            else {
                return Ok(None);
            };
            let id: String = row.try_get("submission_id")?;
            let attempts: i64 = row.try_get("attempts")?;
            sqlx::query("UPDATE submissions SET status = 'processing' WHERE id = $1")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
            Ok(Some(ClaimedJob {
                submission_id: parse_uuid(&id)?,
                attempts: attempts.max(0) as u32,
                lease_token: token,
            }))
        })
        .await
    }

    /// Extends a held lease; `false` if the job is no longer ours.
    pub async fn renew_lease(&self, job: &ClaimedJob, lease: Duration) -> sqlx::Result<bool> {
        let until = micros(Utc::now()) + lease.as_micros() as i64;
        let done = sqlx::query(
            "UPDATE jobs SET lease_until = $1 WHERE submission_id = $2 AND lease_token = $3 AND state = 'running'",
        )
        .bind(until)
        .bind(job.submission_id.to_string())
        .bind(&job.lease_token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A `jobs` update for the held job: `sql` ends with
    /// `WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'`.
    fn held<'q>(sql: &'q str, job: &ClaimedJob) -> AnyQuery<'q> {
        sqlx::query(sql)
            .bind(job.submission_id.to_string())
            .bind(job.lease_token.clone())
    }

    /// Runs `job_update` and, only if it matched (the caller still holds the lease),
    /// the `then` statements, in one transaction. Returns whether it did.
    async fn fenced<'q>(
        &self,
        job_update: AnyQuery<'q>,
        then: Vec<AnyQuery<'q>>,
    ) -> sqlx::Result<bool> {
        self.transaction(async |tx| {
            if job_update.execute(&mut *tx).await?.rows_affected() != 1 {
                return Ok(false);
            }
            for statement in then {
                statement.execute(&mut *tx).await?;
            }
            Ok(true)
        })
        .await
    }

    pub async fn complete_job(&self, job: &ClaimedJob, outcome: &Outcome) -> sqlx::Result<bool> {
        let faces = serde_json::to_string(&outcome.faces).unwrap_or_else(|_| "[]".into());
        let submission = sqlx::query(
            "UPDATE submissions SET status = 'done', processed_at = $1, processed_key = $2, width = $3, height = $4, \
             faces_count = $5, faces = $6, duplicate_of = $7, error = NULL WHERE id = $8",
        )
        .bind(micros(outcome.processed_at))
        .bind(outcome.processed_key.clone())
        .bind(outcome.width)
        .bind(outcome.height)
        .bind(outcome.faces.len() as i64)
        .bind(faces)
        .bind(outcome.duplicate_of.map(|id| id.to_string()))
        .bind(job.submission_id.to_string());
        let mut then = vec![submission];
        // Its faces' embeddings commit with it: a result is never half-stored.
        let chunks: Vec<_> = outcome.embeddings.chunks(EMBEDDINGS_PER_INSERT).collect();
        let inserts: Vec<String> = chunks
            .iter()
            .map(|chunk| {
                let rows: Vec<String> = (0..chunk.len())
                    .map(|n| format!("($1, ${}, ${})", 2 * n + 2, 2 * n + 3))
                    .collect();
                format!(
                    "INSERT INTO face_embeddings (submission_id, face_index, embedding) VALUES {}",
                    rows.join(", ")
                )
            })
            .collect();
        for (sql, chunk) in inserts.iter().zip(&chunks) {
            let mut insert = sqlx::query(sql).bind(job.submission_id.to_string());
            for (face, embedding) in *chunk {
                insert = insert
                    .bind(i64::from(*face))
                    .bind(embedding.to_le_bytes().to_vec());
            }
            then.push(insert);
        }
        // A photo with faces is a feed event: its outbox row commits with the result.
        if outcome.processed_key.is_some() {
            if self.dialect == Dialect::Postgres {
                // Held until commit: events commit in the order of their `seq`.
                then.push(sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(EVENTS_LOCK));
            }
            then.push(
                sqlx::query("INSERT INTO events (submission_id) VALUES ($1)")
                    .bind(job.submission_id.to_string()),
            );
        }
        // On PostgreSQL the notification is part of the transaction: it reaches
        // every listening node exactly when, and only if, the result is committed.
        if self.dialect == Dialect::Postgres {
            then.push(
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(EVENTS_CHANNEL)
                    .bind(job.submission_id.to_string()),
            );
        }
        self.fenced(Self::held(FINISH_DONE, job), then).await
    }

    pub async fn fail_job(&self, job: &ClaimedJob, error: &str) -> sqlx::Result<bool> {
        let submission = sqlx::query(
            "UPDATE submissions SET status = 'failed', processed_at = $1, error = $2 WHERE id = $3",
        )
        .bind(micros(Utc::now()))
        .bind(error.to_owned())
        .bind(job.submission_id.to_string());
        // As in `complete_job`: uploads waiting on any node learn of it.
        let event = (self.dialect == Dialect::Postgres).then(|| {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(EVENTS_CHANNEL)
                .bind(job.submission_id.to_string())
        });
        self.fenced(
            Self::held(FINISH_FAILED, job),
            std::iter::once(submission).chain(event).collect(),
        )
        .await
    }

    /// Puts a failed attempt back in the queue, due at `run_at`; `counted` false
    /// gives the attempt back (the failure was a fault, not the photo's).
    pub async fn retry_job(
        &self,
        job: &ClaimedJob,
        error: &str,
        run_at: DateTime<Utc>,
        counted: bool,
    ) -> sqlx::Result<bool> {
        let sql = if counted { REQUEUE } else { REQUEUE_UNCOUNTED };
        let requeue = Self::held(sql, job)
            .bind(micros(run_at))
            .bind(error.to_owned());
        let submission = sqlx::query("UPDATE submissions SET status = 'queued' WHERE id = $1")
            .bind(job.submission_id.to_string());
        self.fenced(requeue, vec![submission]).await
    }

    pub async fn queue_depth(&self) -> sqlx::Result<QueueDepth> {
        let row = sqlx::query(
            "SELECT COALESCE(SUM(CASE WHEN state = 'queued' THEN 1 ELSE 0 END), 0) AS queued, \
             COALESCE(SUM(CASE WHEN state = 'running' THEN 1 ELSE 0 END), 0) AS running, \
             COALESCE(SUM(CASE WHEN state IN ('done', 'failed') THEN 1 ELSE 0 END), 0) AS finished FROM jobs",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(QueueDepth {
            queued: row.try_get("queued")?,
            running: row.try_get("running")?,
            finished: row.try_get("finished")?,
        })
    }
}
