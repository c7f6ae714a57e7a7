//! The service end to end, as a user sees it: real server, real HTTP and WebSocket
//! clients, real photos, real SQLite file and folders.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{next_message, read, TestApp, DEADLINE};
use faces_service::store::original_key;
use faces_service::Role;
use serde_json::Value;

fn is_spec_timestamp(text: &str) -> bool {
    // 2024-11-29T16:01:39.784343+00:00
    text.len() == 32
        && text.ends_with("+00:00")
        && text.as_bytes()[10] == b'T'
        && text.as_bytes()[19] == b'.'
}

#[tokio::test]
async fn healthcheck_and_readiness() {
    let app = TestApp::start().await;
    for path in ["/healthcheck", "/healthcheck/"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(response.text().await.unwrap(), "OK");
    }
    let (status, body) = app.get_json("/readyz").await;
    assert_eq!(
        (status, &body["database"], &body["storage"]),
        (200, &"ok".into(), &"ok".into())
    );
}

#[tokio::test]
async fn upload_is_detected_marked_and_broadcast() {
    let app = TestApp::start().await;
    let mut ws = app.feed().await;
    let (status, accepted) = app
        .upload_as("image", read("known_counts/fr_two_people.jpg"), "two.JPG")
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["id"].as_str().unwrap();
    assert_eq!(
        accepted["message"],
        "Request accepted. Starting image processing."
    );
    assert_eq!(
        accepted["feed_url"],
        app.url("/faces").replacen("http", "ws", 1)
    );
    assert_eq!(accepted["status_url"], app.url(&format!("/image/{id}")));

    let message = next_message(&mut ws, DEADLINE).await.expect("notification");
    let keys: Vec<&str> = message
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "message",
            "created_at",
            "processed_at",
            "faces_count",
            "image_url",
            "id",
            "faces",
            "seq"
        ],
        "SPEC field order, then seq"
    );
    assert_eq!(message["message"], "Successful face detection");
    assert_eq!(message["id"], id);
    assert_eq!(message["faces_count"], 2);
    assert_eq!(message["faces"].as_array().unwrap().len(), 2);
    assert_eq!(
        message["faces"][0]["landmarks"].as_array().unwrap().len(),
        5
    );
    for field in ["created_at", "processed_at"] {
        assert!(
            is_spec_timestamp(message[field].as_str().unwrap()),
            "{field}: {}",
            message[field]
        );
    }
    let image_url = message["image_url"].as_str().unwrap();
    let hex = id.replace('-', "");
    assert_eq!(
        image_url,
        app.url(&format!(
            "/static/processed_faces/{}/{}/{id}.jpg",
            &hex[..2],
            &hex[2..4]
        ))
    );

    let response = app.http.get(image_url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/jpeg");
    let etag = response.headers()["etag"].clone();
    let marked = image::load_from_memory(&response.bytes().await.unwrap()).unwrap();
    let original = image::load_from_memory(&read("known_counts/fr_two_people.jpg")).unwrap();
    assert_eq!(
        (marked.width(), marked.height()),
        (original.width(), original.height())
    );
    // A red box is drawn on the first face's top-left corner.
    let face = &message["faces"][0];
    let corner = marked.to_rgb8();
    let pixel = corner.get_pixel(
        face["x"].as_u64().unwrap() as u32 + 1,
        face["y"].as_u64().unwrap() as u32 + 1,
    );
    assert!(
        pixel[0] > 200 && pixel[1] < 60 && pixel[2] < 60,
        "{pixel:?}"
    );
    let cached = app
        .http
        .get(image_url)
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);

    let (status, record) = app.get_json(&format!("/image/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(record["status"], "done");
    assert_eq!(record["faces_count"], 2);
    assert_eq!(record["image_url"], image_url);
    assert_eq!(record["error"], Value::Null);
    let (_, page) = app.get_json("/images?limit=5").await;
    assert_eq!(page["images"][0]["id"], id);
}

#[tokio::test]
async fn exif_rotated_upload_is_marked_upright() {
    let app = TestApp::start().await;
    let id = app.upload("edge/files/exif_orientation_6.jpg").await;
    let record = app.wait_processed(&id).await;
    assert_eq!(
        (record["width"].as_i64(), record["height"].as_i64()),
        (Some(500), Some(375))
    );
    assert_eq!(record["faces_count"], 3);
    let bytes = app
        .http
        .get(record["image_url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let marked = image::load_from_memory(&bytes).unwrap();
    assert_eq!((marked.width(), marked.height()), (500, 375));
}

#[tokio::test]
async fn every_rejection_answers_the_spec_and_stores_nothing() {
    let app = TestApp::start_with(|c| c.max_upload_bytes = 2_000_000).await;
    let invalid =
        "Upload a valid image. The file you uploaded was either not an image or a corrupted image.";
    // PNGs whose chunk structure is broken: the first reference app's check refuses them.
    let png = read("edge/files/png_rgb.png");
    let without_iend = png[..png.len() - 12].to_vec();
    let mut bad_crc = png.clone();
    bad_crc[8 + 8 + 3] ^= 0x01; // a byte of IHDR's width
    let cases: Vec<(&str, Vec<u8>, &str, u16, String)> = vec![
        ("image", png[..60].to_vec(), "cut.png", 400, invalid.into()),
        ("image", without_iend, "no_iend.png", 400, invalid.into()),
        ("image", bad_crc, "bad_crc.png", 400, invalid.into()),
        (
            "image",
            vec![],
            "empty.jpg",
            400,
            "The submitted file is empty.".into(),
        ),
        (
            "image",
            read("edge/files/not_an_image.jpg"),
            "not_an_image.jpg",
            400,
            invalid.into(),
        ),
        (
            "image",
            read("edge/files/truncated.jpg")[..20].to_vec(),
            "cut.jpg",
            400,
            invalid.into(),
        ),
        (
            "image",
            read("edge/files/image.tiff"),
            "image.tiff",
            400,
            "File extension “tiff” is not allowed. Allowed extensions are: gif, jpg, jpeg, png."
                .into(),
        ),
        (
            "image",
            read("edge/files/baseline.jpg"),
            "photo",
            400,
            "File extension “” is not allowed. Allowed extensions are: gif, jpg, jpeg, png.".into(),
        ),
        (
            "image",
            read("edge/files/animated.gif"),
            "gif_named.png",
            400,
            invalid.into(),
        ),
        (
            "image",
            read("edge/files/jpeg_named.png"),
            "jpeg_named.png",
            400,
            invalid.into(),
        ),
        (
            "image",
            read("edge/files/lying_header_65535x65535.png"),
            "lying.png",
            413,
            String::new(),
        ),
        (
            "image",
            read("edge/files/bomb_20000x20000_rgba.png"),
            "bomb.png",
            413,
            String::new(),
        ),
        (
            "image",
            vec![0xFF; 2_100_000],
            "big.jpg",
            413,
            String::new(),
        ),
        (
            "other",
            read("edge/files/baseline.jpg"),
            "baseline.jpg",
            400,
            "No file was submitted.".into(),
        ),
    ];
    for (field, bytes, name, status, message) in cases {
        let (got_status, body) = app.upload_as(field, bytes, name).await;
        assert_eq!(got_status, status, "{name}: {body}");
        let messages = body["image"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: {body}"));
        assert_eq!(messages.len(), 1, "{name}: {body}");
        if message.is_empty() {
            assert!(
                messages[0].as_str().unwrap().contains("limit"),
                "{name}: says the limit: {body}"
            );
        } else {
            assert_eq!(messages[0], message.as_str(), "{name}");
        }
    }

    // A plain value in the `image` field.
    let form = reqwest::multipart::Form::new().text("image", "not a file");
    let response = app
        .http
        .post(app.url("/image/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["image"][0],
        "The submitted data was not a file. Check the encoding type on the form."
    );

    // Not multipart at all.
    let response = app
        .http
        .post(app.url("/image"))
        .json(&serde_json::json!({"image": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let body: Value = response.json().await.unwrap();
    assert!(body["image"][0]
        .as_str()
        .unwrap()
        .contains("multipart/form-data"));

    let (_, page) = app.get_json("/images").await;
    assert_eq!(
        page["images"].as_array().unwrap().len(),
        0,
        "no submission stored"
    );
    assert_eq!(
        app.stored_files().await,
        Vec::<String>::new(),
        "no file left behind"
    );
}

#[tokio::test]
async fn field_file_and_lowercase_extensions_are_accepted() {
    let app = TestApp::start().await;
    let (status, body) = app
        .upload_as("file", read("edge/files/png_rgb.png"), "PHOTO.PNG")
        .await;
    assert_eq!(status, 202, "{body}");
    let record = app.wait_processed(body["id"].as_str().unwrap()).await;
    assert_eq!(record["status"], "done");
    assert_eq!(record["faces_count"], 3);
}

#[tokio::test]
async fn photo_without_faces_is_done_but_not_broadcast() {
    let app = TestApp::start_with(|c| c.workers = 1).await;
    let mut ws = app.feed().await;
    let empty = app.upload("nonface/skimage_coffee.png").await;
    let record = app.wait_processed(&empty).await;
    assert_eq!(record["status"], "done");
    assert_eq!(record["faces_count"], 0);
    assert_eq!(record["image_url"], Value::Null);
    let with_face = app.upload("known_counts/fr_obama.jpg").await;
    let message = next_message(&mut ws, DEADLINE).await.expect("notification");
    assert_eq!(
        message["id"],
        with_face.as_str(),
        "the no-face photo was not announced"
    );
}

#[tokio::test]
async fn identical_bytes_are_not_detected_twice() {
    let app = TestApp::start_with(|c| c.workers = 1).await;
    let mut ws = app.feed().await;
    let first = app.upload("known_counts/fr_kit_with_rose.jpg").await;
    let first_record = app.wait_processed(&first).await;
    let second = app.upload("known_counts/fr_kit_with_rose.jpg").await;
    assert_ne!(first, second, "a new submission");
    let second_record = app.wait_processed(&second).await;
    assert_eq!(second_record["duplicate_of"], first.as_str());
    assert_eq!(second_record["faces"], first_record["faces"]);
    assert_ne!(second_record["image_url"], first_record["image_url"]);
    let ids: Vec<Value> = [
        next_message(&mut ws, DEADLINE).await.unwrap(),
        next_message(&mut ws, DEADLINE).await.unwrap(),
    ]
    .iter()
    .map(|m| m["id"].clone())
    .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()], "both notified");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("faces_detection_seconds_count 1\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_duplicate_whose_earlier_marked_copy_is_gone_is_detected_afresh() {
    let app = TestApp::start_with(|c| c.workers = 1).await;
    let first = app.upload("known_counts/fr_kit_with_rose.jpg").await;
    let first_record = app.wait_processed(&first).await;
    // The earlier marked copy disappears (an operator, or a retention sweep in between).
    let url = first_record["image_url"].as_str().unwrap();
    let key = url.split("/static/").nth(1).unwrap();
    app.store().await.delete(key).await.unwrap();

    let second = app.upload("known_counts/fr_kit_with_rose.jpg").await;
    let second_record = app.wait_processed(&second).await;
    assert_eq!(second_record["status"], "done", "{second_record}");
    assert_eq!(second_record["attempts"], 1, "no retries: {second_record}");
    assert_eq!(second_record["duplicate_of"], Value::Null);
    assert_eq!(second_record["faces"], first_record["faces"]);
    let image = app
        .http
        .get(second_record["image_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(image.status(), 200);
}

#[tokio::test]
async fn a_failing_job_is_retried_then_succeeds() {
    // An API-only node accepts; then the original goes missing (a storage hiccup).
    let mut api = TestApp::start_with(|c| c.workers = 0).await;
    let id = api.upload("known_counts/fr_biden.jpg").await;
    let key = original_key(id.parse().unwrap(), "jpg");
    let store = api.store().await;
    let original = store.get(&key).await.unwrap();
    store.delete(&key).await.unwrap();

    // A worker node on the same database and storage.
    let mut config = common::sibling(&api.config);
    config.workers = 1;
    config.retry_base_ms = 200;
    let mut worker = TestApp::start_config(config, Role::Worker).await;

    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (_, record) = api.get_json(&format!("/image/{id}")).await;
        if record["attempts"].as_i64() >= Some(2) {
            assert_ne!(record["status"], "done");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no retry: {record}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    store.put(&key, original).await.unwrap();
    let record = api.wait_processed(&id).await;
    assert_eq!(record["status"], "done", "{record}");
    assert_eq!(record["faces_count"], 1);
    assert!(record["attempts"].as_i64() >= Some(3));
    worker.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn a_job_that_keeps_failing_ends_failed_with_its_reason() {
    let mut api = TestApp::start_with(|c| c.workers = 0).await;
    let id = api.upload("known_counts/fr_biden.jpg").await;
    api.store()
        .await
        .delete(&original_key(id.parse().unwrap(), "jpg"))
        .await
        .unwrap();
    let mut config = common::sibling(&api.config);
    config.workers = 1;
    config.max_attempts = 3;
    config.retry_base_ms = 10;
    let mut worker = TestApp::start_config(config, Role::Worker).await;
    let record = api.wait_processed(&id).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["attempts"], 3);
    assert!(
        record["error"].as_str().unwrap().contains("not found"),
        "{record}"
    );
    worker.stop().await;
    api.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_uploads_are_each_notified_once() {
    // All fifty come from one address at once.
    let app = TestApp::start_with(|c| c.max_concurrent_uploads_per_address = 50).await;
    let mut ws = app.feed().await;
    let files: Vec<String> = std::fs::read_dir(common::data().join("throughput"))
        .unwrap()
        .map(|e| format!("throughput/{}", e.unwrap().file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".jpg"))
        .take(50)
        .collect();
    assert_eq!(files.len(), 50);
    let uploads = files.iter().map(|f| app.upload(f));
    let ids: Vec<String> = futures::future::join_all(uploads).await;
    let mut pending: HashMap<String, usize> = ids.iter().map(|id| (id.clone(), 0)).collect();
    let mut with_faces = 0;
    for id in &ids {
        if app.wait_processed(id).await["faces_count"].as_i64() > Some(0) {
            with_faces += 1;
        }
    }
    for _ in 0..with_faces {
        let message = next_message(&mut ws, DEADLINE).await.expect("notification");
        *pending
            .get_mut(message["id"].as_str().unwrap())
            .expect("one of ours") += 1;
    }
    assert!(
        next_message(&mut ws, Duration::from_millis(500))
            .await
            .is_none(),
        "no extra messages"
    );
    assert!(pending.values().all(|&n| n <= 1), "notified at most once");
    assert_eq!(
        pending.values().sum::<usize>(),
        with_faces,
        "every detection notified"
    );
    assert!(with_faces >= 45, "crowd photos have faces: {with_faces}");
}

#[tokio::test]
async fn unknown_ids_and_escaping_paths_are_404() {
    let app = TestApp::start().await;
    for path in [
        "/image/7246f927-94a4-4225-9a56-b52bab894ad0",
        "/image/not-a-uuid",
        "/static/processed_faces/72/46/7246f927-94a4-4225-9a56-b52bab894ad0.jpg",
        "/static/processed_faces/00/00/7246f927-94a4-4225-9a56-b52bab894ad0.jpg",
        "/static/processed_faces/../../faces.db",
        "/static/processed_faces/72/46/..%2F..%2Ffaces.db",
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let (status, body) = app.get_json("/images?limit=0").await;
    assert_eq!((status, body["limit"].is_array()), (400, true));
}

#[tokio::test]
async fn api_keys_guard_uploads_reads_and_the_feed() {
    // The second key is base64-like: in a query its `+`, `/` and `=` arrive percent-encoded.
    let app = TestApp::start_with(|c| c.api_keys = vec!["k-one".into(), "k+tw/o=".into()]).await;
    let part =
        || reqwest::multipart::Part::bytes(read("known_counts/fr_obama.jpg")).file_name("o.jpg");
    // No key, and a wrong key: 401 in the JSON shape, nothing accepted.
    for auth in [None, Some("Bearer nope")] {
        let mut request = app
            .http
            .post(app.url("/image/"))
            .multipart(reqwest::multipart::Form::new().part("image", part()));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["detail"][0], "A valid API key is required.");
    }
    assert_eq!(
        app.http
            .get(app.url("/images"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let ws = format!("{}/faces", app.base.replacen("http://", "ws://", 1));
    assert!(
        tokio_tungstenite::connect_async(&ws).await.is_err(),
        "feed without a key"
    );

    // Open: health and the page.
    assert_eq!(
        app.http
            .get(app.url("/healthcheck"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http.get(app.url("/")).send().await.unwrap().status(),
        200
    );

    // With a key (header for HTTP, query for the feed), everything works.
    let (mut feed, _) = tokio_tungstenite::connect_async(format!("{ws}?api_key=k%2Btw%2Fo%3D"))
        .await
        .expect("feed with key");
    let form = reqwest::multipart::Form::new().part("image", part());
    let response = app
        .http
        .post(app.url("/image/"))
        .bearer_auth("k-one")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let message = next_message(&mut feed, DEADLINE)
        .await
        .expect("notification");
    assert_eq!(message["id"], id.as_str());
    let record = app
        .http
        .get(app.url(&format!("/image/{id}")))
        .bearer_auth("k+tw/o=")
        .send()
        .await
        .unwrap();
    assert_eq!(record.status(), 200);
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app =
        TestApp::start_with(|c| c.cors_origins = vec!["https://allowed.example".into()]).await;
    for (origin, allowed) in [
        ("https://allowed.example", true),
        ("https://evil.example", false),
    ] {
        let response = app
            .http
            .request(reqwest::Method::OPTIONS, app.url("/image/"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization")
            .send()
            .await
            .unwrap();
        let header = response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(
            header.as_deref() == Some(origin),
            allowed,
            "{origin}: {header:?}"
        );
    }
    let plain = TestApp::start().await;
    let response = plain
        .http
        .get(plain.url("/images"))
        .header("Origin", "https://allowed.example")
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "CORS is off by default"
    );
}

#[tokio::test]
async fn wait_answers_with_the_result_or_the_202_when_too_short() {
    let app = TestApp::start().await;
    let (status, body, _) = app
        .upload_with(
            "wait=30",
            &[],
            read("known_counts/fr_two_people.jpg"),
            "two.jpg",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "done");
    assert_eq!(body["faces_count"], 2);
    assert_eq!(body["faces"].as_array().unwrap().len(), 2);
    assert_eq!(body["message"], "Image processed.");
    let id = body["id"].as_str().unwrap();
    assert_eq!(body["status_url"], app.url(&format!("/image/{id}")));
    assert!(body["feed_url"].as_str().unwrap().starts_with("ws://"));
    assert!(body["image_url"].as_str().unwrap().ends_with(".jpg"));
    // The same as reading it afterwards.
    let (_, shown) = app.get_json(&format!("/image/{id}")).await;
    assert_eq!(shown["faces"], body["faces"]);

    // No worker here: nothing can finish, so the wait runs out and the 202 comes.
    let api_only = TestApp::start_with(|c| c.workers = 0).await;
    let (status, body, took) = api_only
        .upload_with("wait=1", &[], read("known_counts/fr_biden.jpg"), "b.jpg")
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["message"],
        "Request accepted. Starting image processing."
    );
    assert!(took >= Duration::from_secs(1), "waited {took:?}");
    assert!(took < Duration::from_secs(5), "waited {took:?}");
}

#[tokio::test]
async fn options_are_stored_shown_and_part_of_the_duplicate_key() {
    let app = TestApp::start().await;
    let photo = read("known_counts/fr_two_people.jpg");
    let (status, plain, _) = app
        .upload_with("wait=30", &[], photo.clone(), "p.jpg")
        .await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(
        (plain["mode"].clone(), plain["threshold"].clone()),
        ("fast".into(), 0.5.into())
    );
    assert_eq!(plain["faces_count"], 2);

    // Same bytes, a lower threshold: detected afresh, with the low-scoring candidates.
    let (status, low, _) = app
        .upload_with("wait=30&threshold=0.05", &[], photo.clone(), "p.jpg")
        .await;
    assert_eq!(status, 200, "{low}");
    assert_eq!(low["threshold"], 0.05);
    assert!(low["duplicate_of"].is_null(), "{low}");
    assert!(low["faces_count"].as_u64().unwrap() > 2, "{low}");
    assert!(low["faces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["score"].as_f64().unwrap() < 0.5));

    // The page's form fields do the same; the query string wins where both are given.
    let (status, accurate, _) = app
        .upload_with(
            "wait=60&threshold=0.6",
            &[("mode", "accurate"), ("threshold", "0.9")],
            photo.clone(),
            "p.jpg",
        )
        .await;
    assert_eq!(status, 200, "{accurate}");
    assert_eq!(accurate["mode"], "accurate");
    assert_eq!(accurate["threshold"], 0.6);
    assert!(accurate["duplicate_of"].is_null(), "{accurate}");

    // The same options again: answered from the earlier result.
    let (_, again, _) = app
        .upload_with("wait=30&threshold=0.05", &[], photo, "p.jpg")
        .await;
    assert_eq!(again["duplicate_of"], low["id"], "{again}");
    assert_eq!(again["faces"], low["faces"]);
}

/// `mark=blur` and `mark=pixelate` store a copy with every face unrecognisable (the
/// detector finds none in it) and are part of the duplicate key; `box` and `none`
/// keep every face findable.
#[tokio::test]
async fn mark_anonymises_the_copy_and_is_part_of_the_duplicate_key() {
    let app = TestApp::start().await;
    let photo = read("known_counts/fr_two_people.jpg");
    let detector = faces_detect::Detector::new(Default::default()).unwrap();
    let mut ids = Vec::new();
    for (mark, found) in [("box", 2), ("blur", 0), ("pixelate", 0), ("none", 2)] {
        let (status, body, _) = app
            .upload_with(&format!("wait=30&mark={mark}"), &[], photo.clone(), "p.jpg")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["mark"].as_str(), body["faces_count"].as_u64()),
            (Some(mark), Some(2))
        );
        assert!(body["duplicate_of"].is_null(), "{mark}: {body}");
        let copy = app
            .http
            .get(body["image_url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(copy.status(), 200);
        let copy = faces_detect::decode(&copy.bytes().await.unwrap(), &Default::default()).unwrap();
        assert_eq!(detector.detect(&copy).unwrap().len(), found, "{mark}");
        ids.push(body["id"].clone());
    }
    // The page's form field does the same; the same mark again reuses the result.
    let (status, again, _) = app
        .upload_with("wait=30", &[("mark", "blur")], photo, "p.jpg")
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate_of"], ids[1], "{again}");
}

#[tokio::test]
async fn every_bad_option_gets_its_400_and_stores_nothing() {
    let app = TestApp::start().await;
    let cases = [
        ("wait=61", &[][..], "wait"),
        ("wait=soon", &[][..], "wait"),
        ("mode=turbo", &[][..], "mode"),
        ("threshold=1.5", &[][..], "threshold"),
        ("threshold=-1", &[][..], "threshold"),
        ("", &[("mode", "slow")][..], "mode"),
        ("", &[("threshold", "half")][..], "threshold"),
        ("mark=sepia", &[][..], "mark"),
        ("", &[("mark", "Blur")][..], "mark"),
    ];
    for (query, fields, key) in cases {
        let (status, body, _) = app
            .upload_with(query, fields, read("known_counts/fr_biden.jpg"), "b.jpg")
            .await;
        assert_eq!(status, 400, "{query} {fields:?}: {body}");
        let messages = body[key]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: {body}"));
        assert_eq!(messages.len(), 1, "{body}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
    let (_, page) = app.get_json("/images").await;
    assert_eq!(page["images"].as_array().unwrap().len(), 0);
    assert_eq!(app.stored_files().await, Vec::<String>::new());
}

#[tokio::test]
async fn a_feed_after_a_seq_replays_exactly_the_later_events_then_goes_live() {
    let app = TestApp::start().await;
    let mut live = app.feed().await;
    let photos = [
        "known_counts/fr_two_people.jpg",
        "known_counts/fr_biden.jpg",
        "known_counts/fr_obama.jpg",
    ];
    let mut seen = Vec::new();
    for photo in photos {
        let id = app.upload(photo).await;
        let message = next_message(&mut live, DEADLINE).await.expect("event");
        assert_eq!(message["id"], id.as_str());
        seen.push((message["seq"].as_i64().expect("seq"), id));
    }
    let seqs: Vec<i64> = seen.iter().map(|(seq, _)| *seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    let mut replayed = app.feed_at(&format!("/faces?after={}", seqs[0])).await;
    for (seq, id) in &seen[1..] {
        let message = next_message(&mut replayed, DEADLINE)
            .await
            .expect("replayed");
        assert_eq!(
            (
                message["seq"].as_i64().unwrap(),
                message["id"].as_str().unwrap()
            ),
            (*seq, id.as_str())
        );
        assert_eq!(message["message"], "Successful face detection");
        assert!(message["faces_count"].as_u64().unwrap() >= 1);
    }
    // Then live, with nothing repeated at the join.
    let id = app.upload("known_counts/fr_kit_with_rose.jpg").await;
    let message = next_message(&mut replayed, DEADLINE)
        .await
        .expect("live event");
    assert_eq!(message["id"], id.as_str());
    assert!(message["seq"].as_i64().unwrap() > seqs[2]);
    assert!(next_message(&mut replayed, Duration::from_millis(500))
        .await
        .is_none());

    // From the start: every event; after the last: none.
    let mut all = app.feed_at("/faces?after=0").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(next_message(&mut all, DEADLINE).await.expect("event")["id"].clone());
    }
    assert_eq!(
        ids[..3],
        seen.iter()
            .map(|(_, id)| Value::from(id.as_str()))
            .collect::<Vec<_>>()[..]
    );
    let last = message["seq"].as_i64().unwrap();
    let mut none = app.feed_at(&format!("/faces?after={last}")).await;
    assert!(next_message(&mut none, Duration::from_millis(500))
        .await
        .is_none());

    // A bad seq is refused before the upgrade.
    let url = app.url("/faces?after=-1").replacen("http", "ws", 1);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected 400, got {other:?}"),
    }
}
