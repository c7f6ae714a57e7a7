//! Shared by the tests and the benchmark that drive the real `faces` binary.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET url` as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Peak resident set size of process `pid` so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Resets the peak resident set size (VmHWM) of process `pid` to its current RSS
/// (`/proc/<pid>/clear_refs`, Linux 4.0+), so that a later [`peak_rss_kib`] measures
/// only what comes after.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("resetting the peak RSS of process {pid}: {e}"));
}

/// Resident set size of process `pid` now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} of process {pid}"))
}

/// A `faces serve` child on a free port with its own data dir; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    _data: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `faces serve` on its defaults plus `extra` flags and waits until it is ready.
pub async fn serve(extra: &[&str]) -> Server {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_faces"))
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--public-url", &base])
        .arg("--data-dir")
        .arg(data.path())
        .args(extra)
        .env("FACES_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("faces starts");
    wait_ready(&base).await;
    Server {
        child,
        base,
        _data: data,
    }
}

/// The server's `/metrics` text.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Waits until `GET /readyz` answers 200 (database and storage reachable).
pub async fn wait_ready(base: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match reqwest::get(format!("{base}/readyz")).await {
            Ok(response) if response.status() == 200 => return,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects a feed client and forwards every message, as JSON, until the connection ends.
/// It reads in the background, so nothing waits unread in a socket if the server dies.
pub async fn feed(base: &str) -> mpsc::UnboundedReceiver<Value> {
    feed_at(base, "/faces").await
}

/// A feed client at `path` (e.g. `/faces?after=12`), its messages as JSON.
pub async fn feed_at(base: &str, path: &str) -> mpsc::UnboundedReceiver<Value> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("feed connects");
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let event: Value =
                    serde_json::from_str(text.as_str()).expect("feed message is JSON");
                if sender.send(event).is_err() {
                    return;
                }
            }
        }
    });
    receiver
}
