//! Starts the real service (SQLite file, local folder, real workers) on a port it
//! picks itself (`port` 0: [`App::start`] binds it and says which) with a temporary
//! data dir, and talks to it like a user would.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faces_service::store::Store;
use faces_service::{App, Config, Role};
use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn data() -> PathBuf {
    faces_test_data::dir()
}

pub fn read(relative: &str) -> Vec<u8> {
    let path = data().join(relative);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct TestApp {
    pub app: Option<App>,
    /// The configuration it was started with (`port` 0).
    pub config: Config,
    /// Where it listens (`None` on a worker-only node).
    pub addr: Option<SocketAddr>,
    /// `http://<addr>`, also the base of the links it gives (`--public-url` is left
    /// unset, so the service uses the address it bound); empty on a worker-only node.
    pub base: String,
    pub data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

/// A configuration for tests: loopback, a port the service picks, links to where it
/// listens, its own data dir, fast retries.
///
/// By default the embedded back ends (SQLite file, local folder). With
/// `FACES_TEST_DATABASE_URL` (PostgreSQL) and `FACES_TEST_S3_*` (an S3-compatible
/// server) set, the same tests run on those, each app in its own schema and key prefix.
pub async fn test_config(data_dir: &Path) -> Config {
    let mut config = Config::embedded_defaults();
    config.host = "127.0.0.1".parse().unwrap();
    config.port = 0;
    config.public_url = None;
    config.data_dir = data_dir.to_path_buf();
    config.database_url = None;
    config.workers = 2;
    config.retry_base_ms = 100;
    config.job_lease_secs = 5;
    let isolation = format!("t{}", uuid::Uuid::new_v4().simple());
    if let Ok(url) = std::env::var("FACES_TEST_DATABASE_URL") {
        sqlx::any::install_default_drivers();
        let admin = sqlx::AnyPool::connect(&url)
            .await
            .expect("test PostgreSQL reachable");
        sqlx::raw_sql(&format!("CREATE SCHEMA {isolation}"))
            .execute(&admin)
            .await
            .expect("schema created");
        admin.close().await;
        let separator = if url.contains('?') { '&' } else { '?' };
        config.database_url = Some(format!(
            "{url}{separator}options=-c%20search_path%3D{isolation}"
        ));
    }
    if let Ok(bucket) = std::env::var("FACES_TEST_S3_BUCKET") {
        let var = |name: &str| std::env::var(format!("FACES_TEST_S3_{name}")).ok();
        config.s3_bucket = Some(bucket);
        config.s3_endpoint = var("ENDPOINT");
        config.s3_region = var("REGION").unwrap_or_else(|| "garage".into());
        config.s3_access_key_id = var("ACCESS_KEY_ID");
        config.s3_secret_access_key = var("SECRET_ACCESS_KEY");
        config.s3_prefix = isolation;
    }
    config
}

/// The same back ends as `config` (database, storage), its own port (and role).
pub fn sibling(config: &Config) -> Config {
    let mut config = config.clone();
    config.port = 0;
    config.public_url = None;
    config
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(temp.path()).await;
        adjust(&mut config);
        let mut app = Self::start_config(config, Role::Serve).await;
        app._temp = Some(temp);
        app
    }

    pub async fn start_config(config: Config, role: Role) -> TestApp {
        let data_dir = config.data_dir.clone();
        let app = App::start(config.clone(), role)
            .await
            .expect("service starts");
        let addr = app.addr;
        let base = addr
            .map(|addr| format!("http://{addr}"))
            .unwrap_or_default();
        TestApp {
            app: Some(app),
            config,
            addr,
            base,
            data_dir,
            _temp: None,
            http: reqwest::Client::new(),
        }
    }

    /// The port it bound.
    pub fn port(&self) -> u16 {
        self.addr.expect("a node that serves HTTP").port()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn feed(&self) -> Ws {
        self.feed_at("/faces").await
    }

    /// A feed client at `path` (e.g. `/faces?after=12`).
    pub async fn feed_at(&self, path: &str) -> Ws {
        let url = format!("{}{path}", self.base.replacen("http://", "ws://", 1));
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

    /// Uploads `bytes` as `file_name` to `POST /image/?{query}`, with extra text
    /// form fields; returns the status, the body and how long the answer took.
    pub async fn upload_with(
        &self,
        query: &str,
        fields: &[(&str, &str)],
        bytes: Vec<u8>,
        file_name: &str,
    ) -> (u16, Value, Duration) {
        let mut form = reqwest::multipart::Form::new();
        for (name, value) in fields {
            form = form.text(name.to_string(), value.to_string());
        }
        let part = reqwest::multipart::Part::bytes(bytes).file_name(file_name.to_owned());
        let started = std::time::Instant::now();
        let response = self
            .http
            .post(self.url(&format!("/image/?{query}")))
            .multipart(form.part("image", part))
            .send()
            .await
            .expect("upload sent");
        let status = response.status().as_u16();
        let body = response.json().await.expect("JSON body");
        (status, body, started.elapsed())
    }

    /// Uploads a file of the shared test data under its own name; expects 202, returns the id.
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

    /// Uploads streaming in now: the slots of `max_concurrent_uploads` taken.
    pub fn uploads_streaming(&self) -> usize {
        let state = &self.app.as_ref().expect("the app runs").state;
        state.config.max_concurrent_uploads.max(1) - state.uploads.available_permits()
    }

    /// Waits until `count` uploads are streaming in (each past the per-address and
    /// the node's limits, holding its slot); panics after [`DEADLINE`].
    pub async fn wait_uploads_streaming(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.uploads_streaming() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {count} uploads streaming",
                self.uploads_streaming()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The storage this app uses, opened independently (as an operator would).
    pub async fn store(&self) -> Store {
        Store::open(&self.config).await.expect("store opens")
    }

    /// Everything stored: originals, marked copies, and uploads in progress.
    pub async fn stored_files(&self) -> Vec<String> {
        let store = self.store().await;
        let mut keys = Vec::new();
        for prefix in ["faces", "processed_faces"] {
            let listed = store.list(prefix).await.expect("list");
            keys.extend(listed.into_iter().map(|listed| listed.key));
        }
        for entry in std::fs::read_dir(self.data_dir.join(".uploads"))
            .into_iter()
            .flatten()
            .flatten()
        {
            keys.push(entry.path().display().to_string());
        }
        keys
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
