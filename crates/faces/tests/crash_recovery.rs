//! `faces serve` killed with SIGKILL while jobs are queued and in flight: after a
//! restart every accepted upload is finished, and a feed client that reconnects
//! with the last `seq` it saw has received each detection exactly once, in order.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

mod support;

const DEADLINE: Duration = Duration::from_secs(120);

/// Records a feed message: its id's count and its seq.
fn count(counts: &mut HashMap<String, usize>, seqs: &mut Vec<i64>, event: Value) {
    seqs.push(event["seq"].as_i64().expect("seq"));
    *counts
        .entry(event["id"].as_str().unwrap().to_owned())
        .or_default() += 1;
}

#[tokio::test]
async fn sigkill_mid_run_loses_nothing_and_announces_each_once() {
    let data = faces_test_data::path("throughput");
    let http = reqwest::Client::new();

    let mut server = support::Faces::serve()
        .args(["--workers", "1", "--job-lease-secs", "2"])
        .start()
        .await;
    let base = server.base().to_owned();
    let mut first_feed = support::feed(&base).await;

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
    let mut seqs = Vec::new();
    let first = tokio::time::timeout(DEADLINE, first_feed.recv())
        .await
        .unwrap()
        .unwrap();
    count(&mut counts, &mut seqs, first);
    server.kill();
    // What the old server sent before it died still counts.
    while let Some(event) = first_feed.recv().await {
        count(&mut counts, &mut seqs, event);
    }

    // The client reconnects as the page does: after the last seq it saw (to the
    // restarted server, on the port it bound this time).
    server.restart().await;
    let base = server.base().to_owned();
    let last = *seqs.last().unwrap();
    let mut second_feed = support::feed_at(&base, &format!("/faces?after={last}")).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut with_faces = 0;
    for id in &ids {
        loop {
            let record = support::get_json(&http, &format!("{base}/image/{id}")).await;
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
        let event = tokio::time::timeout(DEADLINE, second_feed.recv())
            .await
            .expect("announcement")
            .unwrap();
        count(&mut counts, &mut seqs, event);
    }
    if let Ok(Some(extra)) =
        tokio::time::timeout(Duration::from_millis(500), second_feed.recv()).await
    {
        panic!("announced twice: {}", extra["id"]);
    }
    assert!(counts.keys().all(|id| ids.contains(id)));
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in seq order: {seqs:?}"
    );
    server.kill();
}
