//! Socket.IO (v4 clients) at `/socket.io/`, for clients written against a
//! Socket.IO feed rather than the WebSocket one: each successful detection is
//! emitted as `upload` with the processed image's URL path as its one argument.

use std::sync::{Arc, Mutex};

use socketioxide::extract::SocketRef;
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;
use tokio::sync::broadcast::error::RecvError;

use crate::feed::Feed;

/// The layer to put on the router, and the handle that emits. Socket.IO clients
/// count as feed clients while connected.
pub fn layer(feed: &Feed) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::new_layer();
    let feed = feed.clone();
    io.ns("/", async move |socket: SocketRef| {
        let connected = Arc::new(Mutex::new(Some(feed.count_client())));
        socket.on_disconnect(async move || {
            connected.lock().map(|mut guard| guard.take()).ok();
        });
    });
    (layer, io)
}

/// Relays feed events to Socket.IO clients until the feed closes.
pub async fn relay(feed: Feed, io: SocketIo) {
    let mut events = feed.receiver();
    loop {
        match events.recv().await {
            Ok(event) => {
                // `of`, not `emit`: once shutdown has closed the namespace, `emit`
                // panics, and a job finishing during shutdown still announces.
                let Some(namespace) = io.of("/") else {
                    return;
                };
                if let Err(error) = namespace.emit("upload", &*event.image_path).await {
                    tracing::debug!(%error, "socket.io emit failed");
                }
            }
            Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "socket.io relay fell behind"),
            Err(RecvError::Closed) => return,
        }
    }
}
