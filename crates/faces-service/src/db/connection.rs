//! The connection pool and the schema: connecting to SQLite or PostgreSQL,
//! applying the migrations, transactions, and the readiness write. The helpers
//! here (times as microseconds, ids as text) are shared with [`super::queue`] and
//! [`super::submissions`], which add the queries to [`Db`].

use chrono::{DateTime, Utc};
use faces_detect::Embedding;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::Row;
use sqlx::{AnyConnection, AnyPool, Connection};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// `(version, SQL)` of each migration in `migrations/<folder>/<version>.sql`: the
/// dialect's own folder, or `common` where one SQL text serves both (SQLite reads
/// PostgreSQL's `BIGINT` and `DOUBLE PRECISION` as its INTEGER and REAL). Applied
/// versions are recorded by name, so a migration may move folders.
macro_rules! migrations {
    ($($folder:literal / $version:literal),+ $(,)?) => {
        &[$(($version, include_str!(concat!("../../migrations/", $folder, "/", $version, ".sql")))),+]
    };
}

/// Migrations, applied in order and recorded in `faces_migrations`.
const SQLITE_MIGRATIONS: &[(&str, &str)] = migrations![
    "common" / "0001_init",
    "common" / "0002_options",
    "sqlite" / "0003_events",
    "common" / "0004_readiness",
    "common" / "0005_decode_bytes",
    "common" / "0006_mark",
    "common" / "0007_recognition",
    "sqlite" / "0008_kept_embeddings",
];
const POSTGRES_MIGRATIONS: &[(&str, &str)] = migrations![
    "common" / "0001_init",
    "common" / "0002_options",
    "postgres" / "0003_events",
    "common" / "0004_readiness",
    "common" / "0005_decode_bytes",
    "common" / "0006_mark",
    "common" / "0007_recognition",
    "postgres" / "0008_kept_embeddings",
];

pub(super) type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// How long a request waits for a database connection before its 503.
const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The PostgreSQL channel that carries the ids of finished submissions.
pub const EVENTS_CHANNEL: &str = "faces_events";
/// The PostgreSQL channel that says subjects or examples changed.
pub const SUBJECTS_CHANNEL: &str = "faces_subjects";

#[derive(Debug, Clone)]
pub struct Db {
    pub(super) pool: AnyPool,
    pub(super) dialect: Dialect,
}

pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(super) fn from_micros(us: i64) -> DateTime<Utc> {
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
            // While the database is away a request gets its 503 in seconds, not after
            // the default 30 s of trying to connect.
            .acquire_timeout(ACQUIRE_TIMEOUT)
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

    /// Runs `work` in a transaction and commits it. If anything in it fails, the
    /// commit included, its connection is closed instead of going back to the pool:
    /// after a failed `COMMIT` (a full disk, a busy SQLite file) the driver's idea of
    /// the connection's transaction state can be wrong, and such a connection would
    /// hold the write lock for good or "commit" later work into a transaction that
    /// never ends (answered as accepted, yet lost).
    ///
    /// On SQLite the transaction takes the write lock at its start (`BEGIN
    /// IMMEDIATE`), waiting the busy timeout for it. A deferred `BEGIN` that reads
    /// and then writes fails at once with "database is locked" when another
    /// connection committed in between (its snapshot is stale, and SQLite does not
    /// wait in that case): a 503 whenever a worker polled the queue at that moment.
    pub(super) async fn transaction<T>(
        &self,
        work: impl AsyncFnOnce(&mut AnyConnection) -> sqlx::Result<T>,
    ) -> sqlx::Result<T> {
        let mut connection = self.pool.acquire().await?;
        let result = async {
            let mut tx = match self.dialect {
                Dialect::Sqlite => connection.begin_with("BEGIN IMMEDIATE").await?,
                Dialect::Postgres => connection.begin().await?,
            };
            let value = work(&mut tx).await?;
            tx.commit().await?;
            Ok(value)
        }
        .await;
        if result.is_err() {
            connection.close().await.ok();
        }
        result
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    async fn migrate(&self) -> anyhow::Result<()> {
        let migrations = match self.dialect {
            Dialect::Sqlite => SQLITE_MIGRATIONS,
            Dialect::Postgres => POSTGRES_MIGRATIONS,
        };
        // One transaction; several processes may start at once, so the first takes
        // a lock (SQLite: the write lock at BEGIN, see `transaction`) and the others
        // wait, then find nothing left to do.
        let mut tx = match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        };
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

    /// A committed write: the readiness check. A database that answers reads but
    /// refuses writes (full disk, a lock held elsewhere) is not ready.
    pub async fn check(&self) -> sqlx::Result<()> {
        let now = micros(Utc::now());
        self.transaction(async |tx| {
            sqlx::query("UPDATE readiness SET checked_at = $1 WHERE id = 1")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map(|_| ())
        })
        .await
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

/// An embedding column: exactly 512 bytes.
pub(super) fn embedding_from(row: &AnyRow, column: &str) -> sqlx::Result<Embedding> {
    let bytes: Vec<u8> = row.try_get(column)?;
    Embedding::from_le_bytes(&bytes).ok_or_else(|| {
        sqlx::Error::Decode(format!("an embedding of {} bytes, not 512", bytes.len()).into())
    })
}

pub(super) fn parse_uuid(s: &str) -> sqlx::Result<Uuid> {
    Uuid::parse_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
