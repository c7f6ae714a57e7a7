//! Shared by the tests and the benchmark that drive the real `faces` binary.
#![allow(dead_code)]

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
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("VmHWM of process {pid}"))
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
