//! Where originals and marked copies live. Keys are relative paths such as
//! `faces/72/46/<uuid>.jpg` ([`key`]); a back end maps them to files
//! ([`LocalStore`]) or to objects in an S3-compatible bucket ([`S3Store`]).
//!
//! This file is the front the rest of the service uses: [`Store`] picks the back
//! end. The back ends import only the leaves [`key`] and [`error`], never this file.

mod error;
mod key;
mod local;
mod s3;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

pub use crate::config::S3Config;
pub use error::StoreError;
pub use key::{example_key, original_key, processed_key, submission_of, Listed};
pub use local::LocalStore;
pub use s3::S3Store;

use crate::config::Config;

/// The configured back end.
#[derive(Debug, Clone)]
pub enum Store {
    Local(LocalStore),
    S3(S3Store),
}

impl Store {
    /// The back end `config` asks for: its S3 bucket, or else its data dir.
    pub async fn open(config: &Config) -> anyhow::Result<Store> {
        Ok(match config.s3() {
            Some(s3) => Store::S3(S3Store::new(&s3)?),
            None => Store::Local(LocalStore::open(&config.data_dir).await?),
        })
    }

    /// Every key under the folder `prefix` (`faces` or `faces/`: whole path
    /// segments, so `faces` lists `faces/…` but not `faces2/…`), at any depth,
    /// with when it was last written: what the sweep of leftovers reads, and tests.
    /// On the local back end folders that are missing or cannot be read are
    /// skipped, not errors, and the `.tmp` files of writes in progress are listed.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        match self {
            Store::Local(store) => store.list(prefix).await,
            Store::S3(store) => store.list(prefix).await,
        }
    }

    /// Moves a finished temporary file into place under `key`; the temporary file is gone afterwards.
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        match self {
            Store::Local(store) => store.put_file(key, file).await,
            Store::S3(store) => store.put_file(key, file).await,
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        match self {
            Store::Local(store) => store.put(key, data).await,
            Store::S3(store) => store.put(key, data).await,
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        match self {
            Store::Local(store) => store.get(key).await,
            Store::S3(store) => store.get(key).await,
        }
    }

    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(store) => store.copy(from, to).await,
            Store::S3(store) => store.copy(from, to).await,
        }
    }

    /// Removes a key; a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match self {
            Store::Local(store) => store.delete(key).await,
            Store::S3(store) => store.delete(key).await,
        }
    }

    /// Writes and removes a probe object: the readiness check.
    pub async fn check(&self) -> Result<(), StoreError> {
        let key = format!("readiness/{}", Uuid::new_v4().simple());
        self.put(&key, Bytes::from_static(b"ok")).await?;
        self.delete(&key).await
    }

    /// A time-limited URL a client can fetch `key` from directly, where the back end has one.
    pub async fn presigned_url(&self, key: &str, valid_for: Duration) -> Option<String> {
        match self {
            Store::Local(_) => None,
            Store::S3(store) => store.presigned_url(key, valid_for).await,
        }
    }
}
