//! Wiring: builds the shared [`AppState`], starts the HTTP server, workers, notifier
//! and retention, and stops them in order. Nothing imports this module but `lib.rs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::admission::Admission;
use crate::client_address::ClientAddress;
use crate::config::Config;
use crate::db::{Db, Dialect};
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::store::Store;
use crate::{api, leftovers, notify, refresh, retention, server, worker};

/// Finished ids kept for slow waiters; one that falls behind re-reads the database.
const FINISHED_BACKLOG: usize = 1024;
/// How long shutdown waits for in-flight jobs before leaving them to their lease.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long shutdown waits for open HTTP requests to end.
const HTTP_GRACE: Duration = Duration::from_secs(5);

/// What a process runs: `faces serve` is both unless told `--no-workers`; `faces worker` has no HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    Worker,
}

/// A running service: HTTP server (unless a worker-only node) plus workers.
pub struct App {
    /// Where the HTTP server listens (`None` on a worker-only node).
    pub addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    shutdown: watch::Sender<bool>,
    server: Option<JoinHandle<()>>,
    socket_io: Option<socketioxide::SocketIo>,
    workers: Vec<JoinHandle<()>>,
}

impl App {
    /// Opens storage and database (migrating it), binds the port and starts
    /// `config.workers` workers. Without `--public-url`, links name the bound port
    /// ([`Config::settle_public_url`]): with `config.port` 0 the one the system picked,
    /// which [`App::addr`] (and the `faces listening` log line) tells.
    pub async fn start(mut config: Config, role: Role) -> anyhow::Result<App> {
        let client_address = ClientAddress::new(config.trusted_proxy_header.as_deref())?;
        tokio::fs::create_dir_all(&config.data_dir)
            .await
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let store = Store::open(&config).await.context("opening storage")?;
        let uploads_dir = config.data_dir.join(".uploads");
        tokio::fs::create_dir_all(&uploads_dir)
            .await
            .context("creating the uploads dir")?;
        let db = Db::connect(&config.database_url())
            .await
            .context("opening database")?;
        sweep_leftovers(&config, &db, &store, &uploads_dir).await;
        let listener = match role {
            Role::Serve => Some(
                TcpListener::bind((config.host, config.port))
                    .await
                    .with_context(|| format!("binding {}:{}", config.host, config.port))?,
            ),
            Role::Worker => None,
        };
        let addr = listener.as_ref().map(TcpListener::local_addr).transpose()?;
        config.settle_public_url(addr.map_or(config.port, |addr| addr.port()));
        // Live clients get what commits from now on; older events are replayed on
        // request (`GET /faces?after=`).
        let relayed = db.last_event_seq().await.context("reading the outbox")?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = Arc::new(AppState {
            db,
            store,
            uploads_dir,
            feed: Feed::new(),
            metrics: Metrics::default(),
            wake: Notify::new(),
            shutdown: shutdown_rx.clone(),
            uploads: Arc::new(Semaphore::new(config.max_concurrent_uploads.max(1))),
            uploads_in_progress: Default::default(),
            admission: Admission::new(
                std::time::Duration::from_secs(config.max_backlog_secs),
                config.backlog_floor,
            ),
            client_address,
            decodes: Arc::new(Semaphore::new(config.max_concurrent_decodes.max(1))),
            budget: crate::budget::MemoryBudget::new(config.memory_budget),
            finished: tokio::sync::broadcast::channel(FINISHED_BACKLOG).0,
            relayed: tokio::sync::Mutex::new(relayed),
            detector: tokio::sync::OnceCell::new(),
            recognizer: tokio::sync::OnceCell::new(),
            index: Default::default(),
            config,
        });
        if state.db.dialect() == Dialect::Postgres {
            let events = role == Role::Serve;
            tokio::spawn(notify::listen(
                state.clone(),
                state.config.database_url(),
                events,
            ));
        }
        if role == Role::Serve {
            // Names from the first answer on; stored faces are searchable once read.
            refresh::examples_now(&state).await;
            let loading = state.clone();
            tokio::spawn(async move { refresh::load_faces(&loading).await });
            tokio::spawn(notify::relay_periodically(state.clone()));
        }
        let mut workers: Vec<JoinHandle<()>> = Vec::new();
        if state.config.workers > 0 {
            if let Some(detector) = worker::load_detector(&state).await {
                for n in 0..state.config.workers {
                    let run = worker::run(state.clone(), detector.clone(), n, shutdown_rx.clone());
                    workers.push(tokio::spawn(run));
                }
            }
        }
        if let Some(max_age) = state.config.retention {
            let every = state.config.retention_interval.max(Duration::from_secs(1));
            workers.push(tokio::spawn(retention::run(
                state.clone(),
                max_age,
                every,
                shutdown_rx.clone(),
            )));
        }
        tokio::spawn(state.metrics.clone().upkeep());
        let mut socket_io = None;
        let server = listener.map(|listener| {
            let (layer, io) = api::socketio::layer(&state.feed);
            tokio::spawn(api::socketio::relay(state.feed.clone(), io.clone()));
            socket_io = Some(io);
            let router = api::router(state.clone(), layer);
            let header_timeout = Duration::from_secs(state.config.header_timeout_secs.max(1));
            tokio::spawn(server::serve(
                listener,
                router,
                header_timeout,
                state.config.max_connections,
                shutdown_rx.clone(),
            ))
        });
        match addr {
            Some(addr) => tracing::info!(%addr, workers = state.config.workers, "faces listening"),
            None => tracing::info!(workers = state.config.workers, "faces worker running"),
        }
        Ok(App {
            addr,
            state,
            shutdown,
            server,
            socket_io,
            workers,
        })
    }

    /// Stops accepting, closes feed connections, lets workers finish the job in hand.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Some(io) = self.socket_io {
            io.close().await;
        }
        if let Some(mut server) = self.server {
            // A client holding a request open (a Socket.IO long poll) must not stall shutdown.
            if tokio::time::timeout(HTTP_GRACE, &mut server).await.is_err() {
                tracing::warn!("open HTTP requests at shutdown; closing them");
                // Dropping the accept loop aborts the connections it still holds.
                server.abort();
            }
        }
        let workers = futures::future::join_all(self.workers);
        if tokio::time::timeout(SHUTDOWN_GRACE, workers).await.is_err() {
            tracing::warn!("workers still busy at shutdown; their jobs return to the queue when the lease ends");
        }
        self.state.db.close().await;
        tracing::info!("faces stopped");
    }
}

/// Removes what an earlier run's crash left: before anything is served, so that
/// nothing of this run's is mistaken for it.
async fn sweep_leftovers(config: &Config, db: &Db, store: &Store, uploads_dir: &std::path::Path) {
    let local = matches!(store, Store::Local(_)).then_some(config.data_dir.as_path());
    let temporary = leftovers::remove_temporary(uploads_dir, local).await;
    // On SQLite this process is the only writer: every file from before it started
    // without a row is an orphan. On PostgreSQL another node may be mid-upload.
    let cutoff = match db.dialect() {
        Dialect::Sqlite => chrono::Utc::now(),
        Dialect::Postgres => chrono::Utc::now() - leftovers::ORPHAN_AGE,
    };
    let orphans = {
        let (db, store) = (db.clone(), store.clone());
        async move {
            match leftovers::remove_orphans(&db, &store, cutoff).await {
                Ok(0) => {}
                Ok(orphans) => tracing::info!(orphans, "removed files no submission names"),
                Err(error) => tracing::warn!(%error, "could not sweep orphaned files"),
            }
        }
    };
    // A local folder is walked at once; a bucket may be large, so it is listed
    // in the background.
    match store {
        Store::Local(_) => orphans.await,
        Store::S3(_) => drop(tokio::spawn(orphans)),
    }
    if temporary > 0 {
        tracing::info!(temporary, "removed temporary files a crash left behind");
    }
}

/// `faces serve` / `faces worker`: runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    let app = App::start(config, role).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
