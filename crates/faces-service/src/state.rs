//! What the API handlers, the workers, the notifier and retention share. A leaf:
//! it imports the parts it holds and nothing that imports it, so the wiring in
//! [`crate::app`] is the only module that knows about all the others.

use std::sync::Arc;

use faces_detect::{Detector, Recognizer};
use tokio::sync::{broadcast, watch, Notify, OnceCell, Semaphore};
use uuid::Uuid;

use crate::admission::Admission;
use crate::client_address::{ClientAddress, UploadsInProgress};
use crate::config::Config;
use crate::db::Db;
use crate::feed::Feed;
use crate::metrics::Metrics;
use crate::recognition::Index;
use crate::store::Store;

/// What handlers and workers share.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub store: Store,
    /// Where uploads are streamed before they are validated (inside the data dir).
    pub uploads_dir: std::path::PathBuf,
    pub feed: Feed,
    pub metrics: Metrics,
    /// Signalled on each accepted upload so an idle worker starts at once.
    pub wake: Notify,
    pub shutdown: watch::Receiver<bool>,
    /// Permits for uploads streamed at once.
    pub uploads: Arc<Semaphore>,
    /// Uploads in progress by client address.
    pub uploads_in_progress: UploadsInProgress,
    /// Refuses uploads once the queue would take too long to drain.
    pub admission: Admission,
    /// How a request's client address is found (peer, or a trusted proxy's header).
    pub client_address: ClientAddress,
    /// Permits for images decoded and detected at once (CPU).
    pub decodes: Arc<Semaphore>,
    /// Memory for the photos being processed (see [`crate::budget`]).
    pub budget: crate::budget::MemoryBudget,
    /// The id of each submission that finished (done or failed), on any node:
    /// what `POST /image/?wait=N` waits on.
    pub finished: broadcast::Sender<Uuid>,
    /// The last event `seq` this node's feed has sent on; the relay holds it while
    /// it reads the outbox, so events go out once and in order.
    pub relayed: tokio::sync::Mutex<i64>,
    /// The detector this process's workers and the peers' endpoints share: one copy
    /// of the weights. Loaded at start when the process has workers, else on first use.
    pub detector: OnceCell<Arc<Detector>>,
    /// The face recognition model, shared as the detector is; loaded on first use.
    pub recognizer: OnceCell<Arc<Recognizer>>,
    /// What this node names and searches faces with (see [`crate::recognition`]).
    pub index: Index,
}

impl AppState {
    /// A fresh temporary file name for an upload in progress.
    pub fn upload_path(&self) -> std::path::PathBuf {
        self.uploads_dir
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The shared detector, loaded on first use (on a blocking thread); `None` if it
    /// fails to load, which is logged.
    pub async fn detector(&self) -> Option<Arc<Detector>> {
        let loaded = self
            .detector
            .get_or_try_init(|| async {
                let config = self.config.detector();
                let loaded = tokio::task::spawn_blocking(move || Detector::new(config)).await;
                match loaded
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                {
                    Ok(detector) => {
                        if let Some(fallback) = detector.engine_fallback() {
                            tracing::warn!("{fallback}");
                        }
                        tracing::debug!(engine = ?detector.engine(), "detector ready");
                        Ok(Arc::new(detector))
                    }
                    Err(error) => {
                        tracing::error!(%error, "the detector failed to load");
                        Err(())
                    }
                }
            })
            .await;
        loaded.ok().cloned()
    }

    /// The shared recognition model, loaded on first use (on a blocking thread);
    /// `None` if it fails to load, which is logged.
    pub async fn recognizer(&self) -> Option<Arc<Recognizer>> {
        let loaded = self
            .recognizer
            .get_or_try_init(|| async {
                let loaded = tokio::task::spawn_blocking(Recognizer::new).await;
                match loaded
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                {
                    Ok(recognizer) => Ok(Arc::new(recognizer)),
                    Err(error) => {
                        tracing::error!(%error, "the recognition model failed to load");
                        Err(())
                    }
                }
            })
            .await;
        loaded.ok().cloned()
    }
}
