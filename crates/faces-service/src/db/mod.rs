//! Submissions and the job queue in SQL: SQLite by default, PostgreSQL for
//! scale-out. One code path through sqlx's `Any` driver; the few statements that
//! differ are chosen by [`Dialect`]. Times are stored as microseconds since the epoch.
//!
//! This file holds the connection and migrations; [`submissions`] the records users
//! see, [`queue`] the jobs workers claim.

mod queue;
mod submissions;

use chrono::{DateTime, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::AnyPool;
use uuid::Uuid;

pub use queue::{ClaimedJob, QueueDepth};
pub use submissions::Expired;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// `(version, SQL)` of each migration in `migrations/<dialect>/<version>.sql`.
macro_rules! migrations {
    ($dialect:literal: $($version:literal),+) => {
        &[$(($version, include_str!(concat!("../../migrations/", $dialect, "/", $version, ".sql")))),+]
    };
}

/// Migrations, applied in order and recorded in `faces_migrations`.
const SQLITE_MIGRATIONS: &[(&str, &str)] =
    migrations!("sqlite": "0001_init", "0002_options", "0003_events");
const POSTGRES_MIGRATIONS: &[(&str, &str)] =
    migrations!("postgres": "0001_init", "0002_options", "0003_events");

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// The PostgreSQL channel that carries the ids of finished submissions.
pub const EVENTS_CHANNEL: &str = "faces_events";

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

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn parse_uuid(s: &str) -> sqlx::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
