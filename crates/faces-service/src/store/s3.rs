//! Objects in an S3-compatible bucket (AWS S3, Garage, MinIO, …) for scale-out nodes.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::buffered::BufWriter;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig};
use tokio::io::AsyncWriteExt;

use super::error::StoreError;
use super::key::Listed;
use crate::config::S3Config;

/// How long connecting to the object store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct S3Store {
    store: Arc<AmazonS3>,
    prefix: String,
}

impl S3Store {
    pub fn new(config: &S3Config) -> Result<Self, object_store::Error> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_virtual_hosted_style_request(config.virtual_hosted);
        // An unreachable store must fail a request in seconds (the upload answers
        // 503), not after object_store's default of retrying for three minutes.
        builder = builder
            .with_retry(RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
            })
            .with_client_options(ClientOptions::new().with_connect_timeout(CONNECT_TIMEOUT));
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(key) = &config.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &config.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        Ok(Self {
            store: Arc::new(builder.build()?),
            prefix: config.prefix.trim_matches('/').to_owned(),
        })
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn error(key: &str) -> impl Fn(object_store::Error) -> StoreError + '_ {
        move |source| match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound(key.to_owned()),
            source => StoreError::Object {
                key: key.to_owned(),
                source,
            },
        }
    }

    /// Uploads a file in parts (multipart above 10 MB), never holding it whole in memory.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            key: key.to_owned(),
            source,
        };
        let mut reader = tokio::fs::File::open(file).await.map_err(io)?;
        // 5 MB parts, two in flight: bounded memory however large the upload.
        let mut writer =
            BufWriter::with_capacity(self.store.clone(), self.path(key), 5 * 1024 * 1024)
                .with_max_concurrency(2);
        if let Err(source) = tokio::io::copy(&mut reader, &mut writer).await {
            let _ = writer.abort().await;
            return Err(io(source));
        }
        writer.shutdown().await.map_err(io)?;
        let _ = tokio::fs::remove_file(file).await;
        Ok(())
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        self.store
            .put(&self.path(key), PutPayload::from_bytes(data))
            .await
            .map_err(Self::error(key))?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let result = self
            .store
            .get(&self.path(key))
            .await
            .map_err(Self::error(key))?;
        result.bytes().await.map_err(Self::error(key))
    }

    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.store
            .copy(&self.path(from), &self.path(to))
            .await
            .map_err(Self::error(from))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.path(key)).await {
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(source) => Err(Self::error(key)(source)),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        use futures::TryStreamExt;
        let base = self.path(prefix.trim_end_matches('/'));
        let objects: Vec<_> = self
            .store
            .list(Some(&base))
            .try_collect()
            .await
            .map_err(Self::error(prefix))?;
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        Ok(objects
            .into_iter()
            .map(|o| Listed {
                key: o.location.as_ref()[strip..].to_owned(),
                modified: o.last_modified,
            })
            .collect())
    }

    pub async fn presigned_url(&self, key: &str, valid_for: Duration) -> Option<String> {
        self.store
            .signed_url(axum::http::Method::GET, &self.path(key), valid_for)
            .await
            .map(|url| url.to_string())
            .map_err(|error| tracing::warn!(%error, key, "could not presign"))
            .ok()
    }
}
