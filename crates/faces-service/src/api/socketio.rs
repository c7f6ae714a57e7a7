//! Socket.IO (v4 clients) at `/socket.io/`, for the second reference app's
//! clients: each successful detection is emitted as `upload` with the processed
//! image's URL path as its one argument.

use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;
use tokio::sync::broadcast::error::RecvError;

use crate::feed::Feed;

/// The layer to put on the router, and the handle that emits.
pub fn layer() -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::new_layer();
    io.ns("/", async || ());
    (layer, io)
}

/// Relays feed events to Socket.IO clients until the feed closes.
pub async fn relay(feed: Feed, io: SocketIo) {
    let (mut events, _guard) = feed.subscribe();
    loop {
        match events.recv().await {
            Ok(event) => {
                if let Err(error) = io.emit("upload", &*event.image_path).await {
                    tracing::debug!(%error, "socket.io emit failed");
                }
            }
            Err(RecvError::Lagged(missed)) => tracing::warn!(missed, "socket.io relay fell behind"),
            Err(RecvError::Closed) => return,
        }
    }
}
