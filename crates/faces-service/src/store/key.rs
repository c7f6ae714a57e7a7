//! Where each file of a submission is stored: its key, a relative path such as
//! `faces/72/46/<uuid>.jpg` that every back end uses as is (a file under the data
//! dir, or an object under the bucket's prefix); and [`Listed`], a key as a
//! listing returns it.

use uuid::Uuid;

/// A stored key and when it was last written.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// The submission a key under `faces/` or `processed_faces/` belongs to (or the
/// example a key under `examples/` belongs to).
pub fn submission_of(key: &str) -> Option<Uuid> {
    let name = key.rsplit('/').next()?;
    Uuid::parse_str(name.split('.').next()?).ok()
}

/// Key of an upload's original: `faces/<aa>/<bb>/<uuid>.<ext>`.
pub fn original_key(id: Uuid, extension: &str) -> String {
    let hex = id.simple().to_string();
    format!("faces/{}/{}/{id}.{extension}", &hex[0..2], &hex[2..4])
}

/// Key of a marked copy: `processed_faces/<aa>/<bb>/<uuid>.jpg`.
pub fn processed_key(id: Uuid) -> String {
    let hex = id.simple().to_string();
    format!("processed_faces/{}/{}/{id}.jpg", &hex[0..2], &hex[2..4])
}

/// Key of a subject's example photo: `examples/<aa>/<bb>/<example uuid>.<ext>`.
pub fn example_key(id: Uuid, extension: &str) -> String {
    let hex = id.simple().to_string();
    format!("examples/{}/{}/{id}.{extension}", &hex[0..2], &hex[2..4])
}
