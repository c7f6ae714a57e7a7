//! What our subjects API and the peers' recognition endpoints share: an example
//! face from a photo (exactly one face in it) or from a stored face, and the
//! embedding of a stored face (computed now from its original if it was processed
//! while recognition was off). Each caller answers the refusals in its own shape.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use faces_detect::{guess_format, Embedding, FaceRect};
use uuid::Uuid;

use super::peers::detection::{self, Refusal};
use crate::db::SubjectError;
use crate::recognition::{Example, Recognition, Rect, Source};
use crate::state::AppState;
use crate::store::{example_key, StoreError};
use crate::submission::{FaceBox, Status};

/// Why an example photo was not added.
#[derive(Debug)]
pub enum PhotoRefused {
    /// The photo could not be detected (not an image, too large, the node busy).
    Photo(Refusal),
    /// It shows this many faces, not one.
    Faces(usize),
    Subject(SubjectError),
    Store(StoreError),
}

impl From<Refusal> for PhotoRefused {
    fn from(refusal: Refusal) -> Self {
        PhotoRefused::Photo(refusal)
    }
}

/// The sentence for a photo that does not show exactly one face.
pub fn face_count_message(found: usize) -> String {
    match found {
        0 => "No face was found in the photo; an example photo must show exactly one face.".into(),
        n => format!(
            "{n} faces were found in the photo; an example photo must show exactly one face."
        ),
    }
}

/// The faces of `photo` with their embeddings, detected now at `threshold` (on our
/// scale).
pub async fn faces_in(
    state: &Arc<AppState>,
    photo: Bytes,
    threshold: f32,
) -> Result<Vec<(FaceBox, Embedding)>, Refusal> {
    let found = detection::detect(state, photo, threshold, true).await?;
    Ok(found
        .faces
        .iter()
        .map(FaceBox::from)
        .zip(found.embeddings)
        .collect())
}

/// Adds `photo` as an example of `subject`: it must show exactly one face. The
/// photo is kept in storage (`examples/…`) before the example commits, and removed
/// again if it does not.
pub async fn add_photo(
    state: &Arc<AppState>,
    subject: Uuid,
    photo: Bytes,
) -> Result<Example, PhotoRefused> {
    let (face, embedding) = one_face(state, photo.clone(), state.config.score_threshold).await?;
    let (example, key) = photo_example(subject, &photo, &face, embedding);
    state
        .store
        .put(&key, photo)
        .await
        .map_err(PhotoRefused::Store)?;
    if let Err(error) = state.db.add_example(&example).await {
        remove_photos(state, vec![key]).await;
        return Err(PhotoRefused::Subject(error));
    }
    crate::refresh::examples_now(state).await;
    Ok(example)
}

/// The one face of `photo` (detected at `threshold`, on our scale) with its
/// embedding; `Faces` if it shows none or several.
pub async fn one_face(
    state: &Arc<AppState>,
    photo: Bytes,
    threshold: f32,
) -> Result<(FaceBox, Embedding), PhotoRefused> {
    let mut faces = faces_in(state, photo, threshold).await?;
    match faces.len() {
        1 => Ok(faces.remove(0)),
        n => Err(PhotoRefused::Faces(n)),
    }
}

/// An example of `subject` from `photo` and its face, and the key its photo goes under.
fn photo_example(
    subject: Uuid,
    photo: &[u8],
    face: &FaceBox,
    embedding: Embedding,
) -> (Example, String) {
    let extension = guess_format(photo)
        .ok()
        .and_then(|format| format.extensions_str().first().copied())
        .unwrap_or("img");
    let id = Uuid::new_v4();
    let key = example_key(id, extension);
    let example = Example {
        id,
        subject_id: subject,
        created_at: Utc::now(),
        source: Source::Photo(key.clone()),
        rect: Rect::from(face),
        embedding,
    };
    (example, key)
}

/// Adds `photos`, each with its one face, as examples of the subject called `name`
/// (in any case), creating it if there is none: the photos are stored first, then
/// the examples commit together, or none does and the photos are removed again.
/// Returns the examples and whether the subject was created.
pub async fn add_photos_named(
    state: &Arc<AppState>,
    name: &str,
    photos: Vec<(Bytes, FaceBox, Embedding)>,
) -> Result<(Vec<Example>, bool), PhotoRefused> {
    let mut examples = Vec::new();
    let mut keys = Vec::new();
    let mut stored = Ok(());
    for (photo, face, embedding) in photos {
        let (example, key) = photo_example(Uuid::nil(), &photo, &face, embedding);
        stored = state.store.put(&key, photo).await;
        if stored.is_err() {
            break;
        }
        examples.push(example);
        keys.push(key);
    }
    let added = match stored {
        Ok(()) => state
            .db
            .add_examples_named(name, &examples)
            .await
            .map_err(PhotoRefused::Subject),
        Err(error) => Err(PhotoRefused::Store(error)),
    };
    match added {
        Ok((subject, created)) => {
            crate::refresh::examples_now(state).await;
            let examples = examples
                .into_iter()
                .map(|example| Example {
                    subject_id: subject,
                    ..example
                })
                .collect();
            Ok((examples, created))
        }
        Err(refused) => {
            remove_photos(state, keys).await;
            Err(refused)
        }
    }
}

/// Deletes example photos whose rows are gone (or never committed); one that
/// fails is left to the sweep of leftovers.
pub async fn remove_photos(state: &AppState, keys: Vec<String>) {
    for key in keys {
        if let Err(error) = state.store.delete(&key).await {
            tracing::warn!(%key, %error, "could not remove an example photo");
        }
    }
}

/// Why a stored face could not be used.
#[derive(Debug)]
pub enum StoredRefused {
    /// No submission has this id.
    NoImage,
    /// It is not done yet (or failed).
    NotDone(Status),
    /// The face index is beyond its faces: how many it has.
    NoFace(usize),
    /// Its original is gone (removed by hand), and it has no stored embedding.
    OriginalGone,
    Photo(Refusal),
    Store(StoreError),
    Database(sqlx::Error),
}

/// Face `face` of stored submission `image`: its box and its embedding.
pub async fn stored_face(
    state: &Arc<AppState>,
    image: Uuid,
    face: usize,
) -> Result<(Rect, Embedding), StoredRefused> {
    let submission = state
        .db
        .submission(image)
        .await
        .map_err(StoredRefused::Database)?
        .ok_or(StoredRefused::NoImage)?;
    if submission.status != Status::Done {
        return Err(StoredRefused::NotDone(submission.status));
    }
    let faces = submission.faces.unwrap_or_default();
    let rect = Rect::from(faces.get(face).ok_or(StoredRefused::NoFace(faces.len()))?);
    if let Some(embedding) = state
        .db
        .face_embedding(image, face)
        .await
        .map_err(StoredRefused::Database)?
    {
        return Ok((rect, embedding));
    }
    // Processed without embeddings (recognition off, or before the first subject):
    // the original still holds the faces. Unless recognition is off, all of them are
    // embedded and kept, so this face is named from now on and the photo's faces are
    // found by searches.
    let original = match state.store.get(&submission.original_key).await {
        Ok(original) => original,
        Err(StoreError::NotFound(_)) => return Err(StoredRefused::OriginalGone),
        Err(error) => return Err(StoredRefused::Store(error)),
    };
    let rects: Vec<FaceRect> = faces.iter().map(|f| Rect::from(f).face_rect()).collect();
    let embeddings = detection::embed(state, original, rects)
        .await
        .map_err(StoredRefused::Photo)?;
    let embedding = *embeddings
        .get(face)
        .ok_or(StoredRefused::Photo(Refusal::Failed))?;
    let kept: Vec<(u32, Embedding)> = (0u32..).zip(embeddings).collect();
    if state.config.recognition == Recognition::Off {
        return Ok((rect, embedding));
    }
    state
        .db
        .keep_embeddings(image, &kept)
        .await
        .map_err(StoredRefused::Database)?;
    if !state.index.has_submission(image) {
        let created_at = submission.created_at.timestamp_micros();
        state.index.add_faces(image, created_at, &kept);
    }
    Ok((rect, embedding))
}

/// Adds face `face` of stored submission `image` as an example of `subject`.
pub async fn add_stored(
    state: &Arc<AppState>,
    subject: Uuid,
    image: Uuid,
    face: usize,
) -> Result<Example, StoredExampleRefused> {
    let (rect, embedding) = stored_face(state, image, face)
        .await
        .map_err(StoredExampleRefused::Face)?;
    let example = Example {
        id: Uuid::new_v4(),
        subject_id: subject,
        created_at: Utc::now(),
        source: Source::Stored {
            submission: image,
            face: face as i64,
        },
        rect,
        embedding,
    };
    state
        .db
        .add_example(&example)
        .await
        .map_err(StoredExampleRefused::Subject)?;
    crate::refresh::examples_now(state).await;
    Ok(example)
}

/// Why a stored face was not added as an example.
#[derive(Debug)]
pub enum StoredExampleRefused {
    Face(StoredRefused),
    Subject(SubjectError),
}
