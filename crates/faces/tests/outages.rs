//! Scale-out mode through real outages: PostgreSQL stopped and started again
//! mid-queue, then the S3 store (Garage) stopped for a while. Meanwhile uploads get
//! `503` with `Retry-After` and readiness says what is down; afterwards every
//! upload that was ever accepted is done, on a node that was never restarted.
//!
//! It stops the services from `scripts/services/`, so it runs alone and only when
//! asked: `.ci/run` runs it with `--ignored` after the other PostgreSQL tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod support;

const DEADLINE: Duration = Duration::from_secs(180);

/// Runs `scripts/services/<script> <action>` (start prints its exports: dropped).
fn service(script: &str, action: &str) {
    let path = support::repo_file("scripts/services").join(script);
    let status = Command::new("bash")
        .arg(&path)
        .arg(action)
        .stdout(Stdio::null())
        .status()
        .expect("the service script runs");
    assert!(status.success(), "{script} {action} failed");
}

/// Starts the services again even if the test fails half-way, so that later steps find them.
struct Restart;

impl Drop for Restart {
    fn drop(&mut self) {
        service("postgres.sh", "start");
        service("garage.sh", "start");
    }
}

fn photos() -> Vec<PathBuf> {
    let data = faces_test_data::path("throughput");
    let mut files: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Uploads `path`: its status, `Retry-After` and body.
async fn upload(http: &reqwest::Client, base: &str, path: &Path) -> (u16, Option<String>, Value) {
    let bytes = std::fs::read(path).unwrap();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name(name),
    );
    let response = http
        .post(format!("{base}/image/"))
        .multipart(form)
        .send()
        .await
        .expect("upload answered");
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

/// Asserts an upload during an outage is refused as documented: 503, `Retry-After`,
/// one sentence under `image`.
fn assert_unavailable((status, retry, body): &(u16, Option<String>, Value), what: &str) {
    assert_eq!(*status, 503, "upload while {what}: {body}");
    assert!(retry.is_some(), "503 while {what} without Retry-After");
    let sentences = body["image"].as_array().expect("{\"image\": [...]}");
    assert_eq!(sentences.len(), 1, "{body}");
}

async fn readiness(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let response = http.get(format!("{base}/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits until `/readyz` answers `want`; returns its body.
async fn wait_readiness(http: &reqwest::Client, base: &str, want: u16) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = readiness(http, base).await;
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {status} {body}, waiting for {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of `series` (`name{labels}`) on the node's `/metrics`; 0 if absent.
async fn sample(http: &reqwest::Client, base: &str, series: &str) -> f64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Waits until a job attempt has failed since `faces_jobs_retried_total` was
/// `retried` (a job met the outage), or no job is queued or running any more.
async fn wait_for_a_job_to_meet_the_outage(http: &reqwest::Client, base: &str, retried: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let now = sample(http, base, "faces_jobs_retried_total").await;
        let queued = sample(http, base, "faces_queue_jobs{state=\"queued\"}").await;
        let running = sample(http, base, "faces_queue_jobs{state=\"running\"}").await;
        if now > retried || queued + running == 0.0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no job met the storage outage: {queued} queued, {running} running"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "stops PostgreSQL and Garage from scripts/services/; .ci/run runs it with --ignored"]
async fn postgres_restart_and_storage_outage_lose_no_accepted_upload() {
    let env = support::scale_out_env("out").await;
    let temp = tempfile::tempdir().unwrap();
    let node = support::Faces::serve()
        .args(["--workers", "1"])
        .data_dir(temp.path())
        .envs(env)
        .env("FACES_JOB_LEASE_SECS", "3")
        .env("FACES_RETRY_BASE_MS", "500")
        .env("FACES_RATE_LIMIT_PER_MINUTE", "0")
        .start()
        .await;
    let base = node.base().to_owned();
    // Outages leave connections idle for longer than the server keeps them
    // (--header-timeout-secs): a client must not reuse those (see docs/operations.md).
    let http = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut photos = photos().into_iter();
    let mut accepted = Vec::new();
    let mut accept = async |photos: &mut dyn Iterator<Item = PathBuf>, count: usize| {
        for path in photos.take(count) {
            let (status, _, body) = upload(&http, &base, &path).await;
            assert_eq!(status, 202, "{}: {body}", path.display());
            accepted.push(body["id"].as_str().unwrap().to_owned());
        }
    };
    // Jobs queued and in flight when the database goes.
    accept(&mut photos, 12).await;

    let _restart = Restart;
    service("postgres.sh", "stop");
    for path in photos.by_ref().take(2) {
        assert_unavailable(&upload(&http, &base, &path).await, "PostgreSQL is stopped");
    }
    let body = wait_readiness(&http, &base, 503).await;
    assert_ne!(body["database"], "ok", "{body}");
    service("postgres.sh", "start");
    wait_readiness(&http, &base, 200).await;
    accept(&mut photos, 3).await;

    let retried = sample(&http, &base, "faces_jobs_retried_total").await;
    service("garage.sh", "stop");
    for path in photos.by_ref().take(2) {
        assert_unavailable(&upload(&http, &base, &path).await, "Garage is stopped");
    }
    let body = wait_readiness(&http, &base, 503).await;
    assert_ne!(body["storage"], "ok", "{body}");
    // Until jobs meet the outage (reading originals, storing copies): a job attempt
    // has failed on it, or none is left to.
    wait_for_a_job_to_meet_the_outage(&http, &base, retried).await;
    service("garage.sh", "start");
    wait_readiness(&http, &base, 200).await;
    accept(&mut photos, 3).await;

    let deadline = tokio::time::Instant::now() + DEADLINE;
    for id in &accepted {
        loop {
            let shown = support::get_json(&http, &format!("{base}/image/{id}")).await;
            match shown["status"].as_str() {
                Some("done") => break,
                Some("queued" | "processing") => {}
                other => panic!("{id} ended {other:?}: {shown}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} not done after the outages: {shown}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    println!(
        "{} accepted uploads all done after both outages",
        accepted.len()
    );
}
