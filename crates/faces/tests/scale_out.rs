//! Scale-out mode for real: two API processes (`serve --no-workers`) and two worker
//! processes (`worker`) on one PostgreSQL and one S3-compatible store (Garage).
//! 100 uploads spread over both API nodes; feed clients on both nodes each get
//! every detection exactly once; one worker is killed with SIGKILL mid-run and
//! nothing is lost.
//!
//! Needs `FACES_TEST_DATABASE_URL` and `FACES_TEST_S3_*` (see `scripts/services/`),
//! so it runs only when asked: `.ci/run` starts both services, sets them and runs it
//! with `--ignored` (without them it is reported as ignored, never as passed).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

mod support;

const DEADLINE: Duration = Duration::from_secs(300);
const UPLOADS: usize = 100;

/// `faces` on the back ends of `env` with the data dir `data`, all nodes alike, and
/// without a rate limit (all uploads come from one address; the limit is tested on
/// its own).
fn node(faces: support::Faces, env: &[(String, String)], data: &Path) -> support::Faces {
    faces
        .env("FACES_RATE_LIMIT_PER_MINUTE", "0")
        .envs(env.iter().cloned())
        .data_dir(data)
}

type Order = [Vec<(i64, String)>; 2];

/// Counts a feed message from `node` and notes its place in that node's order.
fn record(
    seen: &mut HashMap<(usize, String), usize>,
    order: &mut Order,
    (node, id, seq): (usize, String, i64),
) {
    order[node].push((seq, id.clone()));
    *seen.entry((node, id)).or_default() += 1;
}

#[tokio::test]
#[ignore = "needs PostgreSQL and Garage from scripts/services/; .ci/run runs it with --ignored"]
async fn two_api_nodes_two_workers_one_killed() {
    let temp = tempfile::tempdir().unwrap();
    let mut env = support::scale_out_env("mp").await;
    env.push(("FACES_JOB_LEASE_SECS".into(), "3".into()));
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let api = support::Faces::serve().arg("--no-workers");
        nodes.push(node(api, &env, temp.path()).start().await);
    }
    let bases: Vec<String> = nodes.iter().map(|node| node.base().to_owned()).collect();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let worker = support::Faces::worker().args(["--workers", "1"]);
        workers.push(node(worker, &env, temp.path()).start().await);
    }
    // One stream of (node, id, seq) from a feed client on each API node.
    let (sender, mut events) = mpsc::unbounded_channel();
    for (node, base) in bases.iter().enumerate() {
        let mut feed = support::feed(base).await;
        let sender = sender.clone();
        tokio::spawn(async move {
            while let Some(event) = feed.recv().await {
                let id = event["id"].as_str().unwrap_or_default().to_owned();
                let _ = sender.send((node, id, event["seq"].as_i64().unwrap_or(-1)));
            }
        });
    }

    let data = faces_test_data::path("throughput");
    let mut files: Vec<_> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for (i, path) in files.iter().take(UPLOADS).enumerate() {
        let part =
            reqwest::multipart::Part::bytes(std::fs::read(path).unwrap()).file_name("crowd.jpg");
        let form = reqwest::multipart::Form::new().part("image", part);
        let response = http
            .post(format!("{}/image/", bases[i % 2]))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        ids.push(
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    // Once work is flowing, kill one worker without warning.
    let mut seen: HashMap<(usize, String), usize> = HashMap::new();
    // (seq, id) in the order each node's client received them.
    let mut order: Order = Default::default();
    while order[0].len() + order[1].len() < 10 {
        let event = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .unwrap()
            .unwrap();
        record(&mut seen, &mut order, event);
    }
    workers[0].kill();

    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut with_faces = 0;
    for (i, id) in ids.iter().enumerate() {
        loop {
            let url = format!("{}/image/{id}", bases[(i + 1) % 2]);
            let record = support::get_json(&http, &url).await;
            if record["status"] == "done" {
                with_faces += usize::from(record["faces_count"].as_i64() > Some(0));
                break;
            }
            assert_ne!(record["status"], "failed", "{record}");
            assert!(tokio::time::Instant::now() < deadline, "lost: {record}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    while order[0].len() + order[1].len() < 2 * with_faces {
        let event = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("every event on both nodes")
            .unwrap();
        record(&mut seen, &mut order, event);
    }
    assert_eq!(
        order[0], order[1],
        "both nodes send the same events in the same order"
    );
    assert!(
        order[0].windows(2).all(|w| w[0].0 < w[1].0),
        "seq increases: {:?}",
        order[0]
    );
    if let Ok(Some(extra)) = tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
        panic!("an extra event: {extra:?}");
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "each event exactly once per node"
    );
    for node in 0..2 {
        assert_eq!(
            seen.keys().filter(|(n, _)| *n == node).count(),
            with_faces,
            "node {node} saw every detection"
        );
    }
    assert!(with_faces >= 90, "crowd photos have faces: {with_faces}");
}
