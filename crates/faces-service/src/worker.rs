//! Workers: claim a job, detect faces on a blocking thread, store the marked copy,
//! record the result, tell the feed. Failures are retried with exponential backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use faces_detect::{
    apply_mark, decode, encode_jpeg, DecodeLimits, DetectError, Detector, Embedding, FaceRect,
    Recognizer,
};
use tokio::sync::watch;

use crate::db::ClaimedJob;
use crate::fault::Fault;
use crate::metrics::{Metrics, Stage};
use crate::recognition::Recognition;
use crate::state::AppState;
use crate::store::{processed_key, StoreError};
use crate::submission::{FaceBox, Options, Outcome};

/// How long an idle worker sleeps before looking at the queue again when nobody wakes it.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why an attempt failed, and whether trying again could help.
#[derive(Debug)]
struct JobError {
    message: String,
    kind: Failure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The photo itself is the problem: trying again cannot help.
    Permanent,
    /// Something went wrong with this attempt: try again, a limited number of times.
    Transient,
    /// The disk is full, or the database or storage is unavailable: not the photo's
    /// fault, so the attempt is not counted and the job waits until it clears.
    Fault,
}

impl JobError {
    fn transient(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            kind: Failure::Transient,
        }
    }
    fn permanent(message: impl std::fmt::Display) -> Self {
        Self {
            message: message.to_string(),
            kind: Failure::Permanent,
        }
    }
    fn database(error: sqlx::Error) -> Self {
        Self::classified(Fault::of_database(&error), error)
    }
    fn store(error: StoreError) -> Self {
        Self::classified(Fault::of_store(&error), error)
    }
    fn classified(fault: Fault, error: impl std::fmt::Display) -> Self {
        if fault == Fault::Other {
            return Self::transient(error);
        }
        crate::fault::warn_limited(fault, &error);
        Self {
            message: error.to_string(),
            kind: Failure::Fault,
        }
    }
}

/// Loads the detector all of this process's workers share: one copy of the
/// weights, and engine buffers only for the detections running at once.
pub async fn load_detector(state: &AppState) -> Option<Arc<Detector>> {
    let detector = state.detector().await;
    if detector.is_none() {
        tracing::error!("no worker runs without the detector");
    }
    detector
}

/// Runs one worker until `shutdown` turns true; a job in hand is finished first.
pub async fn run(
    state: Arc<AppState>,
    detector: Arc<Detector>,
    number: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let lease = Duration::from_secs(state.config.job_lease_secs.max(1));
    tracing::debug!(worker = number, "worker ready");
    while !*shutdown.borrow() {
        let claiming = Instant::now();
        match state.db.claim_job(lease).await {
            Ok(Some(job)) => {
                state.metrics.job_stage(Stage::Claim, claiming.elapsed());
                process(&state, &detector, job, lease).await
            }
            Ok(None) => {
                tokio::select! {
                    _ = state.wake.notified() => {}
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(error) => {
                // Every worker polls each second while the database is away: one
                // warning per fault and interval, not one per worker and second.
                crate::fault::warn_limited(Fault::of_database(&error), &error);
                tokio::select! {
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
    tracing::debug!(worker = number, "worker stopped");
}

async fn process(
    state: &Arc<AppState>,
    detector: &Arc<Detector>,
    job: ClaimedJob,
    lease: Duration,
) {
    let id = job.submission_id;
    let max_attempts = state.config.max_attempts.max(1);
    if job.attempts > max_attempts {
        // Its workers kept dying mid-job (crash loop): stop trying.
        let message = format!("gave up after {} attempts", job.attempts - 1);
        state.metrics.jobs_failed();
        match state.db.fail_job(&job, &message).await {
            Ok(true) => crate::notify::announce(state, id).await,
            Ok(false) => {}
            Err(error) => tracing::error!(%id, %error, "could not mark job failed"),
        }
        return;
    }
    let started = Instant::now();
    let heartbeat = {
        let (state, job) = (state.clone(), job.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(lease / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match state.db.renew_lease(&job, lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        return tracing::warn!(id = %job.submission_id, "lost the job's lease")
                    }
                    Err(error) => crate::fault::warn_limited(Fault::of_database(&error), &error),
                }
            }
        })
    };
    let result = attempt(state, detector, &job).await;
    heartbeat.abort();
    let recorded = match result {
        Ok(outcome) => match timed(
            &state.metrics,
            Stage::Commit,
            state.db.complete_job(&job, &outcome),
        )
        .await
        {
            Ok(true) => {
                state.metrics.jobs_done();
                tracing::info!(%id, faces = outcome.faces.len(), duplicate = outcome.duplicate_of.is_some(),
                    ms = started.elapsed().as_millis() as u64, "job done");
                timed(
                    &state.metrics,
                    Stage::Notify,
                    crate::notify::announce(state, id),
                )
                .await;
                Ok(())
            }
            Ok(false) => {
                tracing::warn!(%id, "job was taken over by another worker; result dropped");
                Ok(())
            }
            Err(error) => Err(error),
        },
        Err(error) if error.kind == Failure::Fault => {
            state.metrics.jobs_retried();
            let delay = state.config.retry_delay(1);
            tracing::debug!(%id, error = %error.message, "job waits for a fault to clear");
            state
                .db
                .retry_job(&job, &error.message, Utc::now() + delay, false)
                .await
                .map(|_| ())
        }
        Err(error) if error.kind == Failure::Permanent || job.attempts >= max_attempts => {
            state.metrics.jobs_failed();
            tracing::warn!(%id, attempts = job.attempts, error = %error.message, "job failed");
            let failed = state.db.fail_job(&job, &error.message).await;
            if let Ok(true) = failed {
                crate::notify::announce(state, id).await;
            }
            failed.map(|_| ())
        }
        Err(error) => {
            state.metrics.jobs_retried();
            let delay = state.config.retry_delay(job.attempts);
            tracing::warn!(%id, attempts = job.attempts, retry_in_ms = delay.as_millis() as u64,
                error = %error.message, "job attempt failed; will retry");
            let run_at = Utc::now() + delay;
            state
                .db
                .retry_job(&job, &error.message, run_at, true)
                .await
                .map(|_| ())
        }
    };
    if let Err(error) = recorded {
        // The lease will run out and another attempt will pick the job up.
        match Fault::of_database(&error) {
            Fault::Other => tracing::error!(%id, %error, "could not record the job's result"),
            fault => crate::fault::warn_limited(fault, &error),
        }
    }
}

/// One attempt at a job: reuse an earlier identical upload's result, or detect.
async fn attempt(
    state: &Arc<AppState>,
    detector: &Arc<Detector>,
    job: &ClaimedJob,
) -> Result<Outcome, JobError> {
    let metrics = &state.metrics;
    let looking_up = Instant::now();
    let submission = state
        .db
        .submission(job.submission_id)
        .await
        .map_err(JobError::database)?
        .ok_or_else(|| JobError::permanent("submission disappeared"))?;
    let target = processed_key(submission.id);

    let earlier = state
        .db
        .done_with_hash(&submission)
        .await
        .map_err(JobError::database)?;
    let recognizer = recognizer_for(state).await?;
    // An earlier result is reused with its faces' embeddings; one without them
    // (recognition was off then) is detected afresh if they are wanted now.
    let earlier = match earlier {
        Some(earlier) => {
            let faces = earlier.faces.as_ref().map_or(0, Vec::len);
            let embeddings = state
                .db
                .embeddings_of(&[earlier.id])
                .await
                .map_err(JobError::database)?
                .remove(&earlier.id)
                .unwrap_or_default();
            let complete = embeddings.len() == faces;
            (complete || recognizer.is_none()).then_some((earlier, embeddings))
        }
        None => None,
    };
    metrics.job_stage(Stage::Lookup, looking_up.elapsed());
    if let Some((earlier, embeddings)) = earlier {
        let copied = match &earlier.processed_key {
            Some(from) => state
                .store
                .copy(from, &target)
                .await
                .map(|()| Some(target.clone())),
            None => Ok(None),
        };
        match copied {
            Ok(processed_key) => {
                return Ok(Outcome {
                    processed_at: Utc::now(),
                    width: earlier.width.unwrap_or_default(),
                    height: earlier.height.unwrap_or_default(),
                    faces: earlier.faces.clone().unwrap_or_default(),
                    processed_key,
                    duplicate_of: Some(earlier.id),
                    embeddings: embeddings
                        .into_iter()
                        .map(|(face, embedding)| (face as u32, embedding))
                        .collect(),
                })
            }
            // Its marked copy is gone (removed by retention or by hand): retrying
            // cannot bring it back, so detect afresh.
            Err(StoreError::NotFound(key)) => {
                tracing::info!(id = %submission.id, earlier = %earlier.id, %key,
                    "the earlier result's image is gone; detecting again")
            }
            Err(error) => return Err(JobError::store(error)),
        }
    }

    // Held from before the file is read until the marked copy is stored: the
    // photo's whole stay in memory counts against the budget.
    let worst_case = || {
        let (width, height) = (
            submission.width.unwrap_or(0),
            submission.height.unwrap_or(0),
        );
        // A row from before costs were recorded: 16-bit RGBA, the dearest format.
        submission.byte_size + width * height * (8 + 3)
    };
    let cost = submission.decode_bytes.unwrap_or_else(worst_case).max(0) as u64;
    let reserving = Instant::now();
    let _reserved = state.budget.reserve(cost).await;
    let reserved_after = reserving.elapsed();
    let original = timed(
        metrics,
        Stage::Read,
        state.store.get(&submission.original_key),
    )
    .await
    .map_err(JobError::store)?;
    let limits = DecodeLimits {
        max_pixels: state.config.max_pixels,
    };
    let detector = detector.clone();
    let options = submission.options;
    let max_faces = state.config.max_faces;
    // Bounds how many decoded images sit in memory at once, whatever the worker count.
    let waiting = Instant::now();
    let decoding = state
        .decodes
        .clone()
        .acquire_owned()
        .await
        .map_err(JobError::transient)?;
    metrics.job_stage(Stage::Wait, reserved_after + waiting.elapsed());
    let blocking_metrics = metrics.clone();
    let (width, height, faces, embeddings, marked) = tokio::task::spawn_blocking(move || {
        let _decoding = decoding;
        detect(
            &detector,
            recognizer.as_deref(),
            &original,
            options,
            max_faces,
            &limits,
            &blocking_metrics,
        )
    })
    .await
    .map_err(JobError::transient)??;
    let processed_key = match marked {
        Some(jpeg) => {
            timed(metrics, Stage::Store, state.store.put(&target, jpeg))
                .await
                .map_err(JobError::store)?;
            Some(target)
        }
        None => None,
    };
    Ok(Outcome {
        processed_at: Utc::now(),
        width,
        height,
        faces,
        processed_key,
        duplicate_of: None,
        embeddings,
    })
}

/// The recognition model if this photo's faces get embeddings (`--recognition`).
async fn recognizer_for(state: &AppState) -> Result<Option<Arc<Recognizer>>, JobError> {
    let wanted = match state.config.recognition {
        Recognition::All => true,
        Recognition::Subjects => state.db.any_subject().await.map_err(JobError::database)?,
        Recognition::Off => false,
    };
    if !wanted {
        return Ok(None);
    }
    // Built into the binary: failing to load is a broken build, not this photo's fault.
    state
        .recognizer()
        .await
        .map(Some)
        .ok_or_else(|| JobError::transient("the recognition model failed to load"))
}

/// Awaits `work`, recording how long it took as `stage`.
async fn timed<T>(metrics: &Metrics, stage: Stage, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let output = work.await;
    metrics.job_stage(stage, started.elapsed());
    output
}

/// Runs `work`, recording how long it took as `stage`.
fn timed_sync<T>(metrics: &Metrics, stage: Stage, work: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let output = work();
    metrics.job_stage(stage, started.elapsed());
    output
}

type Detected = (i64, i64, Vec<FaceBox>, Vec<(u32, Embedding)>, Option<Bytes>);

/// Decode, detect, embed (with a recognizer) and mark: CPU-bound, runs on a blocking thread.
fn detect(
    detector: &Detector,
    recognizer: Option<&Recognizer>,
    original: &[u8],
    options: Options,
    max_faces: usize,
    limits: &DecodeLimits,
    metrics: &Metrics,
) -> Result<Detected, JobError> {
    let mut image =
        timed_sync(metrics, Stage::Decode, || decode(original, limits)).map_err(|e| match e {
            DetectError::InvalidImage(_) | DetectError::TooManyPixels { .. } => {
                JobError::permanent(e)
            }
            other => JobError::transient(other),
        })?;
    let started = Instant::now();
    let mut faces = detector
        .detect_with(&image, options.mode, options.threshold as f32)
        .map_err(JobError::transient)?;
    // Threshold 0 on a portrait finds thousands of "faces": keep the best.
    faces.sort_by(|a, b| b.score.total_cmp(&a.score));
    faces.truncate(max_faces.max(1));
    metrics.detection_seconds(started.elapsed());
    metrics.job_stage(Stage::Detect, started.elapsed());
    // From the unmarked pixels: a blurred face has nothing left to recognise.
    let embeddings = match recognizer {
        Some(recognizer) if !faces.is_empty() => timed_sync(metrics, Stage::Embed, || {
            let rects: Vec<FaceRect> = faces.iter().map(FaceRect::of).collect();
            recognizer.embed(&image, &rects)
        }),
        _ => Vec::new(),
    };
    let (width, height) = image.dimensions();
    let marked = if faces.is_empty() {
        None
    } else {
        // Marked in place: the unmarked pixels are not needed again.
        timed_sync(metrics, Stage::Draw, || {
            apply_mark(&mut image, &faces, options.mark)
        });
        let jpeg = timed_sync(metrics, Stage::Encode, || encode_jpeg(&image))
            .map_err(JobError::transient)?;
        Some(Bytes::from(jpeg))
    };
    Ok((
        i64::from(width),
        i64::from(height),
        faces.iter().map(FaceBox::from).collect(),
        (0..).zip(embeddings).collect(),
        marked,
    ))
}
