//! Submissions and the job queue in SQL: SQLite by default, PostgreSQL for
//! scale-out. One code path through sqlx's `Any` driver; the few statements that
//! differ are chosen by [`Dialect`]. Times are stored as microseconds since the epoch.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use uuid::Uuid;

use crate::submission::{FaceBox, Outcome, Status, Submission};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// Migrations, applied in order and recorded in `faces_migrations`.
const SQLITE_MIGRATIONS: &[(&str, &str)] = &[(
    "0001_init",
    include_str!("../migrations/sqlite/0001_init.sql"),
)];
const POSTGRES_MIGRATIONS: &[(&str, &str)] = &[(
    "0001_init",
    include_str!("../migrations/postgres/0001_init.sql"),
)];

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The PostgreSQL channel that carries the ids of finished submissions.
pub const EVENTS_CHANNEL: &str = "faces_events";

/// Job transitions allowed only to the lease holder ($1 submission id, $2 lease token).
const FINISH_DONE: &str =
    "UPDATE jobs SET state = 'done', lease_until = NULL WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'";
const FINISH_FAILED: &str =
    "UPDATE jobs SET state = 'failed', lease_until = NULL WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'";
const REQUEUE: &str = "UPDATE jobs SET state = 'queued', run_at = $3, last_error = $4, lease_until = NULL, lease_token = NULL \
     WHERE submission_id = $1 AND lease_token = $2 AND state = 'running'";

/// A job a worker holds: only the holder of `lease_token` may finish it.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub submission_id: Uuid,
    pub attempts: u32,
    pub lease_token: String,
}

/// A submission old enough for retention to remove, with its files.
#[derive(Debug, Clone)]
pub struct Expired {
    pub id: Uuid,
    pub original_key: String,
    pub processed_key: Option<String>,
}

/// Row counts by job state, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDepth {
    pub queued: i64,
    pub running: i64,
    /// Jobs finished (done or failed) and not yet removed by retention.
    pub finished: i64,
}

#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    dialect: Dialect,
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn from_micros(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

const SUBMISSION_COLUMNS: &str =
    "s.id, s.status, s.created_at, s.processed_at, s.original_key, s.processed_key, \
     s.content_hash, s.byte_size, s.width, s.height, s.faces, s.duplicate_of, s.error, \
     COALESCE(j.attempts, 0) AS attempts";

impl Db {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else {
            anyhow::bail!("unsupported database URL (use sqlite://… or postgres://…)");
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match dialect {
                Dialect::Sqlite => 4,
                Dialect::Postgres => 10,
            })
            .connect(url)
            .await?;
        if dialect == Dialect::Sqlite {
            // WAL (kept in the file) lets readers go on during a write. sqlx already
            // turns foreign keys on and waits up to 5 s for a busy database.
            sqlx::raw_sql("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let db = Self { pool, dialect };
        db.migrate().await?;
        Ok(db)
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrations = match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS,
            Dialect::Postgres => POSTGRES_MIGRATIONS,
        };
        // One transaction; on PostgreSQL several processes may start at once, so the
        // first takes a lock and the others wait, then find nothing left to do.
        let mut tx = self.pool.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(728461)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS faces_migrations (version TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        for (version, sql) in migrations {
            let done: Option<AnyRow> =
                sqlx::query("SELECT version FROM faces_migrations WHERE version = $1")
                    .bind(*version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_none() {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO faces_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(*version)
                    .bind(micros(Utc::now()))
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(version, "applied migration");
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A round trip to the database: the readiness check.
    pub async fn check(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Records an accepted upload and queues its job in one transaction.
    pub async fn insert_submission(&self, s: &Submission) -> sqlx::Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO submissions (id, status, created_at, original_key, content_hash, byte_size, width, height) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(s.id.to_string())
        .bind(s.status.as_str())
        .bind(micros(s.created_at))
        .bind(&s.original_key)
        .bind(&s.content_hash)
        .bind(s.byte_size)
        .bind(s.width)
        .bind(s.height)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO jobs (submission_id, state, attempts, run_at) VALUES ($1, 'queued', 0, $2)")
            .bind(s.id.to_string())
            .bind(micros(s.created_at))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
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

    /// The newest finished submission with the same bytes, whose result can be reused
    /// (the newest, as retention removes the oldest first).
    pub async fn done_with_hash(
        &self,
        hash: &str,
        except: Uuid,
    ) -> sqlx::Result<Option<Submission>> {
        let sql = format!(
            "SELECT {SUBMISSION_COLUMNS} FROM submissions s LEFT JOIN jobs j ON j.submission_id = s.id \
             WHERE s.content_hash = $1 AND s.status = 'done' AND s.id <> $2 \
             ORDER BY s.created_at DESC LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(hash)
            .bind(except.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| submission_from_row(&r)).transpose()
    }

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
        let mut tx = self.pool.begin().await?;
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
        tx.commit().await?;
        Ok(Some(ClaimedJob {
            submission_id: parse_uuid(&id)?,
            attempts: attempts.max(0) as u32,
            lease_token: token,
        }))
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
        let mut tx = self.pool.begin().await?;
        if job_update.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        for statement in then {
            statement.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
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
        // On PostgreSQL the event is part of the transaction: it reaches every
        // listening node exactly when, and only if, the result is committed.
        let event = (self.dialect == Dialect::Postgres).then(|| {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(EVENTS_CHANNEL)
                .bind(job.submission_id.to_string())
        });
        self.fenced(
            Self::held(FINISH_DONE, job),
            std::iter::once(submission).chain(event).collect(),
        )
        .await
    }

    pub async fn fail_job(&self, job: &ClaimedJob, error: &str) -> sqlx::Result<bool> {
        let submission = sqlx::query(
            "UPDATE submissions SET status = 'failed', processed_at = $1, error = $2 WHERE id = $3",
        )
        .bind(micros(Utc::now()))
        .bind(error.to_owned())
        .bind(job.submission_id.to_string());
        self.fenced(Self::held(FINISH_FAILED, job), vec![submission])
            .await
    }

    /// Puts a failed attempt back in the queue, due at `run_at`.
    pub async fn retry_job(
        &self,
        job: &ClaimedJob,
        error: &str,
        run_at: DateTime<Utc>,
    ) -> sqlx::Result<bool> {
        let requeue = Self::held(REQUEUE, job)
            .bind(micros(run_at))
            .bind(error.to_owned());
        let submission = sqlx::query("UPDATE submissions SET status = 'queued' WHERE id = $1")
            .bind(job.submission_id.to_string());
        self.fenced(requeue, vec![submission]).await
    }

    /// PostgreSQL `NOTIFY` (no-op on SQLite, where there is one process).
    pub async fn notify(&self, channel: &str, payload: &str) -> sqlx::Result<()> {
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
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
        let mut tx = self.pool.begin().await?;
        let in_flight = sqlx::query(
            "SELECT 1 AS one FROM jobs WHERE submission_id = $1 AND state IN ('queued', 'running')",
        )
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        if in_flight.is_some() {
            return Ok(false);
        }
        sqlx::query("DELETE FROM jobs WHERE submission_id = $1")
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
        let deleted =
            sqlx::query("DELETE FROM submissions WHERE id = $1 AND status IN ('done', 'failed')")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(deleted == 1)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse_uuid(s: &str) -> sqlx::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn submission_from_row(row: &AnyRow) -> sqlx::Result<Submission> {
    let status: String = row.try_get("status")?;
    let faces: Option<String> = row.try_get("faces")?;
    let faces = faces
        .map(|f| serde_json::from_str::<Vec<FaceBox>>(&f))
        .transpose()
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    let duplicate_of: Option<String> = row.try_get("duplicate_of")?;
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
    })
}
