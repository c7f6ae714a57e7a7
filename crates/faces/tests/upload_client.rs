//! `faces upload` against a real `faces serve`: the known counts come back, one JSON
//! line per file; a server with a low rate limit still gets every file, because
//! the client waits out each `429`'s `Retry-After`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

mod support;

fn known_counts() -> PathBuf {
    faces_test_data::path("known_counts")
}

/// Runs `faces upload` on `known_counts` to completion; returns its exit status and
/// its lines by file.
async fn upload(server: &support::Process, extra: &[&str]) -> (bool, HashMap<String, Value>) {
    upload_paths(server, extra, &[known_counts()]).await
}

async fn upload_paths(
    server: &support::Process,
    extra: &[&str],
    paths: &[PathBuf],
) -> (bool, HashMap<String, Value>) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_faces"));
    command
        .args(["upload", "--server", server.base()])
        .args(extra)
        .args(paths)
        .stderr(Stdio::inherit());
    let output = command.output().await.expect("faces upload runs");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines = text
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).expect("one JSON object per line");
            (line["file"].as_str().expect("file").to_owned(), line)
        })
        .collect();
    (output.status.success(), lines)
}

fn expected_counts() -> HashMap<String, Option<u64>> {
    std::fs::read_to_string(known_counts().join("counts.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            (
                entry["file"].as_str().unwrap().to_owned(),
                entry["faces"].as_u64(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_folder_is_uploaded_and_each_result_printed() {
    let server = support::serve(&[]).await;
    let (ok, lines) = upload(&server, &["--concurrency", "4"]).await;
    let expected = expected_counts();
    assert!(ok, "every file done: {lines:?}");
    assert_eq!(lines.len(), expected.len(), "one line per image file");
    for (file, count) in &expected {
        let line = &lines[file];
        let keys: Vec<&String> = line.as_object().unwrap().keys().take(3).collect();
        assert_eq!(
            keys,
            ["file", "id", "status"],
            "the file, then the body in its order"
        );
        assert_eq!(line["status"], "done", "{line}");
        assert!(line["id"].is_string());
        if let Some(count) = count {
            assert_eq!(line["faces_count"].as_u64(), Some(*count), "{file}: {line}");
        }
    }
}

#[tokio::test]
async fn a_refused_file_is_reported_and_fails_the_run() {
    let server = support::serve(&[]).await;
    let edge = known_counts().join("../edge/files");
    let (ok, lines) = upload_paths(
        &server,
        &[],
        &[
            edge.join("not_an_image.jpg"),
            known_counts().join("fr_biden.jpg"),
        ],
    )
    .await;
    assert!(!ok, "exit status must say a file failed");
    assert_eq!(lines.len(), 2);
    let line_of = |name: &str| &lines[edge.join(name).to_str().unwrap()];
    let refused = line_of("not_an_image.jpg");
    assert_eq!(refused["http_status"], 400, "{refused}");
    assert!(refused["error"]["image"][0]
        .as_str()
        .unwrap()
        .starts_with("Upload a valid image"));
    let done = &lines[known_counts().join("fr_biden.jpg").to_str().unwrap()];
    assert_eq!(done["faces_count"], 1, "{done}");
}

#[tokio::test]
async fn a_rate_limited_server_still_gets_every_file() {
    let server =
        support::serve(&["--rate-limit-per-minute", "120", "--rate-limit-burst", "2"]).await;
    let (ok, lines) = upload(
        &server,
        &["--concurrency", "4", "--mode", "fast", "--threshold", "0.6"],
    )
    .await;
    assert!(ok, "{lines:?}");
    assert_eq!(lines.len(), expected_counts().len());
    assert!(
        lines
            .values()
            .all(|l| l["status"] == "done" && l["threshold"] == 0.6),
        "{lines:?}"
    );
    // The limit did refuse some: the client waited them out.
    let metrics = support::metrics_text(server.base()).await;
    let refused: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("faces_http_requests_total") && l.contains("status=\"429\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(refused > 0.0, "no upload was refused:\n{metrics}");
}
