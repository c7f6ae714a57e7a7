//! What an operator relies on: metrics, the OpenAPI document, rate and concurrency
//! limits, body timeouts and retention, each against the real service.

mod common;

use std::time::Duration;

use common::{read, TestApp, DEADLINE};
use futures::StreamExt;
use serde_json::{json, Value};

async fn text(app: &TestApp, path: &str) -> String {
    let response = app.http.get(app.url(path)).send().await.expect("GET");
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.expect("body")
}

/// The value of one sample line (`name{labels} value`) of a Prometheus text page.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn metrics_change_after_an_upload() {
    let app = TestApp::start_with(|c| c.workers = 1).await;
    let before = text(&app, "/metrics").await;
    assert_eq!(
        sample(&before, "faces_uploads_total"),
        Some(0.0),
        "{before}"
    );
    let bytes = read("known_counts/fr_kit_with_rose.jpg");
    let size = bytes.len() as f64;
    let (status, body) = app.upload_as("image", bytes, "kit.jpg").await;
    assert_eq!(status, 202, "{body}");
    app.wait_processed(body["id"].as_str().unwrap()).await;
    let (status, _) = app
        .upload_as("image", b"not an image".to_vec(), "x.jpg")
        .await;
    assert_eq!(status, 400);

    let after = text(&app, "/metrics").await;
    let value =
        |series: &str| sample(&after, series).unwrap_or_else(|| panic!("{series} in {after}"));
    assert_eq!(value("faces_uploads_total"), 1.0);
    assert_eq!(value("faces_upload_bytes_total"), size);
    assert_eq!(value("faces_jobs_done_total"), 1.0);
    assert_eq!(value("faces_jobs_failed_total"), 0.0);
    assert_eq!(value("faces_detection_seconds_count"), 1.0);
    assert!(value("faces_detection_seconds_sum") > 0.0);
    assert_eq!(value("faces_queue_jobs{state=\"queued\"}"), 0.0);
    assert_eq!(value("faces_feed_clients"), 0.0);
    assert_eq!(
        value(r#"faces_http_requests_total{route="/image/",method="POST",status="202"}"#),
        1.0
    );
    assert_eq!(
        value(r#"faces_http_requests_total{route="/image/",method="POST",status="400"}"#),
        1.0
    );
    // Routes are counted by pattern, not by the id in the path.
    assert!(
        value(r#"faces_http_requests_total{route="/image/{id}",method="GET",status="200"}"#) >= 1.0
    );
    assert!(
        after.contains("# TYPE faces_detection_seconds histogram"),
        "{after}"
    );
}

/// A validator for the schema that `pointer` (into the document) names, resolving
/// `$ref`s against the whole document.
fn schema_at(document: &Value, pointer: &str) -> jsonschema::Validator {
    let schema = document
        .pointer(pointer)
        .unwrap_or_else(|| panic!("{pointer} is documented"));
    let mut root = json!({ "components": document["components"] });
    root.as_object_mut()
        .unwrap()
        .extend(schema.as_object().unwrap().clone());
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("{pointer}: {e}"))
}

fn assert_matches(document: &Value, pointer: &str, body: &Value) {
    let validator = schema_at(document, pointer);
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{pointer}: {errors:?}\n{body:#}");
}

#[tokio::test]
async fn openapi_document_matches_real_responses() {
    let app = TestApp::start_with(|c| c.workers = 1).await;
    let (status, document) = app.get_json("/openapi.json").await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/image/", "post"),
        ("/image/{id}", "get"),
        ("/images", "get"),
        ("/faces", "get"),
        ("/static/processed_faces/{aa}/{bb}/{file}", "get"),
        ("/healthcheck", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            document["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    let responses = |path: &str, method: &str, status: u16| {
        format!(
            "/paths/{}/{method}/responses/{status}/content/application~1json/schema",
            path.replace('~', "~0").replace('/', "~1")
        )
    };

    let mut ws = app.feed().await;
    let (status, accepted) = app
        .upload_as(
            "image",
            read("known_counts/fr_kit_with_rose.jpg"),
            "kit.jpg",
        )
        .await;
    assert_eq!(status, 202);
    assert_matches(&document, &responses("/image/", "post", 202), &accepted);
    let id = accepted["id"].as_str().unwrap();
    let done = app.wait_processed(id).await;
    assert_matches(&document, &responses("/image/{id}", "get", 200), &done);
    let message = common::next_message(&mut ws, DEADLINE)
        .await
        .expect("feed message");
    assert_matches(&document, "/components/schemas/Detection", &message);

    let (status, page) = app.get_json("/images?limit=5").await;
    assert_eq!(status, 200);
    assert_matches(&document, &responses("/images", "get", 200), &page);

    for (status, body) in [
        app.upload_as("image", Vec::new(), "empty.jpg").await,
        app.upload_as("image", read("edge/files/image.tiff"), "a.tiff")
            .await,
        app.get_json("/images?limit=0").await,
    ] {
        assert_eq!(status, 400, "{body}");
        assert_matches(&document, &responses("/image/", "post", 400), &body);
    }
    let (status, missing) = app
        .get_json(&format!("/image/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(status, 404);
    assert_matches(&document, &responses("/image/{id}", "get", 404), &missing);
    let (status, ready) = app.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_matches(&document, &responses("/readyz", "get", 200), &ready);

    // Recognition: a subject, an example from the stored face, a search by it.
    let created = app
        .http
        .post(app.url("/subjects"))
        .json(&json!({"name": "Kit"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let subject: Value = created.json().await.unwrap();
    assert_matches(&document, &responses("/subjects", "post", 201), &subject);
    let examples = format!("/subjects/{}/examples", subject["id"].as_str().unwrap());
    let added = app
        .http
        .post(app.url(&examples))
        .json(&json!({"image_id": id, "face": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), 201);
    let example: Value = added.json().await.unwrap();
    assert_matches(
        &document,
        &responses("/subjects/{id}/examples", "post", 201),
        &example,
    );
    let (status, listed) = app.get_json("/subjects").await;
    assert_eq!(status, 200);
    assert_matches(&document, &responses("/subjects", "get", 200), &listed);
    let (status, found) = app.get_json(&format!("/search?image_id={id}&face=0")).await;
    assert_eq!(status, 200, "{found}");
    assert_matches(&document, &responses("/search", "get", 200), &found);
    let (status, named) = app.get_json(&format!("/image/{id}")).await;
    assert_eq!(status, 200);
    assert!(named["faces"][0]["subject"].is_string(), "{named}");
    assert_matches(&document, &responses("/image/{id}", "get", 200), &named);

    // A schema that disagrees with the body is caught: the check itself can fail.
    let mut wrong = accepted.clone();
    wrong["id"] = json!("not-a-uuid");
    assert!(!schema_at(&document, &responses("/image/", "post", 202)).is_valid(&wrong));

    // Swagger UI is served from the binary and points at the document.
    let docs = text(&app, "/docs/").await;
    assert!(docs.contains("swagger-ui"), "{docs}");
    let initializer = text(&app, "/docs/swagger-initializer.js").await;
    assert!(initializer.contains("/openapi.json"), "{initializer}");
    assert!(
        initializer.contains(r#""validatorUrl": "none""#),
        "no call to the online validator: {initializer}"
    );
    assert!(text(&app, "/docs/swagger-ui-bundle.js").await.len() > 100_000);
}

/// Posts a small PNG, with an `X-Forwarded-For` header when given; the raw answer.
async fn post_png(app: &TestApp, forwarded: Option<&str>) -> reqwest::Response {
    let part = reqwest::multipart::Part::bytes(read("edge/files/png_rgb.png")).file_name("a.png");
    let mut request = app
        .http
        .post(app.url("/image/"))
        .multipart(reqwest::multipart::Form::new().part("image", part));
    if let Some(forwarded) = forwarded {
        request = request.header("X-Forwarded-For", forwarded);
    }
    request.send().await.expect("upload answered")
}

#[tokio::test]
async fn the_defaults_accept_a_folder_sent_eight_at_a_time_from_one_address() {
    let app = TestApp::start_with(|c| c.workers = 0).await;
    let statuses = futures::stream::iter(0..200)
        .map(|_| post_png(&app, None))
        .buffer_unordered(8)
        .map(|response| response.status().as_u16())
        .collect::<Vec<_>>()
        .await;
    assert!(statuses.iter().all(|&s| s == 202), "{statuses:?}");
}

#[tokio::test]
async fn a_backlog_that_would_not_drain_in_time_gets_503_with_retry_after() {
    // No workers: nothing drains, so the floor is all that is admitted.
    let app = TestApp::start_with(|c| {
        c.workers = 0;
        c.backlog_floor = 3;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(post_png(&app, None).await.status(), 202);
    }
    let response = post_png(&app, None).await;
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["image"][0]
        .as_str()
        .unwrap()
        .starts_with("The server has more photos queued than it can process soon."));
    let metrics = text(&app, "/metrics").await;
    assert_eq!(
        sample(&metrics, "faces_queue_jobs{state=\"queued\"}"),
        Some(3.0),
        "nothing stored"
    );
}

#[tokio::test]
async fn uploads_over_the_rate_limit_get_429_with_retry_after() {
    let app = TestApp::start_with(|c| {
        c.workers = 0;
        c.rate_limit_per_minute = 1;
        c.rate_limit_burst = 2;
    })
    .await;
    for _ in 0..2 {
        assert_eq!(post_png(&app, None).await.status(), 202);
    }
    let response = post_png(&app, None).await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    let message = body["image"][0].as_str().expect("SPEC shape");
    assert!(message.contains("Too many uploads"), "{message}");
    // Reads are not limited, and a header the operator did not trust changes nothing.
    assert_eq!(app.get_json("/images").await.0, 200);
    let spoofed = post_png(&app, Some("203.0.113.9")).await;
    assert_eq!(spoofed.status(), 429);
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_address_has_its_own_allowance() {
    let app = TestApp::start_with(|c| {
        c.workers = 0;
        c.rate_limit_per_minute = 1;
        c.rate_limit_burst = 1;
        c.trusted_proxy_header = Some("X-Forwarded-For".into());
    })
    .await;
    // The client wrote the first entry; the proxy appended the real address.
    let upload = |forwarded| post_png(&app, Some(forwarded));
    assert_eq!(upload("1.1.1.1, 198.51.100.1").await.status(), 202);
    assert_eq!(upload("2.2.2.2, 198.51.100.1").await.status(), 429);
    assert_eq!(upload("198.51.100.2").await.status(), 202);
}

#[tokio::test]
async fn silent_and_trickling_connections_are_closed_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::start_with(|c| c.header_timeout_secs = 1).await;
    let address = app.base.trim_start_matches("http://").to_owned();
    let silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut trickling = tokio::net::TcpStream::connect(&address).await.unwrap();
    let started = tokio::time::Instant::now();
    let trickle = async {
        for byte in b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n" {
            if trickling.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut rest = Vec::new();
        let _ = trickling.read_to_end(&mut rest).await;
        started.elapsed()
    };
    let wait_closed = |mut stream: tokio::net::TcpStream| async move {
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        started.elapsed()
    };
    let (silent_closed, trickle_closed) = tokio::time::timeout(
        Duration::from_secs(10),
        futures::future::join(wait_closed(silent), trickle),
    )
    .await
    .expect("both connections are closed by the server");
    for closed in [silent_closed, trickle_closed] {
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(3)).contains(&closed),
            "closed after {closed:?}"
        );
    }
    // Meanwhile, and afterwards, the server answers.
    assert_eq!(text(&app, "/healthcheck").await, "OK");
}

type BodySender = futures::channel::mpsc::UnboundedSender<Result<Vec<u8>, std::io::Error>>;

/// A multipart upload whose body is fed by the returned sender, so a test can stall it.
fn streaming_upload(app: &TestApp) -> (BodySender, tokio::task::JoinHandle<(u16, Value)>) {
    let (sender, receiver) = futures::channel::mpsc::unbounded();
    let request = app
        .http
        .post(app.url("/image/"))
        .header("Content-Type", "multipart/form-data; boundary=XyZ")
        .body(reqwest::Body::wrap_stream(receiver));
    let answer = tokio::spawn(async move {
        let response = request.send().await.expect("answered");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    });
    let head =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n";
    sender.unbounded_send(Ok(head.to_vec())).unwrap();
    (sender, answer)
}

#[tokio::test]
async fn uploads_beyond_the_concurrency_cap_get_503_and_stalled_bodies_time_out() {
    let mut app = TestApp::start_with(|c| {
        c.workers = 0;
        c.max_concurrent_uploads = 1;
        c.body_timeout_secs = 2;
    })
    .await;
    let (stalled, answer) = streaming_upload(&app);
    // Until the server holds it: its slot taken, its address counted.
    app.wait_uploads_streaming(1).await;

    let response = post_png(&app, None).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(body["image"][0]
        .as_str()
        .unwrap()
        .contains("too many uploads"));

    // The stalled body is given up on after the body timeout, and nothing is kept.
    let started = tokio::time::Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), answer)
        .await
        .expect("a stalled upload is answered")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status, 408, "{body}");
    assert!(body["image"][0].as_str().is_some(), "{body}");
    drop(stalled);
    assert!(app.stored_files().await.is_empty());

    // The permit came back: the next upload goes through.
    let (status, body) = app
        .upload_as("image", read("edge/files/png_rgb.png"), "a.png")
        .await;
    assert_eq!(status, 202, "{body}");
    app.stop().await;
}

/// The stored files (originals, marked copies) of one submission.
async fn keys_of(app: &TestApp, id: &str) -> Vec<String> {
    let mut keys = app.stored_files().await;
    keys.retain(|key| key.contains(id));
    keys
}

#[tokio::test]
async fn one_address_cannot_hold_more_than_its_share_of_upload_slots() {
    let app = TestApp::start_with(|c| {
        c.workers = 0;
        c.max_concurrent_uploads_per_address = 1;
        c.body_timeout_secs = 1;
    })
    .await;
    let (stalled, answer) = streaming_upload(&app);
    // Until the server holds it: its slot taken, its address counted.
    app.wait_uploads_streaming(1).await;
    let response = post_png(&app, None).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert!(
        body["image"][0].as_str().unwrap().contains("at once"),
        "{body}"
    );
    // Once the stalled upload is given up on, the address may upload again.
    assert_eq!(answer.await.unwrap().0, 408);
    drop(stalled);
    let (status, body) = app
        .upload_as("image", read("edge/files/png_rgb.png"), "a.png")
        .await;
    assert_eq!(status, 202, "{body}");
}

#[tokio::test]
async fn retention_removes_old_rows_and_files_and_keeps_new_and_in_flight_ones() {
    let app = TestApp::start_with(|c| {
        c.workers = 1;
        c.retention = Some(Duration::from_secs(3600));
        c.retention_interval = Duration::from_millis(200);
    })
    .await;
    let mut ids = Vec::new();
    for file in [
        "known_counts/fr_kit_with_rose.jpg",
        "edge/files/baseline.jpg",
        "edge/files/png_rgb.png",
    ] {
        let id = app.upload(file).await;
        app.wait_processed(&id).await;
        ids.push(id);
    }
    let [old, new, in_flight] = [&ids[0], &ids[1], &ids[2]];
    let old_record = app.get_json(&format!("/image/{old}")).await.1;
    assert_eq!(
        keys_of(&app, old).await.len(),
        2,
        "original and marked copy"
    );

    // Two days old: one finished, one whose job is (as far as the queue knows) running.
    let db = sqlx::AnyPool::connect(&app.config.database_url())
        .await
        .unwrap();
    let two_days_ago = chrono::Utc::now().timestamp_micros() - 2 * 86_400 * 1_000_000;
    for id in [old, in_flight] {
        sqlx::query("UPDATE submissions SET created_at = $1 WHERE id = $2")
            .bind(two_days_ago)
            .bind(id.as_str())
            .execute(&db)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE jobs SET state = 'running' WHERE submission_id = $1")
        .bind(in_flight.as_str())
        .execute(&db)
        .await
        .unwrap();
    sqlx::query("UPDATE submissions SET status = 'processing' WHERE id = $1")
        .bind(in_flight.as_str())
        .execute(&db)
        .await
        .unwrap();

    let deadline = tokio::time::Instant::now() + DEADLINE;
    while app.get_json(&format!("/image/{old}")).await.0 != 404 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "old submission not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        keys_of(&app, old).await,
        Vec::<String>::new(),
        "its files went too"
    );
    let marked = old_record["image_url"].as_str().unwrap();
    assert_eq!(app.http.get(marked).send().await.unwrap().status(), 404);
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE submission_id = $1")
        .bind(old.as_str())
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(jobs, 0, "its job row went too");

    for kept in [new, in_flight] {
        assert_eq!(app.get_json(&format!("/image/{kept}")).await.0, 200);
        assert!(
            !keys_of(&app, kept).await.is_empty(),
            "{kept} keeps its files"
        );
    }
    let metrics = text(&app, "/metrics").await;
    assert_eq!(
        sample(&metrics, "faces_retention_removed_total"),
        Some(1.0),
        "{metrics}"
    );
    db.close().await;
}

#[tokio::test]
async fn feed_clients_are_counted_in_metrics() {
    let app = TestApp::start().await;
    let mut feeds = Vec::new();
    for _ in 0..3 {
        feeds.push(app.feed().await);
    }
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let metrics = text(&app, "/metrics").await;
        if sample(&metrics, "faces_feed_clients") == Some(3.0) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for mut feed in feeds {
        feed.close(None).await.unwrap();
        while feed.next().await.is_some() {}
    }
}
