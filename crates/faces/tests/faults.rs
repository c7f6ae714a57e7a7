//! Storage and resource faults against the real `faces` binary (SQLite and a local
//! data dir): a full disk (a small tmpfs), a database locked by another process, a
//! server killed mid-upload, images too big for the decode memory budget, a part
//! header too long to buffer, a threshold of 0 capped by `--max-faces`, a feed
//! client asking for events that do not exist yet, `nosniff` on what is served, and
//! a SIGTERM while jobs finish. Each test asserts what a client or operator sees.
//!
//! The tests run one at a time: they measure memory, mount file systems and share
//! two CPU cores. The full-disk test needs root (it mounts a tmpfs) and fails,
//! never passes, without it.

use std::collections::HashSet;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

mod support;

use support::Process;

/// One test at a time: they measure RSS and compete for two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The 507 answer's sentence when the disk is full.
const DISK_FULL: &str = "There is no space left to store this upload. Please try again later.";
/// The WebSocket close code for `?after=` beyond the newest event.
const AFTER_BEYOND_NEWEST: u16 = 4409;

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// A file or folder of the shared test data.
fn shared(path: &str) -> PathBuf {
    faces_test_data::path(path)
}

/// The crowd photos of `throughput/`, in name order.
fn crowd_photos() -> Vec<PathBuf> {
    let mut photos: Vec<PathBuf> = std::fs::read_dir(shared("throughput"))
        .expect("shared/data/throughput")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    assert!(photos.len() >= 20, "crowd photos: {}", photos.len());
    photos
}

fn http_client() -> reqwest::Client {
    // A fresh connection per request: a server that answers 503/507 before reading
    // the body then closes that connection, and a pooled client could pick it up
    // again in the moment before it sees the close (a spurious IncompleteMessage).
    // The timeout is long enough for `?wait=60`; a hang still ends the test.
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(90))
        .build()
        .unwrap()
}

/// `faces serve --data-dir data` plus `extra`, on SQLite in the data dir and local
/// storage whatever the environment says, and without a rate limit (these tests are
/// about faults, not throttling). The data dir belongs to the test, so a test can
/// restart a server on the same one.
fn faces(data: &Path, extra: &[&str]) -> support::Faces {
    support::Faces::serve()
        .data_dir(data)
        .args(extra)
        .env("FACES_RATE_LIMIT_PER_MINUTE", "0")
        .env_remove("FACES_DATABASE_URL")
        .env_remove("FACES_S3_BUCKET")
}

/// What an upload was answered.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    /// The `id` of an accepted (202) or answered (200) upload.
    fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id: {self:?}"))
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `POST /image/{query}` with `bytes` as the multipart file field `image`.
async fn post_image(
    http: &reqwest::Client,
    base: &str,
    query: &str,
    bytes: Vec<u8>,
    name: &str,
) -> Answer {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_owned());
    let response = http
        .post(format!("{base}/image/{query}"))
        .header("Accept", "application/json")
        .multipart(reqwest::multipart::Form::new().part("image", part))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /image/{query} ({name}): {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    // A body that is not JSON is kept as text, for the failure message.
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        headers,
        body,
    }
}

/// Uploads the photo at `path` under its own file name.
async fn post_photo(http: &reqwest::Client, base: &str, query: &str, path: &Path) -> Answer {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    post_image(http, base, query, std::fs::read(path).unwrap(), &name).await
}

/// Asserts the upload error shape `{"image": ["sentence"]}` and returns the sentence.
fn image_error(answer: &Answer, context: &str) -> String {
    let object = answer
        .body
        .as_object()
        .unwrap_or_else(|| panic!("{context}: not a JSON object: {answer:?}"));
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["image"],
        "{context}: {answer:?}"
    );
    let messages = object["image"]
        .as_array()
        .unwrap_or_else(|| panic!("{context}: not a list: {answer:?}"));
    assert_eq!(messages.len(), 1, "{context}: {answer:?}");
    let message = messages[0]
        .as_str()
        .unwrap_or_else(|| panic!("{context}: not a sentence: {answer:?}"));
    assert!(!message.trim().is_empty(), "{context}: blank: {answer:?}");
    message.to_owned()
}

/// Asserts a `503` (or `507`) an upload may get while storage is failing: the image
/// error shape and a `Retry-After` header.
fn assert_retry_later(answer: &Answer, context: &str) -> String {
    let message = image_error(answer, context);
    assert!(
        answer.header("retry-after").is_some(),
        "{context}: no Retry-After: {answer:?}"
    );
    message
}

/// Uploads `path` until it is accepted, retrying a `503` or `507` for up to `within`.
async fn upload_until_accepted(
    http: &reqwest::Client,
    base: &str,
    path: &Path,
    within: Duration,
) -> String {
    let deadline = Instant::now() + within;
    loop {
        let answer = post_photo(http, base, "", path).await;
        match answer.status {
            202 => return answer.id(),
            503 | 507 if Instant::now() < deadline => {
                assert_retry_later(&answer, "an upload retried after the fault");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            _ => panic!("an upload after the fault ended: {answer:?}"),
        }
    }
}

/// Polls `GET /image/{id}` until `done`; panics on `failed`, on a 404 or any other
/// answer but 200 (a 503 is retried), or at `deadline`.
async fn wait_done(
    http: &reqwest::Client,
    server: &mut Process,
    id: &str,
    deadline: Instant,
) -> Value {
    loop {
        server.assert_alive();
        let response = http
            .get(server.url(&format!("/image/{id}")))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET /image/{id}: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        match status {
            200 => {
                let record: Value = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("GET /image/{id}: not JSON ({e}): {text}"));
                match record["status"].as_str() {
                    Some("done") => return record,
                    Some("queued" | "processing") => {}
                    _ => panic!("{id} did not get done: {record}"),
                }
            }
            503 => {}
            _ => panic!("GET /image/{id} of an accepted upload: {status} {text}"),
        }
        assert!(
            Instant::now() < deadline,
            "{id} was not done in time: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /readyz`: status and JSON body.
async fn readyz(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let response = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Asserts a `/readyz` body names both parts and that at least one is not `"ok"`.
fn assert_not_ready(body: &Value, context: &str) {
    let database = body["database"].as_str();
    let storage = body["storage"].as_str();
    assert!(
        database.is_some() && storage.is_some(),
        "{context}: /readyz names database and storage: {body}"
    );
    assert!(
        database != Some("ok") || storage != Some("ok"),
        "{context}: /readyz says all is ok: {body}"
    );
}

/// The ids `GET /images` lists (up to 100).
async fn listed_ids(http: &reqwest::Client, base: &str) -> HashSet<String> {
    let page = support::get_json(http, &format!("{base}/images?limit=100")).await;
    page["images"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /images: {page}"))
        .iter()
        .map(|image| image["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every file (not folder) under `dir`, recursively; none if it does not exist.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The next feed message about submission `id`, skipping others.
async fn event_for(feed: &mut mpsc::UnboundedReceiver<Value>, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let event = tokio::time::timeout_at(deadline, feed.recv())
            .await
            .unwrap_or_else(|_| panic!("no feed message for {id} within {within:?}"))
            .expect("the feed stays open");
        if event["id"] == id {
            return event;
        }
    }
}

/// A face's box as `[x, y, width, height]`.
fn face_box(face: &Value) -> [f64; 4] {
    ["x", "y", "width", "height"].map(|k| {
        face[k]
            .as_f64()
            .unwrap_or_else(|| panic!("face without {k}: {face}"))
    })
}

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let x = (a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0]);
    let y = (a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1]);
    let inter = x.max(0.0) * y.max(0.0);
    inter / (a[2] * a[3] + b[2] * b[3] - inter)
}

/// The `faces` list of a finished submission, an answer or a feed message.
fn faces_of(value: &Value) -> &Vec<Value> {
    value["faces"]
        .as_array()
        .unwrap_or_else(|| panic!("no faces list: {value}"))
}

/// A WebSocket feed client at `path`, reading frames itself (to see Close frames).
async fn ws_connect(
    base: &str,
    path: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    tokio_tungstenite::connect_async(&url)
        .await
        .unwrap_or_else(|e| panic!("the feed at {url} upgrades: {e}"))
        .0
}

// ---------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------

/// A tmpfs mounted on a temporary folder; unmounted (lazily) when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let outcome = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match outcome {
            Ok(output) if output.status.success() => Tmpfs { dir },
            other => panic!(
                "this test needs root to mount a tmpfs (mount -t tmpfs -o size={size}) \
                 and fill it; the mount was refused: {other:?}"
            ),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Appends to `filler` until its file system refuses with ENOSPC.
fn fill_up(filler: &mut std::fs::File) {
    let chunk = vec![0x5a_u8; 1 << 20];
    loop {
        match filler.write(&chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::StorageFull => return,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
}

/// Uploads on a full disk get 507 (never 500) and `/readyz` 503; once space is back
/// the same process accepts uploads again and finishes every accepted one, and a
/// restart finds them all done and nothing half-written left behind.
#[tokio::test]
async fn full_disk_gets_507_and_recovers_without_restart() {
    let _serial = SERIAL.lock().await;
    let disk = Tmpfs::mount("40m");
    let data = disk.path();
    let flags = [
        "--workers",
        "1",
        "--retry-base-ms",
        "200",
        "--job-lease-secs",
        "10",
    ];
    let mut server = faces(data, &flags).start().await;
    let http = http_client();
    let mut photos = crowd_photos().into_iter();
    let mut accepted = Vec::new();
    for photo in photos.by_ref().take(4) {
        let answer = post_photo(&http, server.base(), "", &photo).await;
        assert_eq!(answer.status, 202, "before the disk fills: {answer:?}");
        accepted.push(answer.id());
    }

    // At once, with those jobs queued or running: the disk fills up.
    let filler_path = data.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    fill_up(&mut filler);
    // What the jobs were doing meanwhile (printed: the test is about these too).
    let mut states = Vec::new();
    for id in &accepted {
        let record = support::get_json(&http, &server.url(&format!("/image/{id}"))).await;
        states.push(record["status"].as_str().unwrap_or("?").to_owned());
    }
    eprintln!("jobs when the disk filled: {states:?}");
    let batch: Vec<PathBuf> = photos.by_ref().take(6).collect();
    let answers = futures::future::join_all(
        batch
            .iter()
            .map(|photo| post_photo(&http, server.base(), "", photo)),
    )
    .await;
    let mut refused = 0;
    for answer in &answers {
        match answer.status {
            202 => accepted.push(answer.id()),
            507 => {
                refused += 1;
                let message = assert_retry_later(answer, "507 on a full disk");
                assert_eq!(message, DISK_FULL, "{answer:?}");
            }
            _ => panic!("an upload on a full disk: expected 202 or 507, got {answer:?}"),
        }
    }
    eprintln!(
        "on a full disk: {refused} of {} uploads got 507",
        answers.len()
    );
    assert!(refused >= 1, "no upload got 507 on a full disk");
    // Refused uploads free their temporary files: take that space too.
    fill_up(&mut filler);
    let (status, body) = readyz(&http, server.base()).await;
    eprintln!("/readyz on a full disk: {status} {body}");
    assert_eq!(status, 503, "/readyz on a full disk: {body}");
    assert_not_ready(&body, "a full disk");

    // Space comes back; the same process takes uploads again.
    drop(filler);
    std::fs::remove_file(&filler_path).unwrap();
    for photo in photos.by_ref().take(2) {
        accepted.push(
            upload_until_accepted(&http, server.base(), &photo, Duration::from_secs(10)).await,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &accepted {
        wait_done(&http, &mut server, id, deadline).await;
    }
    let status = server.stop().await.status;
    assert!(status.success(), "SIGTERM exit status: {status}");

    // A restart on the same data dir: all still done, nothing left over.
    server.restart().await;
    for id in &accepted {
        let record = support::get_json(&http, &server.url(&format!("/image/{id}"))).await;
        assert_eq!(record["status"], "done", "after the restart: {record}");
    }
    let files = files_under(data);
    let temporary: Vec<_> = files
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temporary.is_empty(), "temporary files left: {temporary:?}");
    let uploading = files_under(&data.join(".uploads"));
    assert!(
        uploading.is_empty(),
        ".uploads/ is not empty: {uploading:?}"
    );
    let listed = listed_ids(&http, server.base()).await;
    let originals = files_under(&data.join("faces"));
    for original in &originals {
        let stem = original.file_stem().unwrap().to_string_lossy();
        assert!(
            listed.contains(stem.as_ref()),
            "{} is not the original of a listed submission (listed: {listed:?})",
            original.display()
        );
    }
    for id in &accepted {
        assert!(
            originals
                .iter()
                .any(|p| p.file_stem().is_some_and(|s| s.to_string_lossy() == *id)),
            "the original of {id} is gone"
        );
    }
    drop(server);
}

// ---------------------------------------------------------------------------
// A locked database
// ---------------------------------------------------------------------------

/// Holds an exclusive lock on the SQLite file named by argv[1] for 10 s.
const LOCK_SQLITE: &str = r#"
import sqlite3, sys, time
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(10)
connection.execute("COMMIT")
"#;

/// While another process holds the SQLite file's write lock, uploads get 503 (never
/// 500) and `/readyz` says the database is not ok; afterwards all is well again.
#[tokio::test]
async fn locked_sqlite_gets_503_then_recovers() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let mut server = faces(temp.path(), &["--workers", "1", "--retry-base-ms", "200"])
        .start()
        .await;
    let http = http_client();
    let warm = post_photo(
        &http,
        server.base(),
        "?wait=30",
        &shared("known_counts/fr_obama.jpg"),
    )
    .await;
    assert_eq!(warm.status, 200, "warm-up: {warm:?}");
    assert_eq!(warm.body["status"], "done", "warm-up: {warm:?}");

    let database = temp.path().join("faces.db");
    assert!(database.exists(), "no {}", database.display());
    let mut locker = tokio::process::Command::new("python3")
        .args(["-c", LOCK_SQLITE])
        .arg(&database)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs");
    let mut lines = tokio::io::BufReader::new(locker.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("python locks the database within 30 s")
        .unwrap();
    assert_eq!(line.as_deref(), Some("locked"));
    let locked_at = Instant::now();

    let photos = crowd_photos();
    let uploads = futures::future::join_all(
        photos[..6]
            .iter()
            .map(|photo| post_photo(&http, server.base(), "", photo)),
    );
    let (answers, (ready_status, ready_body)) = tokio::join!(uploads, readyz(&http, server.base()));
    eprintln!(
        "during the lock ({:.1?} after it was taken): uploads {:?}, /readyz {ready_status} {ready_body}",
        locked_at.elapsed(),
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    let mut accepted = Vec::new();
    for answer in &answers {
        match answer.status {
            202 => accepted.push(answer.id()),
            503 => {
                assert_retry_later(answer, "503 while the database is locked");
            }
            _ => panic!(
                "an upload while the database is locked: expected 202 or 503, got {answer:?}"
            ),
        }
    }
    assert_eq!(ready_status, 503, "/readyz while locked: {ready_body}");
    assert!(
        ready_body["database"].is_string() && ready_body["database"] != "ok",
        "/readyz while locked names the database: {ready_body}"
    );

    let exit = tokio::time::timeout(Duration::from_secs(30), locker.wait())
        .await
        .expect("python ends its lock")
        .unwrap();
    assert!(exit.success(), "python: {exit}");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = readyz(&http, server.base()).await;
        if status == 200 {
            assert_eq!(
                body,
                serde_json::json!({"database": "ok", "storage": "ok"}),
                "/readyz 200"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 within 15 s of the lock's end: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = post_photo(&http, server.base(), "", &photos[6]).await;
    assert_eq!(after.status, 202, "after the lock: {after:?}");
    accepted.push(after.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &accepted {
        wait_done(&http, &mut server, id, deadline).await;
    }
}

// ---------------------------------------------------------------------------
// A crash mid-upload
// ---------------------------------------------------------------------------

/// `kill -9` while ten uploads stream in; the restart removes their temporary files
/// and what else a crash leaves behind (temp files of half-written objects, readiness
/// probes, an old original no submission owns), and lists no submission.
#[tokio::test]
async fn sigkill_mid_upload_leaves_no_temp_files() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path();
    // The stalled bodies must not time out before the kill.
    let flags = ["--workers", "1", "--body-timeout-secs", "300"];
    let mut server = faces(data, &flags).start().await;
    let http = reqwest::Client::new();
    let jpeg = std::fs::read(shared("edge/files/upscaled_4000x3000.jpg")).unwrap();
    let sent = &jpeg[..jpeg.len().min(1_000_000)];
    let boundary = "faultsboundary";
    let mut stalled = Vec::new();
    for n in 0..10 {
        let mut head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"slow{n}.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
        )
        .into_bytes();
        head.extend_from_slice(sent);
        // About 1 MB of the photo, then nothing, forever.
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(head))])
            .chain(futures::stream::pending());
        let request = http
            .post(server.url("/image/"))
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(reqwest::Body::wrap_stream(body));
        stalled.push(tokio::spawn(request.send()));
    }
    let uploads = data.join(".uploads");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let streaming = files_under(&uploads).len();
        if streaming >= 10 {
            break;
        }
        server.assert_alive();
        assert!(
            Instant::now() < deadline,
            "only {streaming} of 10 stalled uploads reached .uploads/"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    for upload in &stalled {
        upload.abort();
    }

    // What else a crash can leave: a half-written object, a readiness probe, and an
    // original whose submission was never written, an hour old.
    let half_written = data.join("processed_faces/ab/cd/.x.tmp");
    let probe = data.join("readiness/3f2a9c0e5d7b4e61a8c9d0e1f2a3b4c5");
    let orphan = data.join(format!("faces/ab/cd/{}.jpg", uuid::Uuid::new_v4()));
    for (path, bytes) in [
        (&half_written, &b"half"[..]),
        (&probe, &b""[..]),
        (&orphan, sent),
    ] {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let touched = Command::new("touch")
        .args(["-d", "1 hour ago"])
        .arg(&orphan)
        .status()
        .expect("touch runs");
    assert!(touched.success());

    server.restart().await;
    let left = files_under(&uploads);
    assert!(left.is_empty(), ".uploads/ after the restart: {left:?}");
    let listed = listed_ids(&http, server.base()).await;
    assert!(listed.is_empty(), "GET /images lists {listed:?}");
    for leftover in [&half_written, &probe, &orphan] {
        assert!(
            !leftover.exists(),
            "{} survived the restart",
            leftover.display()
        );
    }
}

// ---------------------------------------------------------------------------
// The decode memory budget
// ---------------------------------------------------------------------------

/// PNG colour types.
const RGB: u8 = 2;
const RGBA: u8 = 6;

/// A zlib stream of one fixed-Huffman deflate block that codes runs of a byte as
/// copies at distance 1: enough to compress uniform scanlines hundreds of times
/// without a compression crate. The Adler-32 of a run is computed in O(1), so a
/// gigabyte of pixels costs the (unoptimised) test well under a second per image.
struct Deflate {
    out: Vec<u8>,
    bits: u64,
    count: u32,
    last: Option<u8>,
    adler_a: u64,
    adler_b: u64,
}

/// Deflate's length codes 257..=285: base lengths and extra bits.
const LENGTH_BASE: [u32; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u32; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const ADLER_MOD: u64 = 65_521;

impl Deflate {
    fn new() -> Deflate {
        let mut deflate = Deflate {
            // zlib header: deflate, 32 KiB window, no dictionary.
            out: vec![0x78, 0x01],
            bits: 0,
            count: 0,
            last: None,
            adler_a: 1,
            adler_b: 0,
        };
        // BFINAL = 1, BTYPE = 01 (fixed Huffman codes).
        deflate.put_bits(1, 1);
        deflate.put_bits(1, 2);
        deflate
    }

    /// Appends `n` bits of `value`, least significant first.
    fn put_bits(&mut self, value: u32, n: u32) {
        self.bits |= u64::from(value) << self.count;
        self.count += n;
        while self.count >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.count -= 8;
        }
    }

    /// Appends a Huffman code, most significant bit first.
    fn put_code(&mut self, code: u32, length: u32) {
        self.put_bits(code.reverse_bits() >> (32 - length), length);
    }

    /// A literal/length symbol in the fixed code.
    fn symbol(&mut self, symbol: u32) {
        let (code, length) = match symbol {
            0..=143 => (0x30 + symbol, 8),
            144..=255 => (0x190 + symbol - 144, 9),
            256..=279 => (symbol - 256, 7),
            _ => (0xc0 + symbol - 280, 8),
        };
        self.put_code(code, length);
    }

    fn literals(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.symbol(u32::from(byte));
            self.last = Some(byte);
            self.adler_a = (self.adler_a + u64::from(byte)) % ADLER_MOD;
            self.adler_b = (self.adler_b + self.adler_a) % ADLER_MOD;
        }
    }

    /// `n` copies of `byte`.
    fn run(&mut self, byte: u8, mut n: u64) {
        if n == 0 {
            return;
        }
        if self.last != Some(byte) {
            self.literals(&[byte]);
            n -= 1;
        }
        // Adler-32 of n copies: a grows by n*byte, b by n*a0 + byte*n(n+1)/2.
        let v = u64::from(byte);
        self.adler_b =
            (self.adler_b + n % ADLER_MOD * self.adler_a + v * (n * (n + 1) / 2 % ADLER_MOD))
                % ADLER_MOD;
        self.adler_a = (self.adler_a + n % ADLER_MOD * v) % ADLER_MOD;
        while n > 0 {
            if n < 3 {
                self.symbol(u32::from(byte));
                n -= 1;
                continue;
            }
            let length = n.min(258) as u32;
            let index = LENGTH_BASE.iter().rposition(|&b| b <= length).unwrap();
            self.symbol(257 + index as u32);
            self.put_bits(length - LENGTH_BASE[index], LENGTH_EXTRA[index]);
            // Distance code 0 (distance 1): five zero bits.
            self.put_code(0, 5);
            n -= u64::from(length);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.symbol(256);
        if self.count > 0 {
            self.put_bits(0, 8 - self.count);
        }
        let adler = ((self.adler_b << 16) | self.adler_a) as u32;
        self.out.extend_from_slice(&adler.to_be_bytes());
        self.out
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (n, entry) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *entry = c;
    }
    let mut crc = !0u32;
    for &byte in data {
        crc = table[((crc ^ u32::from(byte)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

fn png_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// A `width`x`height` PNG every pixel of which is `pixel` (its bytes as stored: 8
/// for 16-bit RGBA, 3 for 8-bit RGB). The first row is Sub-filtered and the others
/// Up-filtered, so the scanlines are almost all zeros and compress to a few MB.
fn uniform_png(width: u32, height: u32, bit_depth: u8, colour_type: u8, pixel: &[u8]) -> Vec<u8> {
    let row = u64::from(width) * pixel.len() as u64;
    let mut deflate = Deflate::new();
    deflate.literals(&[1]);
    deflate.literals(pixel);
    deflate.run(0, row - pixel.len() as u64);
    for _ in 1..height {
        deflate.literals(&[2]);
        deflate.run(0, row);
    }
    let compressed = deflate.finish();
    let mut png = vec![0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];
    let mut header = Vec::new();
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[bit_depth, colour_type, 0, 0, 0]);
    png_chunk(&mut png, b"IHDR", &header);
    for part in compressed.chunks(1 << 20) {
        png_chunk(&mut png, b"IDAT", part);
    }
    png_chunk(&mut png, b"IEND", &[]);
    png
}

/// A 16-bit RGBA image whose decode alone would need more than the default 1 GiB
/// budget is refused with 413 at upload; two that each fit but together do not are
/// decoded one after the other, so the server's peak memory stays within the budget.
#[tokio::test]
async fn concurrent_16_bit_pngs_stay_inside_the_memory_budget() {
    let _serial = SERIAL.lock().await;
    // The generator itself, checked against the `image` crate on a small image.
    let pixel = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xff, 0xff];
    let small = image::load_from_memory(&uniform_png(37, 23, 16, RGBA, &pixel))
        .expect("the generated 16-bit PNG decodes")
        .to_rgba16();
    assert_eq!(small.dimensions(), (37, 23));
    assert!(small
        .pixels()
        .all(|p| p.0 == [0x1234, 0x5678, 0x9abc, 0xffff]));
    let small = image::load_from_memory(&uniform_png(41, 19, 8, RGB, &[1, 2, 3]))
        .expect("the generated 8-bit PNG decodes")
        .to_rgb8();
    assert!(small.pixels().all(|p| p.0 == [1, 2, 3]));
    let http = http_client();

    // (a) 9990 x 9990 x (8 + 3) bytes is over 1 GiB: refused before any decoding.
    let huge = uniform_png(
        9990,
        9990,
        16,
        RGBA,
        &[0x80, 0x00, 0x70, 0x00, 0x60, 0x00, 0xff, 0xff],
    );
    eprintln!("9990x9990 16-bit RGBA PNG: {} bytes", huge.len());
    {
        let temp = tempfile::tempdir().unwrap();
        let server = faces(temp.path(), &["--workers", "1"]).start().await;
        let answer = post_image(&http, server.base(), "", huge, "huge16.png").await;
        eprintln!("9990x9990 16-bit RGBA: {} {}", answer.status, answer.body);
        assert_eq!(answer.status, 413, "{answer:?}");
        let message = image_error(&answer, "over the memory budget");
        assert!(
            message.starts_with("Decoding this image needs"),
            "{message}"
        );
    }

    // (b) Two 6000 x 6000 16-bit RGBA images (about 380 MiB each to decode) under a
    // 600 MiB budget, uploaded at once to two workers.
    let temp = tempfile::tempdir().unwrap();
    let mut server = faces(
        temp.path(),
        &["--memory-budget", "600MiB", "--workers", "2"],
    )
    .start()
    .await;
    let warm = uniform_png(6000, 6000, 8, RGB, &[90, 120, 150]);
    let answer = post_image(&http, server.base(), "?wait=60", warm, "warm.png").await;
    assert_eq!(answer.status, 200, "warm-up: {answer:?}");
    assert_eq!(answer.body["status"], "done", "warm-up: {answer:?}");
    // Different colours: different bytes, so no result is reused as a duplicate.
    let first = uniform_png(
        6000,
        6000,
        16,
        RGBA,
        &[0x20, 0, 0x40, 0, 0x60, 0, 0xff, 0xff],
    );
    let second = uniform_png(
        6000,
        6000,
        16,
        RGBA,
        &[0xa0, 0, 0x90, 0, 0x80, 0, 0xff, 0xff],
    );
    eprintln!(
        "6000x6000 16-bit RGBA PNGs: {} and {} bytes",
        first.len(),
        second.len()
    );
    support::reset_peak_rss(server.pid());
    let baseline = support::rss_kib(server.pid());
    let (a, b) = tokio::join!(
        post_image(&http, server.base(), "", first, "first16.png"),
        post_image(&http, server.base(), "", second, "second16.png"),
    );
    assert_eq!(a.status, 202, "{a:?}");
    assert_eq!(b.status, 202, "{b:?}");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(75);
    for id in [a.id(), b.id()] {
        wait_done(&http, &mut server, &id, deadline).await;
    }
    let peak = support::peak_rss_kib(server.pid());
    let budget_kib = 600 * 1024;
    eprintln!(
        "server RSS: {baseline} KiB before, peak {peak} KiB while decoding both \
         ({} KiB over; budget {budget_kib} KiB; both done in {:.1?})",
        peak.saturating_sub(baseline),
        started.elapsed()
    );
    assert!(
        peak.saturating_sub(baseline) <= budget_kib,
        "peak RSS grew by {} KiB, over the {budget_kib} KiB budget",
        peak.saturating_sub(baseline)
    );
}

// ---------------------------------------------------------------------------
// A part header too long to buffer
// ---------------------------------------------------------------------------

/// Sends `head` and `body` on a fresh connection while reading the answer (the server
/// may answer and close before the body is all sent); returns status and body text.
async fn raw_post(port: u16, head: Vec<u8>, body: Vec<u8>) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let sender = tokio::spawn(async move {
        if writer.write_all(&head).await.is_err() {
            return;
        }
        for chunk in body.chunks(64 * 1024) {
            if writer.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut received = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
            Err(_) => panic!(
                "no complete answer within 30 s: {}",
                String::from_utf8_lossy(&received)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                received.extend_from_slice(&buffer[..n]);
                if support::response_complete(&received) {
                    break;
                }
            }
        }
    }
    sender.abort();
    assert!(
        !received.is_empty(),
        "the server closed the connection without an answer"
    );
    support::parse_response(&received).unwrap_or_else(|| {
        panic!(
            "not an HTTP answer: {:?}",
            String::from_utf8_lossy(&received)
        )
    })
}

/// A multipart part whose headers run to 16 MiB is refused with 400 once they pass
/// 8 KiB, and the server never holds them in memory.
#[tokio::test]
async fn huge_part_header_is_refused_without_buffering_it() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let server = faces(temp.path(), &["--workers", "1"]).start().await;
    let jpeg = std::fs::read(shared("known_counts/fr_obama.jpg")).unwrap();
    let mut body = b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\nX-Pad: ".to_vec();
    body.resize(body.len() + (16 << 20), b'a');
    body.extend_from_slice(b"\r\n\r\n");
    body.extend_from_slice(&jpeg);
    body.extend_from_slice(b"\r\n--B--\r\n");
    let head = format!(
        "POST /image/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\
         Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();

    support::reset_peak_rss(server.pid());
    let before = support::rss_kib(server.pid());
    let (status, text) = raw_post(server.port(), head, body).await;
    let peak = support::peak_rss_kib(server.pid());
    let after = support::rss_kib(server.pid());
    eprintln!(
        "16 MiB part header: {status} {text}; server RSS {before} KiB before, \
         {after} KiB after, peak {peak} KiB"
    );
    let answer = Answer {
        status,
        headers: Default::default(),
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    };
    assert_eq!(answer.status, 400, "{answer:?}");
    let message = image_error(&answer, "a 16 MiB part header");
    assert!(message.contains("headers"), "{message}");
    // Peak, not just after: a buffered header freed again would not show in RSS after.
    assert!(
        peak.saturating_sub(before) < 8 * 1024,
        "server RSS grew by {} KiB for a 16 MiB part header",
        peak.saturating_sub(before)
    );
    assert!(after.saturating_sub(before) < 8 * 1024);
}

// ---------------------------------------------------------------------------
// At most --max-faces faces
// ---------------------------------------------------------------------------

/// With `threshold=0` every candidate passes; `--max-faces 3` keeps the three best
/// in the answer and the feed message, and the best is the real face.
#[tokio::test]
async fn threshold_zero_keeps_at_most_max_faces() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let server = faces(temp.path(), &["--workers", "1", "--max-faces", "3"])
        .start()
        .await;
    let http = http_client();
    let mut feed = support::feed(server.base()).await;
    let photo = shared("known_counts/fr_obama.jpg");

    let all = post_photo(&http, server.base(), "?threshold=0&wait=60", &photo).await;
    assert_eq!(all.status, 200, "{all:?}");
    assert_eq!(all.body["status"], "done", "{all:?}");
    let kept = faces_of(&all.body);
    assert_eq!(
        kept.len(),
        3,
        "threshold=0 with --max-faces 3: {}",
        all.body
    );
    assert_eq!(all.body["faces_count"], 3, "{}", all.body);
    let event = event_for(&mut feed, &all.id(), Duration::from_secs(30)).await;
    assert_eq!(faces_of(&event).len(), 3, "feed message: {event}");
    assert_eq!(event["faces_count"], 3, "feed message: {event}");
    assert!(
        all.body["image_url"].is_string(),
        "a marked copy: {}",
        all.body
    );

    // Another threshold is another option set: detected afresh, not reused.
    let one = post_photo(&http, server.base(), "?wait=60", &photo).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.body["status"], "done", "{one:?}");
    let found = faces_of(&one.body);
    assert_eq!(
        found.len(),
        1,
        "fr_obama.jpg at the default threshold: {}",
        one.body
    );
    let best = kept
        .iter()
        .max_by(|a, b| {
            a["score"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["score"].as_f64().unwrap())
        })
        .unwrap();
    let overlap = iou(face_box(best), face_box(&found[0]));
    eprintln!(
        "best of threshold=0: {best}; default: {}; IoU {overlap:.3}",
        found[0]
    );
    assert!(overlap > 0.8, "IoU {overlap}: {best} vs {}", found[0]);
}

// ---------------------------------------------------------------------------
// The feed's ?after= beyond the newest event
// ---------------------------------------------------------------------------

/// The next Text or Close frame, skipping pings; `None` if none came within `within`.
async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    within: Duration,
) -> Option<Message> {
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(None) => panic!("the feed connection ended without a Close frame"),
            Ok(Some(Err(e))) => panic!("the feed connection failed: {e}"),
            Ok(Some(Ok(message @ (Message::Text(_) | Message::Close(_))))) => return Some(message),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A client asking for events after a `seq` that does not exist (a server whose
/// database was replaced) is told so with close code 4409; one at the newest `seq`
/// stays connected and gets the next event.
#[tokio::test]
async fn feed_after_beyond_the_newest_seq_is_closed_with_4409() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let server = faces(temp.path(), &["--workers", "1"]).start().await;
    let http = http_client();
    let mut feed = support::feed(server.base()).await;
    let done = post_photo(
        &http,
        server.base(),
        "?wait=60",
        &shared("known_counts/fr_obama.jpg"),
    )
    .await;
    assert_eq!(done.status, 200, "{done:?}");
    let event = event_for(&mut feed, &done.id(), Duration::from_secs(30)).await;
    let newest = event["seq"]
        .as_i64()
        .unwrap_or_else(|| panic!("no seq: {event}"));

    let mut beyond = ws_connect(server.base(), "/faces?after=1000000").await;
    match next_frame(&mut beyond, Duration::from_secs(5)).await {
        Some(Message::Close(Some(CloseFrame { code, reason }))) => {
            eprintln!("after=1000000 closed: {code} {reason:?}");
            assert_eq!(u16::from(code), AFTER_BEYOND_NEWEST, "reason {reason:?}");
            assert!(
                reason.contains(&newest.to_string()),
                "the reason names the newest seq {newest}: {reason:?}"
            );
        }
        other => {
            panic!("after=1000000: expected a Close frame with code 4409 within 5 s, got {other:?}")
        }
    }

    let mut current = ws_connect(server.base(), &format!("/faces?after={newest}")).await;
    if let Some(frame) = next_frame(&mut current, Duration::from_secs(1)).await {
        panic!("after={newest} (the newest) got {frame:?} instead of waiting");
    }
    let next = post_photo(
        &http,
        server.base(),
        "",
        &shared("known_counts/fr_biden.jpg"),
    )
    .await;
    assert_eq!(next.status, 202, "{next:?}");
    match next_frame(&mut current, Duration::from_secs(60)).await {
        Some(Message::Text(text)) => {
            let event: Value = serde_json::from_str(text.as_str()).expect("JSON event");
            assert_eq!(event["id"].as_str(), Some(next.id().as_str()), "{event}");
            assert!(
                event["seq"].as_i64().is_some_and(|seq| seq > newest),
                "{event}"
            );
        }
        other => panic!("after={newest}: expected the next event, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// nosniff
// ---------------------------------------------------------------------------

/// The page, an upload's answer and a marked copy all say `nosniff`, so a browser
/// never guesses another type for them.
#[tokio::test]
async fn served_files_carry_nosniff() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let server = faces(temp.path(), &["--workers", "1"]).start().await;
    let http = http_client();
    let nosniff = |headers: &reqwest::header::HeaderMap| {
        headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };

    let page = http.get(server.url("/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    assert_eq!(nosniff(page.headers()).as_deref(), Some("nosniff"), "GET /");

    let answer = post_photo(
        &http,
        server.base(),
        "?wait=60",
        &shared("known_counts/fr_obama.jpg"),
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("x-content-type-options"),
        Some("nosniff"),
        "the upload's answer"
    );
    let marked = answer.body["image_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no marked copy: {}", answer.body));
    let copy = http.get(marked).send().await.expect("GET the marked copy");
    assert_eq!(copy.status(), 200, "{marked}");
    assert_eq!(copy.headers()["content-type"], "image/jpeg", "{marked}");
    assert_eq!(
        nosniff(copy.headers()).as_deref(),
        Some("nosniff"),
        "{marked}"
    );
}

// ---------------------------------------------------------------------------
// SIGTERM
// ---------------------------------------------------------------------------

/// SIGTERM right after three uploads, one job running and two queued: the server
/// stops with status 0 and without a panic, whatever finishes meanwhile.
#[tokio::test]
async fn sigterm_while_jobs_finish_stops_cleanly() {
    let _serial = SERIAL.lock().await;
    let temp = tempfile::tempdir().unwrap();
    let flags = ["--workers", "1"];
    // Its stderr is collected from the start, so the server never blocks on a full pipe.
    let mut server = faces(temp.path(), &flags).capture_stderr().start().await;
    let http = http_client();
    for photo in crowd_photos().iter().take(3) {
        let answer = post_photo(&http, server.base(), "", photo).await;
        assert_eq!(answer.status, 202, "{answer:?}");
    }
    let stopped = server.stop().await;
    let (status, log) = (stopped.status, stopped.stderr.expect("stderr collected"));
    eprintln!("exit {status}; stderr:\n{log}");
    assert!(status.success(), "exit status {status}; stderr:\n{log}");
    assert!(!log.contains("panicked"), "a panic at shutdown:\n{log}");
}
