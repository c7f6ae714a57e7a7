//! Shared by the tests and the benchmark that drive the real `faces` binary: the one
//! harness for its processes ([`Faces`] starts one, [`Process`] is one running) and
//! the HTTP, feed and memory helpers around them.
//!
//! A `faces serve` child is told `--host 127.0.0.1 --port 0`: it binds a free port
//! itself, and the harness learns which from the child's `faces listening
//! addr=<ip:port>` log line (its logs go to stdout). So no port is picked here and
//! taken by someone else before the child binds it. Without `--public-url` the
//! service links to the address it listens on, so `status_url` and `image_url` start
//! with [`Process::base`].
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// How long a child may take to log that it listens (or runs), and then to be ready.
const START_WITHIN: Duration = Duration::from_secs(60);
/// How long a child may take to exit after SIGTERM.
const STOP_WITHIN: Duration = Duration::from_secs(60);
/// Added to every child's log filter: the `faces listening` and `faces worker running`
/// lines of `faces_service::app` are logged at INFO.
const STARTUP_LOG: &str = "faces_service::app=info";

/// Which `faces` subcommand a child runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `faces serve`: HTTP (and workers unless told `--no-workers` or `--workers 0`).
    Serve,
    /// `faces worker`: workers only, no HTTP and no port.
    Worker,
}

/// How to start a `faces serve` or `faces worker` child: its data dir, extra flags,
/// environment, log filter and what becomes of its stderr. [`Faces::start`] starts it.
///
/// The child inherits the test's environment except `FACES_PUBLIC_URL` and what
/// [`Faces::env_remove`] names. Its stdout (its log) is forwarded to the test's
/// stderr; its stderr is inherited unless [`Faces::capture_stderr`].
#[derive(Debug, Clone)]
pub struct Faces {
    role: Role,
    data_dir: Option<PathBuf>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    log: String,
    capture_stderr: bool,
}

impl Faces {
    /// `faces serve --host 127.0.0.1 --port 0`, logging warnings.
    pub fn serve() -> Faces {
        Faces::new(Role::Serve)
    }

    /// `faces worker`, logging warnings.
    pub fn worker() -> Faces {
        Faces::new(Role::Worker)
    }

    fn new(role: Role) -> Faces {
        Faces {
            role,
            data_dir: None,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: vec!["FACES_PUBLIC_URL".into()],
            log: "warn".into(),
            capture_stderr: false,
        }
    }

    /// `--data-dir dir`, a folder the test owns (it may outlive the process). Without
    /// it the process gets a temporary one, removed when it is dropped.
    pub fn data_dir(mut self, dir: impl AsRef<Path>) -> Faces {
        self.data_dir = Some(dir.as_ref().to_owned());
        self
    }

    /// One more flag or value after the harness's own.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Faces {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More flags and values after the harness's own.
    pub fn args<I>(mut self, args: I) -> Faces
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// An environment variable of the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Faces {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Environment variables of the child.
    pub fn envs<I, K, V>(self, vars: I) -> Faces
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter()
            .fold(self, |faces, (key, value)| faces.env(key, value))
    }

    /// An environment variable of the test the child must not see.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Faces {
        self.env_remove.push(key.as_ref().to_owned());
        self
    }

    /// The child's `FACES_LOG` filter (tracing `EnvFilter` syntax; `warn` unless set).
    /// The harness adds `faces_service::app=info`, the lines it waits for.
    pub fn log(mut self, filter: &str) -> Faces {
        self.log = filter.to_owned();
        self
    }

    /// Collects the child's stderr (panics go there) instead of letting it through;
    /// [`Process::stop`] returns it.
    pub fn capture_stderr(mut self) -> Faces {
        self.capture_stderr = true;
        self
    }

    /// Starts the child and waits until it says it listens (a worker: that it runs);
    /// a `faces serve` child then until `GET /readyz` answers 200. Panics if the child
    /// exits first or takes longer than a minute.
    pub async fn start(self) -> Process {
        let (owned, data_dir) = match &self.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let temp = tempfile::tempdir().expect("a temporary data dir");
                let dir = temp.path().to_owned();
                (Some(temp), dir)
            }
        };
        let mut process = Process {
            started: Started::spawn(&self, &data_dir),
            faces: self,
            data_dir,
            _owned: owned,
        };
        process.wait_started().await;
        process
    }

    fn command(&self, data_dir: &Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_faces"));
        match self.role {
            Role::Serve => command.args(["serve", "--host", "127.0.0.1", "--port", "0"]),
            Role::Worker => command.arg("worker"),
        };
        command.arg("--data-dir").arg(data_dir).args(&self.args);
        for key in &self.env_remove {
            command.env_remove(key);
        }
        command.envs(self.env.iter().map(|(key, value)| (key, value)));
        command.env("FACES_LOG", format!("{},{STARTUP_LOG}", self.log));
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        command.stderr(if self.capture_stderr {
            Stdio::piped()
        } else {
            Stdio::inherit()
        });
        command
    }

    /// `faces serve [flags]` or `faces worker [flags]`, for messages.
    fn describe(&self) -> String {
        let role = match self.role {
            Role::Serve => "serve",
            Role::Worker => "worker",
        };
        let args: Vec<_> = self.args.iter().map(|a| a.to_string_lossy()).collect();
        format!("faces {role} {args:?}")
    }
}

/// `faces serve` on its defaults plus `extra` flags, its own data dir; ready.
pub async fn serve(extra: &[&str]) -> Process {
    Faces::serve().args(extra).start().await
}

/// A running `faces` child (or one that was stopped or killed, until restarted);
/// killed with SIGKILL when dropped. Its data dir stays until then, so it can be
/// restarted on it.
pub struct Process {
    faces: Faces,
    started: Started,
    data_dir: PathBuf,
    /// The data dir when the harness made it; removed after the child is killed.
    _owned: Option<tempfile::TempDir>,
}

/// One start of a child: the process and what the harness reads from it.
struct Started {
    child: Child,
    /// The address the child announced (`None` until then, and for a worker).
    addr: Option<SocketAddr>,
    /// `http://<addr>`.
    base: Option<String>,
    /// Sent the announced address (`None` for a worker) once the line comes; dropped
    /// unsent if stdout ends first.
    announced: Option<oneshot::Receiver<Option<SocketAddr>>>,
    /// The child's whole stderr, read from the start so that the pipe never fills.
    stderr: Option<JoinHandle<String>>,
}

impl Started {
    fn spawn(faces: &Faces, data_dir: &Path) -> Started {
        let mut child = faces
            .command(data_dir)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", faces.describe()));
        let (sender, announced) = oneshot::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        std::thread::spawn({
            let (role, pid) = (faces.role, child.id());
            move || forward_log(stdout, role, pid, sender)
        });
        let stderr = child.stderr.take().map(|mut stderr| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = stderr.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        });
        Started {
            child,
            addr: None,
            base: None,
            announced: Some(announced),
            stderr,
        }
    }
}

/// Reads the child's log until it ends: sends the address of its `faces listening`
/// line (a worker: `None` at `faces worker running`) and copies every line to the
/// test's stderr.
fn forward_log(
    stdout: impl Read,
    role: Role,
    pid: u32,
    sender: oneshot::Sender<Option<SocketAddr>>,
) {
    let mut sender = Some(sender);
    let mut reader = BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if sender.is_some() {
            let announced = match role {
                Role::Serve => listening_addr(text).map(Some),
                Role::Worker => text.contains("faces worker running").then_some(None),
            };
            if let Some(announced) = announced {
                let _ = sender.take().expect("not sent yet").send(announced);
            }
        }
        eprintln!("[faces {pid}] {text}");
    }
}

/// The `addr=` of a `faces listening` log line.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("faces listening") {
        return None;
    }
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("addr="))
        .and_then(|addr| addr.parse().ok())
}

/// How a stopped child ended.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// Its stderr, when [`Faces::capture_stderr`] asked for it.
    pub stderr: Option<String>,
}

impl Process {
    /// Waits for the start's announcement, then (`faces serve`) for readiness.
    async fn wait_started(&mut self) {
        let announced = self.started.announced.take().expect("a fresh start");
        let what = self.faces.describe();
        match tokio::time::timeout(START_WITHIN, announced).await {
            Ok(Ok(addr)) => {
                self.started.addr = addr;
                self.started.base = addr.map(|addr| format!("http://{addr}"));
            }
            Ok(Err(_)) => {
                // Its stdout ended without the line: it exited (or is exiting).
                let status = self.started.child.wait().expect("wait for the child");
                panic!(
                    "{what} exited at start: {status}{}",
                    self.take_stderr()
                        .map(|text| format!("; stderr:\n{text}"))
                        .unwrap_or_default()
                );
            }
            Err(_) => panic!("{what} did not log that it started within {START_WITHIN:?}"),
        }
        if self.faces.role == Role::Serve {
            self.wait_ready().await;
        }
    }

    /// Waits until `GET /readyz` answers 200; panics if the process exits first.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_WITHIN;
        let url = self.url("/readyz");
        loop {
            if let Some(status) = self.try_wait() {
                panic!("{} exited at start: {status}", self.faces.describe());
            }
            if let Ok(response) = reqwest::get(&url).await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "{url} did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Where the HTTP server listens (`127.0.0.1:<port>`). Panics for a worker.
    pub fn addr(&self) -> SocketAddr {
        self.started
            .addr
            .unwrap_or_else(|| panic!("{} has no HTTP address", self.faces.describe()))
    }

    /// The port the server bound.
    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `http://127.0.0.1:<port>`, also the base of the links the service gives.
    pub fn base(&self) -> &str {
        self.started
            .base
            .as_deref()
            .unwrap_or_else(|| panic!("{} has no HTTP address", self.faces.describe()))
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    pub fn pid(&self) -> u32 {
        self.started.child.id()
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.started.child.try_wait().expect("the child's status")
    }

    /// Panics if the process has exited.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!("the server died: {status}");
        }
    }

    /// `kill -TERM <pid>`, as an operator or a supervisor stops it; does not wait.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM {}: {status}", self.pid());
    }

    /// Waits for the process to exit; panics after `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not exit within {within:?} of SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then how it exited (within a minute) and its stderr if collected.
    pub async fn stop(&mut self) -> Stopped {
        self.sigterm();
        let status = self.wait_exit(STOP_WITHIN).await;
        Stopped {
            status,
            stderr: self.take_stderr(),
        }
    }

    /// `kill -9`: no chance to clean anything up. Waits for the exit.
    pub fn kill(&mut self) {
        self.started.child.kill().expect("SIGKILL");
        self.started.child.wait().expect("wait for the child");
    }

    /// Starts the same command again on the same data dir, once the process has
    /// exited ([`Process::stop`], [`Process::kill`]), and waits as [`Faces::start`]
    /// does. It binds a new port: [`Process::base`] changes.
    pub async fn restart(&mut self) {
        assert!(
            self.try_wait().is_some(),
            "restart of {}: it is still running; stop or kill it first",
            self.faces.describe()
        );
        self.started = Started::spawn(&self.faces, &self.data_dir);
        self.wait_started().await;
    }

    /// The child's stderr, once it has exited (its end closes the pipe).
    fn take_stderr(&mut self) -> Option<String> {
        self.started
            .stderr
            .take()
            .map(|reader| reader.join().expect("the stderr reader"))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.started.child.kill();
        let _ = self.started.child.wait();
    }
}

/// `GET url` as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// Peak resident set size of process `pid` so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:")
}

/// Resets the peak resident set size (VmHWM) of process `pid` to its current RSS
/// (`/proc/<pid>/clear_refs`, Linux 4.0+), so that a later [`peak_rss_kib`] measures
/// only what comes after.
pub fn reset_peak_rss(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .unwrap_or_else(|e| panic!("resetting the peak RSS of process {pid}: {e}"));
}

/// Resident set size of process `pid` now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} of process {pid}"))
}

/// The server's `/metrics` text.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Connects a feed client and forwards every message, as JSON, until the connection ends.
/// It reads in the background, so nothing waits unread in a socket if the server dies.
pub async fn feed(base: &str) -> mpsc::UnboundedReceiver<Value> {
    feed_at(base, "/faces").await
}

/// A feed client at `path` (e.g. `/faces?after=12`), its messages as JSON.
pub async fn feed_at(base: &str, path: &str) -> mpsc::UnboundedReceiver<Value> {
    let url = format!("{}{path}", base.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("feed connects");
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let event: Value =
                    serde_json::from_str(text.as_str()).expect("feed message is JSON");
                if sender.send(event).is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// The environment of a `faces` process on the PostgreSQL and S3 store that
/// `scripts/services/` started (`FACES_TEST_*`), with a fresh schema and key prefix
/// named `<prefix><uuid>` of its own, so that tests never see each other's data.
pub async fn scale_out_env(prefix: &str) -> Vec<(String, String)> {
    let database = std::env::var("FACES_TEST_DATABASE_URL")
        .expect("FACES_TEST_DATABASE_URL (run scripts/services/postgres.sh)");
    let var = |name: &str| {
        std::env::var(format!("FACES_TEST_S3_{name}"))
            .unwrap_or_else(|_| panic!("FACES_TEST_S3_{name} (run scripts/services/garage.sh)"))
    };
    let schema = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&database).await.unwrap();
    sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let separator = if database.contains('?') { '&' } else { '?' };
    vec![
        (
            "FACES_DATABASE_URL".into(),
            format!("{database}{separator}options=-c%20search_path%3D{schema}"),
        ),
        ("FACES_S3_BUCKET".into(), var("BUCKET")),
        ("FACES_S3_ENDPOINT".into(), var("ENDPOINT")),
        ("FACES_S3_REGION".into(), var("REGION")),
        ("FACES_S3_ACCESS_KEY_ID".into(), var("ACCESS_KEY_ID")),
        (
            "FACES_S3_SECRET_ACCESS_KEY".into(),
            var("SECRET_ACCESS_KEY"),
        ),
        ("FACES_S3_PREFIX".into(), schema),
    ]
}

/// The status and body of an HTTP/1.1 response read off a raw connection; `None`
/// where the bytes are not one.
pub fn parse_response(bytes: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(bytes);
    let status = text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Some((status, body))
}

/// Whether `bytes` hold a whole response with a `Content-Length` body.
pub fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|length| body.len() >= length)
}

/// `relative` in this checkout. Cargo sets CARGO_MANIFEST_DIR for the tests and
/// benchmarks it runs; the folder compiled in (`env!`) may be another checkout's whose
/// build the target folder reused.
pub fn repo_file(relative: &str) -> PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    crate_dir.join("../..").join(relative)
}
