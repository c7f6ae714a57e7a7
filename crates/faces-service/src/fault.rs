//! Storage and database faults as expected conditions: what kind each error is
//! (no space, a busy or unreachable database, unreachable storage, or a bug of
//! ours), and warnings that stay readable while a fault lasts.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::StoreError;

/// What a failed storage or database operation means for the client and operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The disk (of the data dir, or of the database) is full: `507`.
    NoSpace,
    /// The database is locked, restarting, or unreachable: `503`, try again.
    Database,
    /// The object store (or the data dir) cannot be read or written: `503`, try again.
    Storage,
    /// Anything else: a bug of ours, `500`.
    Other,
}

/// `ENOSPC` and `EDQUOT`: no space, or the user's quota is spent.
const NO_SPACE_ERRNOS: [i32; 2] = [28, 122];

impl Fault {
    pub fn of_io(error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::StorageFull
            || error
                .raw_os_error()
                .is_some_and(|code| NO_SPACE_ERRNOS.contains(&code))
        {
            Fault::NoSpace
        } else {
            Fault::Storage
        }
    }

    pub fn of_store(error: &StoreError) -> Self {
        match error {
            StoreError::Io { source, .. } => Self::of_io(source),
            // Only keys this service wrote are read; one gone is not the client's fault,
            // but trying again will not bring it back either.
            StoreError::NotFound(_) => Fault::Other,
            StoreError::Object { .. } => Fault::Storage,
        }
    }

    pub fn of_database(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Database(database) => {
                let code = database.code().unwrap_or_default();
                // SQLite reports (extended) result codes as numbers: the low byte is
                // the primary code. 13 FULL; 5 BUSY, 6 LOCKED, 10 IOERR, 14 CANTOPEN.
                if let Ok(number) = code.parse::<i64>() {
                    return match number & 0xff {
                        13 => Fault::NoSpace,
                        5 | 6 | 10 | 14 => Fault::Database,
                        _ => Fault::Other,
                    };
                }
                // PostgreSQL SQLSTATEs: 53100 disk full; class 08 connection, 53
                // resources, 57P0x shutting down or starting, 40001/40P01/55P03 contention.
                match code.as_ref() {
                    "53100" => Fault::NoSpace,
                    c if c.starts_with("08") || c.starts_with("53") || c.starts_with("57P") => {
                        Fault::Database
                    }
                    "40001" | "40P01" | "55P03" | "25006" => Fault::Database,
                    _ => Fault::Other,
                }
            }
            sqlx::Error::Io(io) if Self::of_io(io) == Fault::NoSpace => Fault::NoSpace,
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => Fault::Database,
            _ => Fault::Other,
        }
    }
}

/// Warnings of one kind of fault are logged at most this often; the ones in
/// between are counted and reported with the next.
const WARN_EVERY: Duration = Duration::from_secs(10);

struct Limiter {
    last: Option<Instant>,
    suppressed: u64,
}

static LIMITERS: [Mutex<Limiter>; 4] = [const {
    Mutex::new(Limiter {
        last: None,
        suppressed: 0,
    })
}; 4];

/// Logs `error` as a warning of `fault`, at most once per [`WARN_EVERY`] for each
/// kind: a full disk or a locked database must not flood the log every second.
pub fn warn_limited(fault: Fault, error: &dyn std::fmt::Display) {
    let Ok(mut limiter) = LIMITERS[fault as usize].lock() else {
        return;
    };
    let now = Instant::now();
    if limiter.last.is_some_and(|last| now - last < WARN_EVERY) {
        limiter.suppressed += 1;
        return;
    }
    let suppressed = std::mem::take(&mut limiter.suppressed);
    limiter.last = Some(now);
    drop(limiter);
    tracing::warn!(?fault, %error, suppressed, "storage or database fault");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_told_apart_from_other_io_errors() {
        let full = std::io::Error::from_raw_os_error(28);
        assert_eq!(Fault::of_io(&full), Fault::NoSpace);
        let denied = std::io::Error::from_raw_os_error(13);
        assert_eq!(Fault::of_io(&denied), Fault::Storage);
        let store = StoreError::Io {
            key: "faces/a".into(),
            source: std::io::Error::from_raw_os_error(122),
        };
        assert_eq!(Fault::of_store(&store), Fault::NoSpace);
        assert_eq!(
            Fault::of_database(&sqlx::Error::Io(std::io::Error::from_raw_os_error(28))),
            Fault::NoSpace
        );
        assert_eq!(
            Fault::of_database(&sqlx::Error::PoolTimedOut),
            Fault::Database
        );
        assert_eq!(Fault::of_database(&sqlx::Error::RowNotFound), Fault::Other);
    }

    #[tokio::test]
    async fn sqlite_full_and_locked_are_classified() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("f.db").display());
        let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (v BLOB); PRAGMA busy_timeout = 0;")
            .execute(&mut holder)
            .await
            .unwrap();
        sqlx::raw_sql("PRAGMA busy_timeout = 0")
            .execute(&mut other)
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        let locked = sqlx::raw_sql("INSERT INTO t VALUES (x'00')")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert_eq!(Fault::of_database(&locked), Fault::Database, "{locked}");
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut holder)
            .await
            .unwrap();
        // A database capped at its current size behaves as a full disk does.
        sqlx::raw_sql("PRAGMA max_page_count = 2")
            .execute(&mut other)
            .await
            .unwrap();
        let full = sqlx::raw_sql("INSERT INTO t VALUES (zeroblob(100000))")
            .execute(&mut other)
            .await
            .unwrap_err();
        assert_eq!(Fault::of_database(&full), Fault::NoSpace, "{full}");
    }
}
