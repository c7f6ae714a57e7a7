//! Submissions and the job queue in SQL: SQLite by default, PostgreSQL for
//! scale-out. One code path through sqlx's `Any` driver; the few statements that
//! differ are chosen by [`Dialect`]. Times are stored as microseconds since the epoch.
//!
//! [`connection`] holds the connection and migrations; [`submissions`] the records
//! users see, [`queue`] the jobs workers claim, [`subjects`] the people to recognise
//! and [`embeddings`] the embedding of every stored face. This file only names them: the
//! parts import [`connection`], never this file.

mod connection;
mod embeddings;
mod queue;
mod subjects;
mod submissions;

pub use connection::{Db, Dialect, EVENTS_CHANNEL, SUBJECTS_CHANNEL};
pub use embeddings::StoredEmbedding;
pub use queue::{ClaimedJob, QueueDepth};
pub use subjects::{Removed, SubjectError};
pub use submissions::Expired;
