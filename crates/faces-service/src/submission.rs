//! The domain: a submission (one accepted upload) and the faces found in it.

use chrono::{DateTime, SecondsFormat, Utc};
use faces_detect::{Face, Mark, Mode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Where a submission is: `queued` (also while waiting to retry), `processing`, `done` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Processing,
    Done,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::Done => "done",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Status::Queued,
            "processing" => Status::Processing,
            "done" => Status::Done,
            "failed" => Status::Failed,
            _ => return None,
        })
    }
}

/// A face as the API shows it: whole pixels of the upright image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FaceBox {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
    pub score: f64,
    /// Right eye, left eye, nose, right and left mouth corner, as `[x, y]`.
    #[schema(value_type = Vec<Vec<i64>>)]
    pub landmarks: Vec<[i64; 2]>,
}

impl From<&Face> for FaceBox {
    fn from(face: &Face) -> Self {
        let px = |v: f32| v.round() as i64;
        FaceBox {
            x: px(face.x),
            y: px(face.y),
            width: px(face.width),
            height: px(face.height),
            score: (f64::from(face.score) * 10_000.0).round() / 10_000.0,
            landmarks: face
                .landmarks
                .iter()
                .map(|[x, y]| [px(*x), px(*y)])
                .collect(),
        }
    }
}

/// One accepted upload and, once processed, its result.
#[derive(Debug, Clone)]
pub struct Submission {
    pub id: Uuid,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub original_key: String,
    /// Marked copy; `None` until done, and for images without faces.
    pub processed_key: Option<String>,
    pub content_hash: String,
    pub byte_size: i64,
    pub width: Option<i64>,
    pub height: Option<i64>,
    pub faces: Option<Vec<FaceBox>>,
    /// The earlier submission with identical bytes whose result was reused.
    pub duplicate_of: Option<Uuid>,
    pub error: Option<String>,
    pub attempts: i64,
    pub options: Options,
    /// Bytes of memory processing it holds at its peak (see [`crate::budget`]);
    /// `None` for rows from before it was recorded.
    pub decode_bytes: Option<i64>,
}

/// How a submission is detected: the server's defaults or the request's own.
/// Part of the duplicate key: the same bytes with other options are detected afresh.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct Options {
    /// `fast` or `accurate`.
    #[schema(value_type = String, example = "fast")]
    pub mode: Mode,
    /// Minimum face score, 0-1, to four decimals.
    #[schema(example = 0.5)]
    pub threshold: f64,
    /// What the processed copy does to each face: `box`, `blur`, `pixelate` or `none`.
    #[schema(value_type = String, example = "box")]
    pub mark: Mark,
}

impl Options {
    pub fn new(mode: Mode, threshold: f64, mark: Mark) -> Self {
        Self {
            mode,
            threshold: (threshold * 10_000.0).round() / 10_000.0,
            mark,
        }
    }
}

/// What a worker found, ready to be recorded.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub processed_at: DateTime<Utc>,
    pub width: i64,
    pub height: i64,
    pub faces: Vec<FaceBox>,
    pub processed_key: Option<String>,
    pub duplicate_of: Option<Uuid>,
    /// `(face index, embedding)` of the faces that have one: all of them, or none
    /// when recognition is off (see [`crate::recognition::Recognition`]).
    pub embeddings: Vec<(u32, faces_detect::Embedding)>,
}

/// RFC 3339 in UTC with microseconds and `+00:00`, as the feed's clients expect.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_micros_and_utc_offset() {
        let t = DateTime::from_timestamp_micros(1_732_896_099_784_343).unwrap();
        assert_eq!(timestamp(t), "2024-11-29T16:01:39.784343+00:00");
    }
}
