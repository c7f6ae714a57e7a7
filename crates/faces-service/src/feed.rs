//! The live feed: every successful detection goes to every connected client.
//!
//! Events are serialised once and fanned out through a bounded broadcast channel.
//! Publishing never waits for a client: a client that falls more than
//! [`CLIENT_BUFFER`] events behind is disconnected (it can reload the gallery).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::recognition::FaceView;
use crate::submission::{timestamp, Submission};

/// Events a client may fall behind before it is dropped.
pub const CLIENT_BUFFER: usize = 1024;

/// The feed's message, one per photo in which faces were found, sent to every
/// client of `GET /faces`. Its fields come in this order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Detection {
    #[schema(example = "Successful face detection")]
    pub message: &'static str,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub processed_at: String,
    pub faces_count: usize,
    pub image_url: String,
    pub id: String,
    /// Each face's box, score and landmarks, then who it is (`subject`, `distance`).
    pub faces: Vec<FaceView>,
    /// The event's place in the feed, increasing across the deployment: reconnect
    /// with `GET /faces?after=<seq>` to get what came after it.
    pub seq: i64,
}

/// The feed message for outbox event `seq`, with `submission`'s `faces` named, and
/// the marked copy's URL path (`/static/processed_faces/…`): `None` unless
/// `submission` is done with a marked copy (faces were found). Used by the relay and
/// by `GET /faces?after=` replays.
pub fn detection(
    seq: i64,
    submission: &Submission,
    faces: Option<Vec<FaceView>>,
    public_url: &str,
) -> Option<(Detection, String)> {
    let key = submission.processed_key.as_ref()?;
    let faces = faces.unwrap_or_default();
    let image_path = format!("/static/{key}");
    Some((
        Detection {
            message: "Successful face detection",
            created_at: timestamp(submission.created_at),
            processed_at: timestamp(submission.processed_at?),
            faces_count: faces.len(),
            image_url: format!("{public_url}{image_path}"),
            id: submission.id.to_string(),
            faces,
            seq,
        },
        image_path,
    ))
}

/// One published event, as sent to WebSocket clients and to Socket.IO clients.
#[derive(Debug, Clone)]
pub struct Event {
    pub seq: i64,
    /// The JSON text of a [`Detection`].
    pub json: Arc<str>,
    /// The processed image's URL path (`/static/processed_faces/…`).
    pub image_path: Arc<str>,
}

impl Event {
    pub fn new(detection: &Detection, image_path: &str) -> Option<Self> {
        match serde_json::to_string(detection) {
            Ok(json) => Some(Event {
                seq: detection.seq,
                json: json.into(),
                image_path: image_path.into(),
            }),
            Err(error) => {
                tracing::error!(%error, "could not serialise detection");
                None
            }
        }
    }
}

#[derive(Clone)]
pub struct Feed {
    sender: broadcast::Sender<Event>,
    clients: Arc<AtomicUsize>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CLIENT_BUFFER);
        Self {
            sender,
            clients: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Sends to every client connected to this process.
    pub fn publish_local(&self, event: Event) {
        // An error only means nobody is listening.
        let _ = self.sender.send(event);
    }

    pub fn publish(&self, detection: &Detection, image_path: &str) {
        if let Some(event) = Event::new(detection, image_path) {
            self.publish_local(event);
        }
    }

    /// A new client's receiver; dropping the guard counts it out.
    pub fn subscribe(&self) -> (broadcast::Receiver<Event>, ClientGuard) {
        (self.sender.subscribe(), self.count_client())
    }

    /// Counts a client in until the guard is dropped.
    pub fn count_client(&self) -> ClientGuard {
        self.clients.fetch_add(1, Ordering::Relaxed);
        ClientGuard {
            clients: self.clients.clone(),
        }
    }

    /// A receiver that is not a client itself (the Socket.IO relay).
    pub fn receiver(&self) -> broadcast::Receiver<Event> {
        self.sender.subscribe()
    }

    pub fn connected_clients(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }
}

pub struct ClientGuard {
    clients: Arc<AtomicUsize>,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::Relaxed);
    }
}
