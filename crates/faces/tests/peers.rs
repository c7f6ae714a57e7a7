//! The peers' detection endpoints against a real `faces serve`, as their clients
//! call them: DeepStack's and CodeProject.AI's `POST /v1/vision/face` and
//! CompreFace's `POST /api/v1/detection/detect`. The known counts at the peers'
//! default thresholds, boxes inside the image, every documented error, with and
//! without `--api-key`, the busy answer, and nothing stored. (The real client
//! libraries are driven by tests/peers/test_clients.py.)

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::StatusCode;
use serde_json::Value;

mod support;

const DEEPSTACK: &str = "/v1/vision/face";
const COMPREFACE: &str = "/api/v1/detection/detect";

fn known_counts() -> PathBuf {
    faces_test_data::path("known_counts")
}

/// The photos of `known_counts` whose count is meaningful, with it.
fn expected_counts() -> Vec<(String, usize)> {
    std::fs::read_to_string(known_counts().join("counts.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            let count = entry["faces"].as_u64()?;
            Some((entry["file"].as_str().unwrap().to_owned(), count as usize))
        })
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dimensions(path: &Path) -> (u64, u64) {
    let (width, height) = image::image_dimensions(path).unwrap();
    (u64::from(width), u64::from(height))
}

/// A file part as the peers' clients send it: a bare name, no content type.
fn file_part(bytes: Vec<u8>, name: &str) -> Part {
    Part::bytes(bytes).file_name(name.to_owned())
}

/// `POST /v1/vision/face` with `image` (as deepstack-python names it) and `fields`.
async fn deepstack(
    server: &support::Process,
    image: Option<Vec<u8>>,
    fields: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut form = Form::new();
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    if let Some(image) = image {
        form = form.part("image", file_part(image, "image"));
    }
    let response = reqwest::Client::new()
        .post(server.url(DEEPSTACK))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.json().await.unwrap())
}

/// `POST /api/v1/detection/detect?<query>` with part `file` and `headers`.
async fn compreface(
    server: &support::Process,
    query: &str,
    file: Option<(Vec<u8>, &str)>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form = Form::new();
    if let Some((bytes, name)) = file {
        form = form.part("file", file_part(bytes, name));
    }
    let mut request = reqwest::Client::new()
        .post(format!("{}?{query}", server.url(COMPREFACE)))
        .multipart(form);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// Asserts `0 <= min < max <= size` for both axes of a peer's box.
fn assert_inside(face: &Value, (width, height): (u64, u64), what: &str) {
    let at = |key: &str| {
        face[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: {key} in {face}"))
    };
    assert!(
        at("x_min") < at("x_max") && at("x_max") <= width,
        "{what}: {face} in {width}x{height}"
    );
    assert!(
        at("y_min") < at("y_max") && at("y_max") <= height,
        "{what}: {face} in {width}x{height}"
    );
}

fn deepstack_error(body: &Value, error: &str) {
    assert_eq!(
        body,
        &serde_json::json!({"success": false, "error": error, "duration": 0})
    );
}

fn compreface_error(body: &Value, code: u64) {
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
}

#[tokio::test]
async fn deepstack_and_codeproject_clients_get_the_known_counts() {
    let server = support::serve(&[]).await;
    let mut counts = HashMap::new();
    for (file, expected) in expected_counts() {
        let path = known_counts().join(&file);
        let size = dimensions(&path);
        // deepstack-python sends 0.45; CodeProject.AI clients often send nothing (0.55).
        for fields in [&[("api_key", ""), ("min_confidence", "0.45")][..], &[]] {
            let (status, headers, body) = deepstack(&server, Some(read(&path)), fields).await;
            assert_eq!(status, StatusCode::OK, "{file}: {body}");
            assert!(
                headers.contains_key("content-length"),
                "{file}: not chunked"
            );
            let predictions = body["predictions"].as_array().unwrap();
            assert_eq!(body["success"], true);
            assert_eq!(
                predictions.len(),
                expected,
                "{file} with {fields:?}: {body}"
            );
            assert_eq!(body["count"], expected as u64);
            for face in predictions {
                assert_inside(face, size, &file);
                let confidence = face["confidence"].as_f64().unwrap();
                assert!((0.55..=1.0).contains(&confidence), "{file}: {face}");
            }
            let message = if expected == 1 {
                "Found 1 face".to_owned()
            } else {
                format!("Found {expected} faces")
            };
            assert_eq!(body["message"], message.as_str());
            for (key, value) in [
                ("moduleId", "FaceProcessing"),
                ("command", "detect"),
                ("inferenceDevice", "CPU"),
            ] {
                assert_eq!(body[key], value, "{body}");
            }
            assert_eq!(body["code"], 200);
            assert_eq!(body["duration"], 0);
            for key in ["inferenceMs", "processMs", "analysisRoundTripMs"] {
                assert!(body[key].is_u64(), "{key}: {body}");
            }
            assert!(
                body["requestId"].is_string()
                    && body["moduleName"].is_string()
                    && body["processedBy"].is_string()
            );
            let timestamp = body["timestampUTC"].as_str().unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc2822(timestamp).is_ok()
                    && timestamp.ends_with(" GMT"),
                "RFC 1123: {timestamp}"
            );
        }
        counts.insert(file, expected);
    }
    assert!(counts.len() >= 18, "only {} photos", counts.len());
    // The trailing slash is the same endpoint.
    let photo = read(&known_counts().join("fr_two_people.jpg"));
    let form = Form::new().part("image", file_part(photo, "image.jpg"));
    let response = reqwest::Client::new()
        .post(server.url("/v1/vision/face/"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["predictions"].as_array().unwrap().len(), 2);
    // Answered, not stored: no submission, nothing for the feed.
    let images = support::get_json(&reqwest::Client::new(), &server.url("/images")).await;
    assert_eq!(images["images"], serde_json::json!([]), "{images}");
}

#[tokio::test]
async fn compreface_clients_get_the_known_counts() {
    let server = support::serve(&[]).await;
    for (file, expected) in expected_counts() {
        let path = known_counts().join(&file);
        let size = dimensions(&path);
        // The SDK's query form: `?&k=v`, here with the default threshold (none sent).
        let (status, body) = compreface(
            &server,
            "&status=true&face_plugins=landmarks,age",
            Some((read(&path), &file)),
            &[("x-api-key", "any")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{file}: {body}");
        let result = body["result"].as_array().unwrap();
        assert_eq!(result.len(), expected, "{file}: {body}");
        for face in result {
            assert_inside(&face["box"], size, &file);
            let probability = face["box"]["probability"].as_f64().unwrap();
            assert!((0.8..=1.0).contains(&probability), "{file}: {face}");
            let landmarks = face["landmarks"].as_array().unwrap();
            assert_eq!(landmarks.len(), 5);
            for point in landmarks {
                assert!(point[0].as_u64().unwrap() < size.0 && point[1].as_u64().unwrap() < size.1);
            }
            assert!(face["execution_time"]["detector"].is_number(), "{face}");
        }
        assert!(body["plugins_versions"]["detector"].is_string(), "{body}");
    }
    // Without plugins or status: the box only.
    let two = read(&known_counts().join("fr_two_people.jpg"));
    let (status, body) = compreface(&server, "", Some((two.clone(), "image.jpg")), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let first = body["result"][0].as_object().unwrap();
    assert_eq!(first.keys().collect::<Vec<_>>(), ["box"]);
    assert!(body.get("plugins_versions").is_none());
    // `limit=1`: the larger face only.
    let (_, all) = compreface(&server, "", Some((two.clone(), "a.jpg")), &[]).await;
    let area = |face: &Value| {
        let b = &face["box"];
        (b["x_max"].as_u64().unwrap() - b["x_min"].as_u64().unwrap())
            * (b["y_max"].as_u64().unwrap() - b["y_min"].as_u64().unwrap())
    };
    let largest = all["result"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|f| area(f))
        .unwrap()
        .clone();
    let (_, one) = compreface(&server, "&limit=1", Some((two.clone(), "a.jpg")), &[]).await;
    assert_eq!(one["result"].as_array().unwrap(), &vec![largest]);
    // JSON with Base64, as the SDK's base64 calls and the REST docs send it.
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(&two);
    let response = reqwest::Client::new()
        .post(server.url(COMPREFACE))
        .json(&serde_json::json!({ "file": encoded }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["result"].as_array().unwrap().len(), 2, "{body}");
}

#[tokio::test]
async fn every_documented_error_without_keys() {
    let server = support::serve(&[]).await;
    let photo = read(&known_counts().join("fr_biden.jpg"));
    let no_face = read(&faces_test_data::path("nonface/skimage_coffee.png"));
    let not_an_image = b"this is not an image, just text".to_vec();

    // DeepStack, in its order: image, min_confidence, decoding.
    let (status, _, body) = deepstack(&server, None, &[("min_confidence", "0.4")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    deepstack_error(&body, "No valid image file found");
    let response = reqwest::Client::new()
        .post(server.url(DEEPSTACK))
        .json(&serde_json::json!({"image": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    deepstack_error(&response.json().await.unwrap(), "No valid image file found");
    let (status, _, body) =
        deepstack(&server, Some(photo.clone()), &[("min_confidence", "high")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    deepstack_error(&body, "Invalid value for min_confidence");
    let (status, _, body) =
        deepstack(&server, Some(photo.clone()), &[("min_confidence", "1.5")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    deepstack_error(&body, "min_confidence cannot be greater than 1");
    for bytes in [not_an_image.clone(), Vec::new()] {
        let (status, _, body) = deepstack(&server, Some(bytes), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        deepstack_error(&body, "invalid image");
    }
    // No face is a success with no predictions; any key is ignored without keys.
    let (status, _, body) =
        deepstack(&server, Some(no_face.clone()), &[("api_key", "whatever")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&body["predictions"], &body["count"], &body["message"]),
        (
            &serde_json::json!([]),
            &serde_json::json!(0),
            &serde_json::json!("Found 0 faces")
        )
    );

    // CompreFace.
    let (status, body) = compreface(&server, "", None, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    compreface_error(&body, 34);
    let (status, body) = compreface(&server, "", Some((no_face.clone(), "coffee.png")), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        serde_json::json!({"message": "No face is found in the given image", "code": 28})
    );
    let (status, body) = compreface(&server, "", Some((not_an_image, "x.jpg")), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    compreface_error(&body, 21);
    for query in [
        "limit=-1",
        "det_prob_threshold=2",
        "det_prob_threshold=x",
        "status=maybe",
    ] {
        let (status, body) = compreface(&server, query, Some((photo.clone(), "b.jpg")), &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        compreface_error(&body, 26);
    }
    for (json, code) in [
        (serde_json::json!({"file": "not base64!"}), 21),
        (serde_json::json!({"image": "aGVsbG8="}), 34),
    ] {
        let response = reqwest::Client::new()
            .post(server.url(COMPREFACE))
            .json(&json)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        compreface_error(&response.json().await.unwrap(), code);
    }
    let response = reqwest::Client::new()
        .post(server.url(COMPREFACE))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    compreface_error(&response.json().await.unwrap(), 26);
    // Over the upload limit: 413 in each peer's shape.
    let small = support::serve(&["--max-upload-bytes", "1000"]).await;
    let (status, _, body) = deepstack(&small, Some(photo.clone()), &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body["success"], false);
    let (status, body) = compreface(&small, "", Some((photo, "b.jpg")), &[]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    compreface_error(&body, 26);
}

#[tokio::test]
async fn api_keys_are_taken_in_the_peers_places() {
    let server = support::serve(&["--api-key", "k1", "--api-key", "k2"]).await;
    let photo = || read(&known_counts().join("fr_two_people.jpg"));
    for fields in [&[][..], &[("api_key", "")], &[("api_key", "wrong")]] {
        let (status, _, body) = deepstack(&server, Some(photo()), fields).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{fields:?}");
        deepstack_error(&body, "Incorrect api key");
    }
    // The key is checked before the image, as DeepStack does.
    let (status, _, body) = deepstack(&server, None, &[("min_confidence", "0.5")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    deepstack_error(&body, "Incorrect api key");
    let (status, _, body) = deepstack(&server, Some(photo()), &[("api_key", "k2")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 2);
    // Our own way of giving a key is not DeepStack's.
    let form = Form::new().part("image", file_part(photo(), "image"));
    let response = reqwest::Client::new()
        .post(server.url(DEEPSTACK))
        .bearer_auth("k1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let (status, body) = compreface(&server, "", Some((photo(), "two.jpg")), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body,
        serde_json::json!({"message": "Missing header: x-api-key", "code": 20})
    );
    let (status, body) = compreface(
        &server,
        "",
        Some((photo(), "two.jpg")),
        &[("x-api-key", "wrong")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    compreface_error(&body, 10);
    let (status, body) = compreface(
        &server,
        "",
        Some((photo(), "two.jpg")),
        &[("x-api-key", "k1")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["result"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_node_at_its_limit_answers_busy_in_each_peers_shape() {
    let server = support::serve(&["--max-concurrent-uploads-per-address", "1"]).await;
    // A request whose body never finishes holds this address's one place.
    let mut stalled = std::net::TcpStream::connect(server.addr()).unwrap();
    write!(
        stalled,
        "POST {DEEPSTACK} HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n"
    )
    .unwrap();
    stalled.flush().unwrap();
    let photo = read(&known_counts().join("fr_biden.jpg"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (headers, body) = loop {
        let (status, headers, body) = deepstack(&server, Some(photo.clone()), &[]).await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break (headers, body);
        }
        // The stalled request may not have been taken in yet.
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "never busy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(body["success"], false);
    assert!(
        body["error"].as_str().unwrap().contains("at once"),
        "{body}"
    );
    let (status, body) = compreface(&server, "", Some((photo.clone(), "b.jpg")), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    compreface_error(&body, 41);
    // Once it is gone, the place is free again.
    drop(stalled);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, _) = deepstack(&server, Some(photo.clone()), &[]).await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
