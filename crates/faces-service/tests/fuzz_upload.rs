//! Bounded fuzzing of `POST /image/` over real HTTP against the in-process service
//! (SQLite, local folder, one worker): mutated images (see the decode fuzzer's
//! mutations) under varied field names, file names and part headers, inside
//! multipart framing that is itself sometimes mutated, under varied content types.
//!
//! Properties: every upload is answered, with 202 or a 4xx in the SPEC error shape
//! `{"field": ["message"]}`, never a 5xx; afterwards every accepted job ends `done`
//! or `failed`, exactly the accepted uploads are listed, no temporary upload is left
//! behind, and `/healthcheck` still answers `OK`.
//!
//! Cases: `PROPTEST_CASES` (default [`DEFAULT_CASES`]).

mod common;
#[path = "../../faces-detect/tests/support/mutate.rs"]
mod mutate;

use std::cell::RefCell;
use std::time::{Duration, Instant};

use common::{read, TestApp};
use mutate::{apply, mutation, Mutation};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEFAULT_CASES: u32 = 2000;
const MAX_UPLOAD_BYTES: u64 = 600_000;

const SEEDS: [&str; 12] = [
    "edge/files/baseline.jpg",
    "edge/files/progressive.jpg",
    "edge/files/cmyk.jpg",
    "edge/files/exif_orientation_6.jpg",
    "edge/files/truncated.jpg",
    "edge/files/palette.png",
    "edge/files/tiny_62x46.png",
    "edge/files/one_pixel.png",
    "edge/files/lying_header_65535x65535.png",
    "edge/files/animated.gif",
    "edge/files/image.tiff",
    "edge/files/not_an_image.jpg",
];

const FIELDS: [&str; 6] = [
    "image",
    "file",
    "images",
    "",
    "IMAGE",
    "image\"; name=\"file",
];
const FILE_NAMES: [Option<&str>; 14] = [
    Some("a.jpg"),
    Some("a.JPEG"),
    Some("a.png"),
    Some("a.gif"),
    Some("a.tiff"),
    Some("a"),
    Some(""),
    Some(".jpg"),
    Some("../../../../etc/passwd.jpg"),
    Some("/abs/path/x.png"),
    Some("ünïcødé 😀.jpg"),
    Some("a.jpg.exe"),
    Some("con.gif"),
    None,
];

#[derive(Debug, Clone, Copy)]
enum ContentType {
    Correct,
    Quoted,
    NoBoundary,
    WrongBoundary,
    Other(&'static str),
    Missing,
}

#[derive(Debug, Clone)]
struct Upload {
    seed: usize,
    image: Vec<Mutation>,
    field: usize,
    /// An index into [`FILE_NAMES`], or `None` for the seed's own name.
    file_name: Option<usize>,
    part_type: Option<&'static str>,
    /// Plain text parts before the file part.
    before: usize,
    /// A second file part after the first.
    second: bool,
    boundary: &'static str,
    content_type: ContentType,
    /// Mutations of the whole multipart body.
    framing: Vec<Mutation>,
}

fn upload() -> impl Strategy<Value = Upload> {
    let content_type = prop_oneof![
        12 => Just(ContentType::Correct),
        2 => Just(ContentType::Quoted),
        1 => Just(ContentType::NoBoundary),
        1 => Just(ContentType::WrongBoundary),
        1 => prop::sample::select(vec!["text/plain", "application/octet-stream", "multipart/mixed; boundary=b0undary", "image/jpeg"]).prop_map(ContentType::Other),
        1 => Just(ContentType::Missing),
    ];
    let framing = prop_oneof![
        3 => Just(Vec::new()),
        1 => prop::collection::vec(mutation(), 1..4),
    ];
    (
        (
            0..SEEDS.len(),
            prop_oneof![
                1 => Just(Vec::new()),
                3 => prop::collection::vec(mutation(), 1..4),
            ],
            prop_oneof![6 => Just(0usize), 2 => Just(1usize), 1 => 0..FIELDS.len()],
            prop_oneof![3 => Just(None), 1 => (0..FILE_NAMES.len()).prop_map(Some)],
            prop::option::of(prop::sample::select(vec![
                "image/jpeg",
                "image/png",
                "application/octet-stream",
                "text/html",
            ])),
        ),
        (
            0usize..3,
            prop::bool::weighted(0.1),
            prop::sample::select(vec![
                "b0undary",
                "X",
                "----WebKitFormBoundary7MA4YWxkTrZu0gW",
                "a'b(c)d+e_f,g-h.i/j:k=l?m",
            ]),
            content_type,
            framing,
        ),
    )
        .prop_map(
            |(
                (seed, image, field, file_name, part_type),
                (before, second, boundary, content_type, framing),
            )| Upload {
                seed,
                image,
                field,
                file_name,
                part_type,
                before,
                second,
                boundary,
                content_type,
                framing,
            },
        )
}

/// The request body and its `Content-Type` header (if any).
fn build(upload: &Upload, seeds: &[Vec<u8>]) -> (Vec<u8>, Option<String>) {
    let boundary = upload.boundary;
    let mut body = Vec::new();
    for n in 0..upload.before {
        body.extend(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"note{n}\"\r\n\r\nhello {n}\r\n").as_bytes());
    }
    let file = apply(seeds[upload.seed].clone(), &upload.image);
    let mut part = |bytes: &[u8]| {
        let mut disposition = format!("form-data; name=\"{}\"", FIELDS[upload.field]);
        let own = SEEDS[upload.seed].rsplit('/').next();
        let name = upload.file_name.map_or(own, |n| FILE_NAMES[n]);
        if let Some(name) = name {
            disposition.push_str(&format!("; filename=\"{name}\""));
        }
        body.extend(format!("--{boundary}\r\nContent-Disposition: {disposition}\r\n").as_bytes());
        if let Some(part_type) = upload.part_type {
            body.extend(format!("Content-Type: {part_type}\r\n").as_bytes());
        }
        body.extend(b"\r\n");
        body.extend(bytes);
        body.extend(b"\r\n");
    };
    part(&file);
    if upload.second {
        part(&seeds[0]);
    }
    body.extend(format!("--{boundary}--\r\n").as_bytes());
    let body = apply(body, &upload.framing);
    let content_type = match upload.content_type {
        ContentType::Correct => Some(format!("multipart/form-data; boundary={boundary}")),
        ContentType::Quoted => Some(format!("multipart/form-data; boundary=\"{boundary}\"")),
        ContentType::NoBoundary => Some("multipart/form-data".into()),
        ContentType::WrongBoundary => Some("multipart/form-data; boundary=not-the-one".into()),
        ContentType::Other(other) => Some(other.into()),
        ContentType::Missing => None,
    };
    (body, content_type)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// Posts one upload over a fresh connection, writing the body while reading the
/// answer (as curl does: a server may answer before it has read the whole body);
/// `Ok(Some(id))` if accepted, `Ok(None)` if refused properly.
async fn post(
    app: &TestApp,
    body: Vec<u8>,
    content_type: Option<String>,
) -> Result<Option<String>, String> {
    let mut head = format!(
        "POST /image/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port()))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut reader, mut writer) = stream.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(head.as_bytes()).await;
        let _ = writer.write_all(&body).await;
        writer
    });
    let mut received = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(20), reader.read_to_end(&mut received)).await;
    let _ = writing.await;
    if read.is_err() {
        return Err(format!(
            "no answer within 20 s; got {:?}",
            String::from_utf8_lossy(&received)
        ));
    }
    let text = String::from_utf8_lossy(&received).into_owned();
    let (status_line, rest) = text
        .split_once("\r\n")
        .ok_or_else(|| format!("no answer: {text:?}"))?;
    let status: u16 = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    let text = rest
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    let body: Value =
        serde_json::from_str(&text).map_err(|_| format!("{status}, not JSON: {text}"))?;
    match status {
        202 => body["id"]
            .as_str()
            .map(|id| Some(id.to_owned()))
            .ok_or_else(|| format!("202 without an id: {body}")),
        400..=499 => {
            let object = body
                .as_object()
                .filter(|o| !o.is_empty())
                .ok_or_else(|| format!("{status}, not the SPEC shape: {body}"))?;
            for list in object.values() {
                let list = list
                    .as_array()
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| format!("{status}, not the SPEC shape: {body}"))?;
                if !list
                    .iter()
                    .all(|m| m.as_str().is_some_and(|m| !m.is_empty()))
                {
                    return Err(format!("{status}, not the SPEC shape: {body}"));
                }
            }
            Ok(None)
        }
        _ => Err(format!("{status}: {body}")),
    }
}

/// Every submission listed by `GET /images`, all pages.
async fn listed(app: &TestApp) -> usize {
    let mut count = 0;
    let mut before = String::new();
    loop {
        let (status, page) = app
            .get_json(&format!("/images?limit=100&before={before}"))
            .await;
        assert_eq!(status, 200, "{page}");
        count += page["images"].as_array().map_or(0, Vec::len);
        match page["next_before"].as_str() {
            Some(next) => before = next.to_owned(),
            None => return count,
        }
    }
}

#[test]
fn fuzzed_uploads_get_202_or_a_4xx_and_accepted_jobs_finish() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = runtime.block_on(TestApp::start_with(|c| {
        c.workers = 1;
        c.max_upload_bytes = MAX_UPLOAD_BYTES;
        c.max_pixels = 2_000_000;
        c.max_input_side = 320;
        c.max_attempts = 2;
        c.retry_base_ms = 50;
        // Thousands of uploads from one address: the rate limiter is not under test.
        c.rate_limit_per_minute = 0;
    }));
    let seeds: Vec<Vec<u8>> = SEEDS.iter().map(|s| read(s)).collect();
    let accepted = RefCell::new(Vec::new());
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let result = runner.run(&upload(), |upload| {
        let (body, content_type) = build(&upload, &seeds);
        match runtime.block_on(post(&app, body, content_type)) {
            Ok(Some(id)) => accepted.borrow_mut().push(id),
            Ok(None) => {}
            Err(error) => return Err(TestCaseError::fail(error)),
        }
        Ok(())
    });
    let accepted = accepted.into_inner();
    eprintln!(
        "{} cases in {:.1?}, {} accepted",
        cases(),
        started.elapsed(),
        accepted.len()
    );
    if let Err(error) = result {
        panic!("{error}");
    }

    runtime.block_on(async {
        let mut outcomes = std::collections::HashMap::<String, usize>::new();
        for id in &accepted {
            let record = app.wait_processed(id).await;
            *outcomes
                .entry(record["status"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
        eprintln!(
            "accepted jobs finished {:.1?} after the start: {outcomes:?}",
            started.elapsed()
        );
        assert_eq!(
            listed(&app).await,
            accepted.len(),
            "only accepted uploads are stored"
        );
        let leftovers: Vec<_> = std::fs::read_dir(app.data_dir.join(".uploads"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            leftovers.is_empty(),
            "temporary uploads left behind: {leftovers:?}"
        );
        let response = app.http.get(app.url("/healthcheck")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "OK");
    });
}
