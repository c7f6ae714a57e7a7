//! Starts the real service (SQLite file, local folder, real workers) on a free port
//! with a temporary data dir, and talks to it like a user would.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use faces_service::{App, Config, Role};
use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn data() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    assert!(
        dir.is_dir(),
        "shared test data not found at {}",
        dir.display()
    );
    dir
}

pub fn read(relative: &str) -> Vec<u8> {
    let path = data().join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct TestApp {
    pub app: Option<App>,
    pub base: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A configuration for tests: loopback, free port, its own data dir, fast retries.
pub fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::embedded_defaults();
    config.host = "127.0.0.1".parse().unwrap();
    config.port = free_port();
    config.public_url = format!("http://127.0.0.1:{}", config.port);
    config.data_dir = data_dir.to_path_buf();
    config.database_url = None;
    config.workers = 2;
    config.retry_base_ms = 100;
    config.job_lease_secs = 5;
    config
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(temp.path());
        adjust(&mut config);
        let mut app = Self::start_config(config, Role::Serve).await;
        app._temp = Some(temp);
        app
    }

    pub async fn start_config(config: Config, role: Role) -> TestApp {
        let base = config.public_url.clone();
        let data_dir = config.data_dir.clone();
        let app = App::start(config, role).await.expect("service starts");
        TestApp {
            app: Some(app),
            base,
            data_dir,
            _temp: None,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn feed(&self) -> Ws {
        let url = format!("{}/faces", self.base.replacen("http://", "ws://", 1));
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("feed connects");
        ws
    }

    /// Uploads `bytes` as `file_name` in multipart field `field`.
    pub async fn upload_as(&self, field: &str, bytes: Vec<u8>, file_name: &str) -> (u16, Value) {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
        let form = reqwest::multipart::Form::new().part(field.to_owned(), part);
        let response = self
            .http
            .post(self.url("/image/"))
            .header("Accept", "application/json")
            .multipart(form)
            .send()
            .await
            .expect("upload sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// Uploads a file of `../shared/data` under its own name; expects 202, returns the id.
    pub async fn upload(&self, relative: &str) -> String {
        let name = Path::new(relative)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (status, body) = self.upload_as("image", read(relative), &name).await;
        assert_eq!(status, 202, "{relative}: {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(self.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET /image/<id>` until `done` or `failed`.
    pub async fn wait_processed(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let (status, body) = self.get_json(&format!("/image/{id}")).await;
            assert_eq!(status, 200, "{body}");
            if body["status"] == "done" || body["status"] == "failed" {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} not processed in time: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Files under the data dir, except the database.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else if !path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("faces.db")
                {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.data_dir, &mut out);
        out
    }

    pub async fn stop(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

/// The next feed message as JSON, or `None` if none comes within `wait`.
pub async fn next_message(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .ok()??
            .ok()?;
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return Some(serde_json::from_str(text.as_str()).expect("feed message is JSON"));
        }
    }
}
