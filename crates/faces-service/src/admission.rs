//! Admission by backlog: an upload is refused (503 with `Retry-After`) only when the
//! deployment's queue would take longer than `--max-backlog-secs` to drain at the
//! rate jobs have been finishing. A client uploading a folder is never refused for
//! sending many photos at once, only when the whole service is behind.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::Mutex;

use crate::db::Db;
use crate::error::ApiError;

/// How long admission waits for the queue's depth before admitting without it.
const READ_WITHIN: Duration = Duration::from_secs(1);
/// The queue is read at most this often; uploads in between use the last reading.
const READ_EVERY: Duration = Duration::from_secs(1);
/// The drain rate is measured over this window of readings.
const RATE_WINDOW: Duration = Duration::from_secs(30);

/// One reading of the queue.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    queued: i64,
    finished: i64,
}

#[derive(Debug, Default)]
struct Readings {
    window: VecDeque<Reading>,
    /// Uploads this node admitted since the last reading: counted as queued until
    /// the next one, so a burst within one second cannot slip past the bound.
    admitted_since: i64,
}

#[derive(Debug)]
pub struct Admission {
    max_backlog: Duration,
    /// Queued jobs always admitted, whatever the measured rate (a cold start has none).
    floor: i64,
    readings: Mutex<Readings>,
}

impl Admission {
    /// `max_backlog` zero turns admission control off.
    pub fn new(max_backlog: Duration, floor: u64) -> Self {
        Self {
            max_backlog,
            floor: i64::try_from(floor).unwrap_or(i64::MAX),
            readings: Mutex::new(Readings::default()),
        }
    }

    /// `Ok` to accept one more upload, or the 503 to answer.
    pub async fn check(&self, db: &Db) -> Result<(), ApiError> {
        if self.max_backlog.is_zero() {
            return Ok(());
        }
        let mut guard = self.readings.lock().await;
        let Readings {
            window: readings,
            admitted_since,
        } = &mut *guard;
        let fresh = readings
            .back()
            .is_some_and(|last| last.at.elapsed() < READ_EVERY);
        if !fresh {
            // A failed or slow read admits: the insert that follows reports a broken
            // database, and the client should not wait for the database twice.
            let Ok(Ok(depth)) = tokio::time::timeout(READ_WITHIN, db.queue_depth()).await else {
                return Ok(());
            };
            readings.push_back(Reading {
                at: Instant::now(),
                queued: depth.queued,
                finished: depth.finished,
            });
            *admitted_since = 0;
            while readings.len() > 2
                && readings
                    .front()
                    .is_some_and(|first| first.at.elapsed() > RATE_WINDOW)
            {
                readings.pop_front();
            }
        }
        let (Some(first), Some(last)) = (readings.front(), readings.back()) else {
            return Ok(());
        };
        let last = Reading {
            queued: last.queued + *admitted_since,
            ..*last
        };
        match verdict(*first, last, self.max_backlog, self.floor) {
            None => {
                *admitted_since += 1;
                Ok(())
            }
            Some(retry_after) => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "image",
                format!(
                    "The server has more photos queued than it can process soon. Try again in {retry_after} seconds."
                ),
            )
            .retry_after(retry_after)),
        }
    }
}

/// `None` to admit, else the seconds until the backlog is back under the bound.
fn verdict(first: Reading, last: Reading, max_backlog: Duration, floor: i64) -> Option<u64> {
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    // Retention removes finished jobs: a count that went down says nothing of the rate.
    let done = (last.finished - first.finished).max(0) as f64;
    let rate = if seconds > 0.0 { done / seconds } else { 0.0 };
    let allowed = floor.max((rate * max_backlog.as_secs_f64()) as i64);
    if last.queued < allowed {
        return None;
    }
    let over = (last.queued - allowed + 1) as f64;
    let wait = if rate > 0.0 { over / rate } else { 10.0 };
    Some((wait.ceil() as u64).clamp(1, 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at: Instant, queued: i64, finished: i64) -> Reading {
        Reading {
            at,
            queued,
            finished,
        }
    }

    #[test]
    fn a_backlog_under_the_bound_is_admitted_and_one_over_it_waits_its_excess() {
        let start = Instant::now();
        let later = start + Duration::from_secs(10);
        let bound = Duration::from_secs(300);
        // 10 jobs/s: 3000 queued drain in 300 s.
        assert_eq!(
            verdict(reading(start, 0, 0), reading(later, 2999, 100), bound, 500),
            None
        );
        assert_eq!(
            verdict(reading(start, 0, 0), reading(later, 3100, 100), bound, 500),
            Some(11)
        );
        // No progress measured yet: the first 500 (the floor) are admitted anyway.
        assert_eq!(
            verdict(reading(start, 0, 0), reading(start, 499, 0), bound, 500),
            None
        );
        assert_eq!(
            verdict(reading(start, 0, 0), reading(later, 600, 0), bound, 500),
            Some(10)
        );
        // Retention removed finished jobs: no negative rate.
        assert_eq!(
            verdict(reading(start, 0, 900), reading(later, 100, 0), bound, 500),
            None
        );
    }
}
