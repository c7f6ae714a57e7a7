//! The embedded default: files in a local folder.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use uuid::Uuid;

use super::error::StoreError;
use super::key::Listed;

/// Files in a local folder. Writes go to a temporary file that is synced and then
/// renamed, so a key is either absent or complete, even after a power loss.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub async fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        // Keys are built by this crate, but refuse anything that could leave the root.
        let safe = !key.is_empty()
            && Path::new(key)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if safe {
            Ok(self.root.join(key))
        } else {
            Err(StoreError::NotFound(key.to_owned()))
        }
    }

    fn io(key: &str) -> impl Fn(std::io::Error) -> StoreError + '_ {
        move |source| {
            if source.kind() == ErrorKind::NotFound {
                StoreError::NotFound(key.to_owned())
            } else {
                StoreError::Io {
                    key: key.to_owned(),
                    source,
                }
            }
        }
    }

    /// Moves a finished temporary file into place under `key` (synced first).
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<(), StoreError> {
        let target = self.path(key)?;
        let io = Self::io(key);
        tokio::fs::File::open(file)
            .await
            .map_err(&io)?
            .sync_all()
            .await
            .map_err(&io)?;
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await.map_err(&io)?;
        }
        tokio::fs::rename(file, &target).await.map_err(&io)?;
        sync_dir(target.parent()).await;
        Ok(())
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        // The temporary file sits beside its target: same file system, so the rename is atomic.
        let target = self.path(key)?;
        let dir = target.parent().unwrap_or(&self.root);
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(Self::io(key))?;
        let temp = dir.join(format!(".{}.tmp", Uuid::new_v4().simple()));
        let mut result = tokio::fs::write(&temp, &data).await.map_err(Self::io(key));
        if result.is_ok() {
            result = self.put_file(key, &temp).await;
        }
        // A write cut short by a full disk leaves nothing half-written behind.
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        Ok(tokio::fs::read(path).await.map_err(Self::io(key))?.into())
    }

    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let data = self.get(from).await?;
        self.put(to, data).await
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let root = self.root.clone();
        let start = self.path(prefix.trim_end_matches('/'))?;
        let walk = move || {
            let mut keys = Vec::new();
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        dirs.push(path);
                    } else if let Ok(key) = path.strip_prefix(&root) {
                        let modified = entry
                            .metadata()
                            .and_then(|m| m.modified())
                            .unwrap_or_else(|_| std::time::SystemTime::now());
                        keys.push(Listed {
                            key: key.to_string_lossy().into_owned(),
                            modified: modified.into(),
                        });
                    }
                }
            }
            keys
        };
        tokio::task::spawn_blocking(walk)
            .await
            .map_err(|e| StoreError::Io {
                key: prefix.to_owned(),
                source: std::io::Error::other(e),
            })
    }

    /// Removes a key; a missing key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(Self::io(key)(e)),
            _ => Ok(()),
        }
    }
}

async fn sync_dir(dir: Option<&Path>) {
    if let Some(dir) = dir {
        if let Ok(handle) = tokio::fs::File::open(dir).await {
            let _ = handle.sync_all().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::key::{original_key, processed_key};

    #[test]
    fn keys_follow_the_documented_layout() {
        let id = Uuid::parse_str("7246f927-94a4-4225-9a56-b52bab894ad0").unwrap();
        assert_eq!(
            original_key(id, "png"),
            "faces/72/46/7246f927-94a4-4225-9a56-b52bab894ad0.png"
        );
        assert_eq!(
            processed_key(id),
            "processed_faces/72/46/7246f927-94a4-4225-9a56-b52bab894ad0.jpg"
        );
    }

    #[tokio::test]
    async fn put_get_delete_and_no_escape() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).await.unwrap();
        store
            .put("a/b/c.jpg", Bytes::from_static(b"xyz"))
            .await
            .unwrap();
        assert_eq!(
            store.get("a/b/c.jpg").await.unwrap(),
            Bytes::from_static(b"xyz")
        );
        store.delete("a/b/c.jpg").await.unwrap();
        assert!(matches!(
            store.get("a/b/c.jpg").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.get("../etc/passwd").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.get("/etc/passwd").await,
            Err(StoreError::NotFound(_))
        ));
    }
}
