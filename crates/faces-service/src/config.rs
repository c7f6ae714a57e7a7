//! Service settings: every one a flag and a `FACES_*` environment variable, with
//! embedded defaults that need nothing installed (SQLite file, local folder).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use faces_detect::{DetectorConfig, Engine, Mark, Mode, Suppression};

use crate::recognition::Recognition;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "FACES_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, env = "FACES_PORT", default_value_t = 8282)]
    pub port: u16,
    /// Folder for the database file, originals, marked copies and temporary uploads.
    #[arg(long, env = "FACES_DATA_DIR", default_value = "faces-data")]
    pub data_dir: PathBuf,
    /// Database URL; default `sqlite://<data-dir>/faces.db`. `postgres://…` for scale-out.
    #[arg(long, env = "FACES_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Base URL clients reach this service at; used in `feed_url`, `status_url`, `image_url`.
    /// Default: the address it listens on, with the port it bound (`--port 0` included):
    /// `http://localhost:<port>` on all addresses (`0.0.0.0`, `::`), else `http://<host>:<port>`.
    #[arg(long, env = "FACES_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest upload in bytes.
    #[arg(long, env = "FACES_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Largest image in pixels (width x height), checked from the header before decoding.
    #[arg(long, env = "FACES_MAX_PIXELS", default_value_t = 100_000_000)]
    pub max_pixels: u64,
    /// Detection workers in this process (0: API only). Twice the cores, so that one
    /// worker's storage and database waits overlap another's detection; how many
    /// detect at once is `--max-concurrent-decodes`.
    #[arg(long, env = "FACES_WORKERS", default_value_t = 2 * cores())]
    pub workers: usize,
    /// Attempts per job before its submission is marked failed.
    #[arg(long, env = "FACES_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: u32,
    /// Retry delay after the first failure in milliseconds; doubles with each attempt.
    #[arg(long, env = "FACES_RETRY_BASE_MS", default_value_t = 5000)]
    pub retry_base_ms: u64,
    /// A running job whose worker has not renewed its lease for this long returns to the queue.
    #[arg(long, env = "FACES_JOB_LEASE_SECS", default_value_t = 60)]
    pub job_lease_secs: u64,
    /// Detector mode: fast or accurate.
    #[arg(long, env = "FACES_DETECTOR_MODE", default_value = "fast")]
    pub detector_mode: Mode,
    /// Minimum face score (0..1).
    #[arg(long, env = "FACES_SCORE_THRESHOLD", default_value_t = 0.5)]
    pub score_threshold: f32,
    /// What processed copies do to each face, unless a request says: box (a red box),
    /// blur or pixelate (made unrecognisable), or none.
    #[arg(long, env = "FACES_MARK", default_value = "box")]
    pub mark: Mark,
    /// Faces kept per photo, the highest scores first: bounds the answer, the feed
    /// message and the marked copy whatever threshold a request asks for.
    #[arg(long, env = "FACES_MAX_FACES", default_value_t = 300)]
    pub max_faces: usize,
    /// Which processed photos get an embedding of each face (to name them and to
    /// search them): all, subjects (only while at least one subject exists: no cost
    /// until someone is to be recognised) or off. Embeddings halve the throughput on
    /// photos of six faces on average (docs/design/recognition-model.md), hence
    /// `subjects` by default.
    #[arg(long, env = "FACES_RECOGNITION", default_value = "subjects")]
    pub recognition: Recognition,
    /// Two faces are the same person at this Euclidean distance between their
    /// embeddings or less (dlib's model: 0.6). A face is named after the nearest
    /// example within it; searches find faces within it unless asked otherwise.
    #[arg(long, env = "FACES_MATCH_DISTANCE", default_value_t = 0.6, value_parser = crate::recognition::parse_distance)]
    pub match_distance: f32,
    /// NMS IoU threshold.
    #[arg(long, env = "FACES_NMS_THRESHOLD", default_value_t = 0.4)]
    pub nms_threshold: f32,
    /// How overlapping boxes of one face become one: vote (score-weighted mean of
    /// the group) or hard (the best box, classic NMS).
    #[arg(long, env = "FACES_SUPPRESSION", default_value = "vote")]
    pub suppression: Suppression,
    /// Longest side the detector runs at.
    #[arg(long, env = "FACES_MAX_INPUT_SIDE", default_value_t = 4096)]
    pub max_input_side: u32,
    /// Inference engine: native (this network over AVX2 kernels; rten on CPUs
    /// without AVX2/FMA), rten (pure-Rust ONNX engine) or onnxruntime (a build with
    /// the `onnxruntime` feature, library from ORT_DYLIB_PATH).
    #[arg(long, env = "FACES_DETECTOR_ENGINE", default_value = "native")]
    pub detector_engine: Engine,
    /// Threads the detector computes on (the process's workers share one detector).
    /// With 1 (the default) each detection runs alone on its worker's thread, and
    /// `--max-concurrent-decodes` of them run side by side. With N > 1 the native
    /// engine runs the network of every detection on one pool of N threads that
    /// they all share: one photo finishes sooner, but the network uses at most N
    /// cores however many detect at once. rten always runs on one such pool (N = 1:
    /// one detection at a time); onnxruntime gives each detection running at once
    /// a session of N threads.
    #[arg(long, env = "FACES_DETECTOR_THREADS", default_value_t = 1)]
    pub detector_threads: usize,
    /// Keep originals and marked copies in this S3 bucket instead of the data dir.
    #[arg(long, env = "FACES_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL (Garage, MinIO, …); AWS when unset.
    #[arg(long, env = "FACES_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "FACES_S3_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    #[arg(long, env = "FACES_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    #[arg(long, env = "FACES_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Prefix for every object key in the bucket.
    #[arg(long, env = "FACES_S3_PREFIX", default_value = "")]
    pub s3_prefix: String,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path-style.
    #[arg(long, env = "FACES_S3_VIRTUAL_HOSTED")]
    pub s3_virtual_hosted: bool,
    /// API keys (comma-separated in the environment). When any is set, uploads, reads,
    /// images and feeds need `Authorization: Bearer <key>` or `?api_key=<key>`.
    #[arg(
        long = "api-key",
        env = "FACES_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// Origins allowed to call the API from a browser (CORS); none by default.
    #[arg(
        long = "cors-origin",
        env = "FACES_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Answer marked-image requests with a redirect to a presigned S3 URL instead of
    /// streaming them through this node.
    #[arg(long, env = "FACES_IMAGES_REDIRECT")]
    pub images_redirect: bool,
    /// Uploads each client address may send per minute, after its burst (0: no
    /// limit). Sized against abuse, not batches: a busy service is protected by
    /// `--max-backlog-secs`.
    #[arg(long, env = "FACES_RATE_LIMIT_PER_MINUTE", default_value_t = 1200)]
    pub rate_limit_per_minute: u32,
    /// Uploads a client address may send at once before the per-minute rate applies
    /// (a folder of a few hundred photos fits).
    #[arg(long, env = "FACES_RATE_LIMIT_BURST", default_value_t = 600)]
    pub rate_limit_burst: u32,
    /// Uploads get 503 with `Retry-After` once the queue would take longer than this
    /// to drain at the rate jobs have been finishing (0: off).
    #[arg(long, env = "FACES_MAX_BACKLOG_SECS", default_value_t = 300)]
    pub max_backlog_secs: u64,
    /// Queued jobs always admitted by `--max-backlog-secs`, whatever the measured
    /// drain rate (a service that just started has measured none).
    #[arg(long, env = "FACES_BACKLOG_FLOOR", default_value_t = 500)]
    pub backlog_floor: u64,
    /// Take the client address from this header (e.g. `X-Forwarded-For`, last entry)
    /// instead of the peer. Set it only behind a proxy that writes the header.
    #[arg(long, env = "FACES_TRUSTED_PROXY_HEADER")]
    pub trusted_proxy_header: Option<String>,
    /// Seconds a client has to send a request's headers; slower connections are closed.
    #[arg(long, env = "FACES_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// HTTP connections served at once; beyond it new ones wait to be accepted.
    /// (A WebSocket leaves this count once upgraded.)
    #[arg(long, env = "FACES_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Seconds an upload's body may stall between chunks before the request is dropped.
    #[arg(long, env = "FACES_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,
    /// Uploads streamed at once by this node; more get 503 with `Retry-After`.
    #[arg(long, env = "FACES_MAX_CONCURRENT_UPLOADS", default_value_t = 64)]
    pub max_concurrent_uploads: usize,
    /// Uploads one client address may stream at once; more get 429 with `Retry-After`.
    #[arg(
        long,
        env = "FACES_MAX_CONCURRENT_UPLOADS_PER_ADDRESS",
        default_value_t = 16
    )]
    pub max_concurrent_uploads_per_address: usize,
    /// Images decoded and detected at once by this node, whatever the worker count
    /// (the CPUs' bound; `--memory-budget` bounds their memory).
    #[arg(long, env = "FACES_MAX_CONCURRENT_DECODES", default_value_t = cores())]
    pub max_concurrent_decodes: usize,
    /// Memory for photos being processed at once (`512MiB`, `1GiB`, …): each is
    /// admitted by its real cost (file, decoded pixels at their bit depth and
    /// channels, the RGB copy, the marked JPEG) and waits while the budget is spent;
    /// an upload costing more than all of it gets `413`.
    #[arg(long, env = "FACES_MEMORY_BUDGET", default_value = "1GiB", value_parser = crate::budget::parse_size)]
    pub memory_budget: u64,
    /// Remove submissions, their jobs and files older than this (e.g. `30d`, `12h`);
    /// off when unset. Jobs still queued or running are never removed.
    #[arg(long, env = "FACES_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// How often the retention task runs.
    #[arg(long, env = "FACES_RETENTION_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,
}

/// The S3 bucket's connection settings, from the `--s3-*` flags ([`Config::s3`]).
#[derive(Debug, Clone)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Prepended to every key (several deployments or tests can share a bucket).
    pub prefix: String,
    /// `bucket.host/key` addressing instead of `host/bucket/key`.
    pub virtual_hosted: bool,
}

/// The public URL of the embedded defaults (all addresses, port 8282).
const DEFAULT_PUBLIC_URL: &str = "http://localhost:8282";

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Config {
    /// The settings `faces serve` would use with no flags: the embedded defaults,
    /// except where a `FACES_*` environment variable of this process sets one
    /// (clap reads the environment here too).
    pub fn embedded_defaults() -> Self {
        use clap::{Command, FromArgMatches};
        let command = <Self as Args>::augment_args(Command::new("faces"));
        let matches = command.get_matches_from(["faces"]);
        Self::from_arg_matches(&matches).expect("defaults parse")
    }

    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("faces.db").display()
            )
        })
    }

    /// The base URL of `feed_url`, `status_url` and `image_url`, without a trailing `/`.
    /// Unset, it is the one [`Config::settle_public_url`] gives the embedded defaults
    /// (`http://localhost:8282`); [`crate::App::start`] settles it before anything is served.
    pub fn public_url(&self) -> &str {
        self.public_url
            .as_deref()
            .unwrap_or(DEFAULT_PUBLIC_URL)
            .trim_end_matches('/')
    }

    /// Sets the public URL, if `--public-url` did not, from where the service listens:
    /// `http://localhost:<port>` when it listens on all addresses, else
    /// `http://<host>:<port>`. [`crate::App::start`] calls it with the port it bound, so
    /// that a service told `--port 0` (as the tests start it) links to the port it got.
    pub fn settle_public_url(&mut self, port: u16) {
        if self.public_url.is_none() {
            self.public_url = Some(if self.host.is_unspecified() {
                format!("http://localhost:{port}")
            } else {
                format!("http://{}", std::net::SocketAddr::new(self.host, port))
            });
        }
    }

    /// `ws://host/faces` or `wss://host/faces`, matching the public URL's scheme.
    pub fn feed_url(&self) -> String {
        let base = self.public_url();
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_owned()
        };
        format!("{ws}/faces")
    }

    /// S3 settings, when a bucket is configured.
    pub fn s3(&self) -> Option<S3Config> {
        self.s3_bucket.as_ref().map(|bucket| S3Config {
            endpoint: self.s3_endpoint.clone(),
            bucket: bucket.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            prefix: self.s3_prefix.clone(),
            virtual_hosted: self.s3_virtual_hosted,
        })
    }

    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 2u64.saturating_pow(attempt.saturating_sub(1));
        Duration::from_millis(self.retry_base_ms.saturating_mul(factor))
    }

    pub fn detector(&self) -> DetectorConfig {
        DetectorConfig {
            score_threshold: self.score_threshold,
            nms_threshold: self.nms_threshold,
            suppression: self.suppression,
            mode: self.detector_mode,
            max_input_side: self.max_input_side,
            threads: Some(self.detector_threads.max(1)),
            engine: self.detector_engine,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_defaults_are_the_documented_ones() {
        let config = Config::embedded_defaults();
        assert_eq!(config.port, 8282);
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.feed_url(), "ws://localhost:8282/faces");
        assert_eq!(config.retry_delay(1), Duration::from_secs(5));
        assert_eq!(config.retry_delay(3), Duration::from_secs(20));
        assert!(config.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn feed_url_follows_https() {
        let mut config = Config::embedded_defaults();
        config.public_url = Some("https://faces.example.org/".into());
        assert_eq!(config.feed_url(), "wss://faces.example.org/faces");
    }

    #[test]
    fn the_public_url_follows_the_bound_port_unless_set() {
        let mut config = Config::embedded_defaults();
        config.public_url = None;
        config.settle_public_url(8282);
        assert_eq!(config.public_url(), "http://localhost:8282");
        config.public_url = None;
        config.host = "127.0.0.1".parse().unwrap();
        config.settle_public_url(40123);
        assert_eq!(config.public_url(), "http://127.0.0.1:40123");
        config.public_url = None;
        config.host = "::1".parse().unwrap();
        config.settle_public_url(40123);
        assert_eq!(config.public_url(), "http://[::1]:40123");
        config.public_url = Some("https://faces.example.org".into());
        config.settle_public_url(40123);
        assert_eq!(config.public_url(), "https://faces.example.org");
    }
}
