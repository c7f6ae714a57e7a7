//! What a storage back end's failure says: which key, and what went wrong.

/// Storage errors carry the key they concern.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("object {0} not found")]
    NotFound(String),
    #[error("storage error on {key}: {source}")]
    Io { key: String, source: std::io::Error },
    #[error("object store error on {key}: {source}")]
    Object {
        key: String,
        source: object_store::Error,
    },
}
