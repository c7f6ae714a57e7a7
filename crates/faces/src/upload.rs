//! `faces upload --server URL PATH...`: sends files and folders to a running faces
//! server, a few at a time, waits for each result and prints it as one JSON line.
//! Refusals that say "later" (`429`, `503`) are waited out as `Retry-After` asks.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use faces_detect::Mode;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// What the server accepts; other files in a folder are skipped.
const UPLOAD_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "gif"];
/// Seconds each upload asks the server to hold the answer for its result.
const SERVER_WAIT_SECS: u64 = 60;
/// Network failures tolerated per file before it counts as failed.
const NETWORK_ATTEMPTS: u32 = 5;

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// Image files or folders (searched recursively for jpg, jpeg, png and gif).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// The faces server's base URL.
    #[arg(long, env = "FACES_SERVER", default_value = "http://localhost:8282")]
    server: String,
    /// Uploads in flight at once.
    #[arg(long, short = 'j', default_value_t = 4)]
    concurrency: usize,
    /// API key, when the server was started with `--api-keys`.
    #[arg(long, env = "FACES_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Detection mode for these photos (default: the server's).
    #[arg(long)]
    mode: Option<Mode>,
    /// Minimum face score for these photos, 0-1 (default: the server's).
    #[arg(long)]
    threshold: Option<f64>,
    /// Give up on a file whose result has not come within this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
}

/// How one file ended: the line to print, and whether it counts as a success.
struct Outcome {
    line: Value,
    ok: bool,
}

pub fn run(args: UploadArgs) -> Result<bool> {
    let files = crate::detect::collect(&args.paths, &UPLOAD_EXTENSIONS)?;
    if files.is_empty() {
        anyhow::bail!("no jpg, jpeg, png or gif files found");
    }
    if let Some(t) = args.threshold {
        anyhow::ensure!((0.0..=1.0).contains(&t), "--threshold must be from 0 to 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(upload_all(args, files))
}

async fn upload_all(args: UploadArgs, files: Vec<(PathBuf, String)>) -> Result<bool> {
    let progress = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(files.len() as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} uploaded and processed, {eta} left")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let client = Arc::new(Client::new(&args)?);
    let limit = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (path, name) in files {
        let (client, limit) = (client.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            client.upload(&path, &name).await
        });
    }
    let mut all_ok = true;
    while let Some(done) = tasks.join_next().await {
        let outcome = done.context("an upload task failed")?;
        all_ok &= outcome.ok;
        progress.suspend(|| println!("{}", outcome.line));
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(all_ok)
}

struct Client {
    http: reqwest::Client,
    server: String,
    query: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl Client {
    fn new(args: &UploadArgs) -> Result<Self> {
        let mut query = format!("wait={SERVER_WAIT_SECS}");
        if let Some(mode) = args.mode {
            query += &format!("&mode={}", mode.as_str());
        }
        if let Some(threshold) = args.threshold {
            query += &format!("&threshold={threshold}");
        }
        Ok(Self {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                // The server closes a connection idle for --header-timeout-secs (10 s by
                // default); reusing one just as it does fails the upload, so let idle
                // connections go sooner.
                .pool_idle_timeout(Duration::from_secs(5))
                .build()?,
            server: args.server.trim_end_matches('/').to_owned(),
            query,
            api_key: args.api_key.clone(),
            timeout: Duration::from_secs(args.timeout),
        })
    }

    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let request = self.http.request(method, url);
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    async fn upload(&self, path: &PathBuf, name: &str) -> Outcome {
        let deadline = Instant::now() + self.timeout;
        match self.submit(path, name, deadline).await {
            Ok(body) => {
                let ok = body["status"] == "done";
                Outcome {
                    line: with_file(name, body),
                    ok,
                }
            }
            Err(error) => Outcome {
                line: with_file(name, error),
                ok: false,
            },
        }
    }

    /// Uploads until accepted (waiting out `429`/`503`), then waits for the result.
    /// `Err` holds what to print for a file that did not get one.
    async fn submit(&self, path: &PathBuf, name: &str, deadline: Instant) -> Result<Value, Value> {
        let mut network_failures = 0;
        loop {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| json!({"error": format!("could not read the file: {e}")}))?;
            let file_name = path
                .file_name()
                .map_or_else(|| name.to_owned(), |n| n.to_string_lossy().into_owned());
            let form = reqwest::multipart::Form::new().part(
                "image",
                reqwest::multipart::Part::bytes(bytes).file_name(file_name),
            );
            let url = format!("{}/image/?{}", self.server, self.query);
            let sent = self
                .request(reqwest::Method::POST, url)
                .header("Accept", "application/json")
                .multipart(form)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(error) => {
                    network_failures += 1;
                    if network_failures >= NETWORK_ATTEMPTS || Instant::now() >= deadline {
                        return Err(
                            json!({"error": format!("could not reach the server: {error}")}),
                        );
                    }
                    tokio::time::sleep(Duration::from_secs(1 << network_failures.min(4))).await;
                    continue;
                }
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            match status {
                StatusCode::OK => return Ok(body),
                StatusCode::ACCEPTED => {
                    let id = body["id"].as_str().unwrap_or_default().to_owned();
                    return self.wait_for(&id, deadline).await;
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    let wait = Duration::from_secs(retry_after.unwrap_or(1).max(1));
                    if Instant::now() + wait >= deadline {
                        return Err(refused(status, body));
                    }
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(refused(status, body)),
            }
        }
    }

    /// Polls `GET /image/<id>` until the submission is done or failed.
    async fn wait_for(&self, id: &str, deadline: Instant) -> Result<Value, Value> {
        let mut pause = Duration::from_millis(200);
        loop {
            let url = format!("{}/image/{id}", self.server);
            if let Ok(response) = self.request(reqwest::Method::GET, url).send().await {
                if let Ok(body) = response.json::<Value>().await {
                    if body["status"] == "done" || body["status"] == "failed" {
                        return Ok(body);
                    }
                }
            }
            if Instant::now() + pause >= deadline {
                return Err(json!({"id": id, "error": "no result before --timeout"}));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// The line for a refused upload: its HTTP status and the server's error body.
fn refused(status: StatusCode, body: Value) -> Value {
    json!({"http_status": status.as_u16(), "error": body})
}

/// `{"file": name, ...body}`: the file first, then the body's fields in order.
fn with_file(name: &str, body: Value) -> Value {
    let mut line = serde_json::Map::new();
    line.insert("file".into(), name.into());
    if let Value::Object(fields) = body {
        line.extend(fields);
    }
    Value::Object(line)
}
