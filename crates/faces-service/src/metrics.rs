//! Counters and a latency histogram, rendered in the Prometheus text format at `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the detection latency buckets, in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default)]
struct Counters {
    uploads: AtomicU64,
    upload_bytes: AtomicU64,
    jobs_done: AtomicU64,
    jobs_failed: AtomicU64,
    jobs_retried: AtomicU64,
    detection_buckets: [AtomicU64; BUCKETS.len()],
    detection_count: AtomicU64,
    detection_micros: AtomicU64,
}

#[derive(Debug, Clone, Default)]
pub struct Metrics(Arc<Counters>);

/// Values read at scrape time from elsewhere.
pub struct Gauges {
    pub queued: i64,
    pub running: i64,
    pub feed_clients: usize,
}

impl Metrics {
    pub fn upload(&self, bytes: u64) {
        self.0.uploads.fetch_add(1, Ordering::Relaxed);
        self.0.upload_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn jobs_done(&self) {
        self.0.jobs_done.fetch_add(1, Ordering::Relaxed);
    }
    pub fn jobs_failed(&self) {
        self.0.jobs_failed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn jobs_retried(&self) {
        self.0.jobs_retried.fetch_add(1, Ordering::Relaxed);
    }
    pub fn detection_seconds(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.0.detection_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.0.detection_count.fetch_add(1, Ordering::Relaxed);
        self.0
            .detection_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(String, String)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (suffix, value) in lines {
                let _ = writeln!(out, "{name}{suffix} {value}");
            }
        };
        let one = |v: u64| vec![(String::new(), v.to_string())];
        metric(
            "faces_uploads_total",
            "counter",
            "Uploads accepted.",
            &one(get(&c.uploads)),
        );
        metric(
            "faces_upload_bytes_total",
            "counter",
            "Bytes of accepted uploads.",
            &one(get(&c.upload_bytes)),
        );
        metric(
            "faces_jobs_done_total",
            "counter",
            "Jobs finished successfully.",
            &one(get(&c.jobs_done)),
        );
        metric(
            "faces_jobs_failed_total",
            "counter",
            "Jobs given up on.",
            &one(get(&c.jobs_failed)),
        );
        metric(
            "faces_jobs_retried_total",
            "counter",
            "Job attempts that failed and were requeued.",
            &one(get(&c.jobs_retried)),
        );
        metric(
            "faces_queue_jobs",
            "gauge",
            "Jobs in the queue by state.",
            &[
                ("{state=\"queued\"}".into(), gauges.queued.to_string()),
                ("{state=\"running\"}".into(), gauges.running.to_string()),
            ],
        );
        metric(
            "faces_feed_clients",
            "gauge",
            "Connected live-feed clients.",
            &one(gauges.feed_clients as u64),
        );
        let mut histogram: Vec<(String, String)> = BUCKETS
            .iter()
            .zip(&c.detection_buckets)
            .map(|(bound, bucket)| {
                (
                    format!("_bucket{{le=\"{bound}\"}}"),
                    get(bucket).to_string(),
                )
            })
            .collect();
        let count = get(&c.detection_count);
        histogram.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        histogram.push((
            "_sum".into(),
            format!("{}", get(&c.detection_micros) as f64 / 1e6),
        ));
        histogram.push(("_count".into(), count.to_string()));
        metric(
            "faces_detection_seconds",
            "histogram",
            "Time the detector took per image.",
            &histogram,
        );
        out
    }
}
