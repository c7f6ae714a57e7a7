//! `faces serve` killed with SIGKILL while jobs are queued and in flight: after a
//! restart every accepted upload is finished, and each is announced exactly once.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(120);

fn start(data_dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_faces"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--workers",
            "1",
            "--job-lease-secs",
            "2",
        ])
        .arg("--port")
        .arg(port.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--public-url")
        .arg(format!("http://127.0.0.1:{port}"))
        .env("FACES_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("faces starts")
}

async fn wait_healthy(base: &str) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while reqwest::get(format!("{base}/healthcheck")).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the feed in the background so nothing waits unread in a socket when the server dies.
async fn listen(base: &str, ids: mpsc::UnboundedSender<String>) -> tokio::task::JoinHandle<()> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("{}/faces", base.replacen("http", "ws", 1)))
            .await
            .expect("feed connects");
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let event: Value = serde_json::from_str(text.as_str()).expect("JSON");
                let _ = ids.send(event["id"].as_str().unwrap_or_default().to_owned());
            }
        }
    })
}

#[tokio::test]
async fn sigkill_mid_run_loses_nothing_and_announces_each_once() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/throughput");
    let temp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let mut server = start(temp.path(), port);
    wait_healthy(&base).await;
    let (sender, mut announced) = mpsc::unbounded_channel();
    let first_feed = listen(&base, sender.clone()).await;

    let mut files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut ids = Vec::new();
    for path in files.iter().take(12) {
        let part =
            reqwest::multipart::Part::bytes(std::fs::read(path).unwrap()).file_name("crowd.jpg");
        let form = reqwest::multipart::Form::new().part("image", part);
        let response = http
            .post(format!("{base}/image/"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = response.json().await.unwrap();
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    // Let a job or two finish, so that the kill lands with some done, one in flight, the rest queued.
    let mut counts: HashMap<String, usize> = HashMap::new();
    let first = tokio::time::timeout(DEADLINE, announced.recv())
        .await
        .unwrap()
        .unwrap();
    *counts.entry(first).or_default() += 1;
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    let _ = first_feed.await;

    let mut server = start(temp.path(), port);
    wait_healthy(&base).await;
    let _second_feed = listen(&base, sender).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut with_faces = 0;
    for id in &ids {
        loop {
            let record: Value = http
                .get(format!("{base}/image/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if record["status"] == "done" {
                with_faces += usize::from(record["faces_count"].as_i64() > Some(0));
                break;
            }
            assert_ne!(record["status"], "failed", "{record}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "not finished after restart: {record}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Collect the announcements: every detection once, and nothing more.
    while counts.values().sum::<usize>() < with_faces {
        let id = tokio::time::timeout(DEADLINE, announced.recv())
            .await
            .expect("announcement")
            .unwrap();
        *counts.entry(id).or_default() += 1;
    }
    if let Ok(Some(extra)) =
        tokio::time::timeout(Duration::from_millis(500), announced.recv()).await
    {
        panic!("announced twice: {extra}");
    }
    assert!(counts.keys().all(|id| ids.contains(id)));
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    server.kill().unwrap();
    server.wait().unwrap();
}
