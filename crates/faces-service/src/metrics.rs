//! Prometheus metrics at `/metrics`, kept with the `metrics` crate and rendered by
//! `metrics-exporter-prometheus`.
//!
//! Each [`Metrics`] owns its recorder instead of installing a global one, so that
//! several services in one process (the tests) each count only their own traffic.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// Upper bounds of the latency buckets, in seconds.
const DETECTION_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Job stages take from well under a millisecond (a claim) to seconds (a large detect).
const STAGE_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
const HTTP_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];
/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// The steps of one job, in order, each timed into `faces_job_stage_seconds{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Taking the next job from the queue (only claims that found one).
    Claim,
    /// Reading the submission and looking for an earlier identical upload.
    Lookup,
    /// Reading the original from storage.
    Read,
    /// Waiting for memory (`--memory-budget`) and a decode permit (`--max-concurrent-decodes`).
    Wait,
    Decode,
    Detect,
    /// Computing each face's embedding (`--recognition`).
    Embed,
    /// Drawing the boxes on the decoded photo.
    Draw,
    /// JPEG-encoding the marked copy.
    Encode,
    /// Writing the marked copy to storage.
    Store,
    /// Recording the result (one transaction).
    Commit,
    /// Handing the result to the feed.
    Notify,
}

impl Stage {
    pub const ALL: [Stage; 12] = [
        Stage::Claim,
        Stage::Lookup,
        Stage::Read,
        Stage::Wait,
        Stage::Decode,
        Stage::Detect,
        Stage::Embed,
        Stage::Draw,
        Stage::Encode,
        Stage::Store,
        Stage::Commit,
        Stage::Notify,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Claim => "claim",
            Stage::Lookup => "lookup",
            Stage::Read => "read",
            Stage::Wait => "wait",
            Stage::Decode => "decode",
            Stage::Detect => "detect",
            Stage::Embed => "embed",
            Stage::Draw => "draw",
            Stage::Encode => "encode",
            Stage::Store => "store",
            Stage::Commit => "commit",
            Stage::Notify => "notify",
        }
    }
}

struct Inner {
    recorder: PrometheusRecorder,
    uploads: Counter,
    upload_bytes: Counter,
    jobs_done: Counter,
    jobs_failed: Counter,
    jobs_retried: Counter,
    retention_removed: Counter,
    detection: Histogram,
    stages: [Histogram; Stage::ALL.len()],
    queued: Gauge,
    running: Gauge,
    feed_clients: Gauge,
    search_faces: Gauge,
    examples: Gauge,
}

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Values read at scrape time from elsewhere.
pub struct Gauges {
    pub queued: i64,
    pub running: i64,
    pub feed_clients: usize,
    /// Stored faces in this node's search index (512 bytes and more each).
    pub search_faces: usize,
    /// Subjects' example faces this node names faces with.
    pub examples: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("faces_detection_seconds".into()),
                &DETECTION_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("faces_job_stage_seconds".into()),
                    &STAGE_BUCKETS,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("faces_http_request_duration_seconds".into()),
                    &HTTP_BUCKETS,
                )
            })
            .expect("bucket lists are not empty")
            .build_recorder();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            recorder.describe_counter(KeyName::from(name), unit, help.into());
        };
        let describe_gauge = |name: &'static str, help: &'static str| {
            recorder.describe_gauge(KeyName::from(name), None, help.into());
        };
        let describe_histogram = |name: &'static str, help: &'static str| {
            recorder.describe_histogram(KeyName::from(name), Some(Unit::Seconds), help.into());
        };
        describe("faces_uploads_total", None, "Uploads accepted.");
        describe(
            "faces_upload_bytes_total",
            Some(Unit::Bytes),
            "Bytes of accepted uploads.",
        );
        describe("faces_jobs_done_total", None, "Jobs finished successfully.");
        describe("faces_jobs_failed_total", None, "Jobs given up on.");
        describe(
            "faces_jobs_retried_total",
            None,
            "Job attempts that failed and were requeued.",
        );
        describe(
            "faces_retention_removed_total",
            None,
            "Submissions removed by retention.",
        );
        describe_histogram(
            "faces_detection_seconds",
            "Time the detector took per image.",
        );
        describe_histogram(
            "faces_job_stage_seconds",
            "Time each stage of a job took (claim, lookup, read, wait, decode, detect, draw, encode, store, commit, notify).",
        );
        describe_gauge("faces_queue_jobs", "Jobs in the queue by state.");
        describe_gauge(
            "faces_feed_clients",
            "Connected live-feed clients (WebSocket and Socket.IO).",
        );
        describe_gauge(
            "faces_search_index_faces",
            "Stored faces in this node's in-memory search index.",
        );
        describe_gauge(
            "faces_examples",
            "Example faces of subjects this node names faces with.",
        );
        describe(
            "faces_http_requests_total",
            None,
            "HTTP requests answered, by route, method and status.",
        );
        describe_histogram(
            "faces_http_request_duration_seconds",
            "Time to answer HTTP requests, by route.",
        );
        let counter =
            |name: &'static str| recorder.register_counter(&Key::from_name(name), &METADATA);
        let queue = |state: &'static str| {
            let key = Key::from_parts("faces_queue_jobs", vec![Label::new("state", state)]);
            recorder.register_gauge(&key, &METADATA)
        };
        let inner = Inner {
            uploads: counter("faces_uploads_total"),
            upload_bytes: counter("faces_upload_bytes_total"),
            jobs_done: counter("faces_jobs_done_total"),
            jobs_failed: counter("faces_jobs_failed_total"),
            jobs_retried: counter("faces_jobs_retried_total"),
            retention_removed: counter("faces_retention_removed_total"),
            detection: recorder
                .register_histogram(&Key::from_name("faces_detection_seconds"), &METADATA),
            stages: Stage::ALL.map(|stage| {
                let key = Key::from_parts(
                    "faces_job_stage_seconds",
                    vec![Label::new("stage", stage.name())],
                );
                recorder.register_histogram(&key, &METADATA)
            }),
            queued: queue("queued"),
            running: queue("running"),
            feed_clients: recorder.register_gauge(&Key::from_name("faces_feed_clients"), &METADATA),
            search_faces: recorder
                .register_gauge(&Key::from_name("faces_search_index_faces"), &METADATA),
            examples: recorder.register_gauge(&Key::from_name("faces_examples"), &METADATA),
            recorder,
        };
        Metrics(Arc::new(inner))
    }

    pub fn upload(&self, bytes: u64) {
        self.0.uploads.increment(1);
        self.0.upload_bytes.increment(bytes);
    }
    pub fn jobs_done(&self) {
        self.0.jobs_done.increment(1);
    }
    pub fn jobs_failed(&self) {
        self.0.jobs_failed.increment(1);
    }
    pub fn jobs_retried(&self) {
        self.0.jobs_retried.increment(1);
    }
    pub fn retention_removed(&self, count: u64) {
        self.0.retention_removed.increment(count);
    }
    pub fn detection_seconds(&self, took: Duration) {
        self.0.detection.record(took.as_secs_f64());
    }

    pub fn job_stage(&self, stage: Stage, took: Duration) {
        self.0.stages[stage as usize].record(took.as_secs_f64());
    }

    /// One answered request. `route` is the route's pattern, never the raw path, so
    /// ids in URLs cannot grow the number of series without bound.
    pub fn http_request(&self, route: &str, method: &str, status: u16, took: Duration) {
        let labels = vec![
            Label::new("route", route.to_owned()),
            Label::new("method", method.to_owned()),
            Label::new("status", status.to_string()),
        ];
        let key = Key::from_parts("faces_http_requests_total", labels);
        self.0
            .recorder
            .register_counter(&key, &METADATA)
            .increment(1);
        let key = Key::from_parts(
            "faces_http_request_duration_seconds",
            vec![Label::new("route", route.to_owned())],
        );
        self.0
            .recorder
            .register_histogram(&key, &METADATA)
            .record(took.as_secs_f64());
    }

    /// Folds recorded histogram samples into buckets until `self` is the last handle.
    pub async fn upkeep(self) {
        let handle = self.0.recorder.handle();
        let weak = Arc::downgrade(&self.0);
        drop(self);
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tick.tick().await;
            if weak.strong_count() == 0 {
                return;
            }
            handle.run_upkeep();
        }
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        self.0.queued.set(gauges.queued as f64);
        self.0.running.set(gauges.running as f64);
        self.0.feed_clients.set(gauges.feed_clients as f64);
        self.0.search_faces.set(gauges.search_faces as f64);
        self.0.examples.set(gauges.examples as f64);
        self.0.recorder.handle().render()
    }
}
