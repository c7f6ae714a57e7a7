//! What one node compares faces with, in memory: the examples of every subject
//! (to name faces) and the embedding of every stored face (to search them). Both
//! are searched with the model's SIMD distances; `crate::refresh` loads them and
//! keeps them current.
//!
//! The examples are a snapshot replaced whole (they are few: read again on every
//! change). Stored faces are appended as their submissions reach the feed's outbox
//! and dropped as retention removes them; a search confirms its matches against the
//! database, so a face removed on another node never shows up.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use faces_detect::{distances, Embedding};
use uuid::Uuid;

use super::people::Subject;

/// Every example face, with its subject: replaced whole when anything changes.
#[derive(Debug, Default)]
pub struct Examples {
    /// The database's `examples_version` this snapshot was read at (-1 before the first).
    pub version: i64,
    pub subjects: Vec<Subject>,
    /// Per embedding, its subject's place in `subjects`.
    owners: Vec<usize>,
    embeddings: Vec<Embedding>,
}

/// The nearest example's subject and its distance.
#[derive(Debug, Clone, PartialEq)]
pub struct Nearest {
    pub subject_id: Uuid,
    pub name: String,
    pub distance: f32,
}

impl Examples {
    /// `subjects` with their example embeddings (`(subject id, embedding)`).
    pub fn new(version: i64, subjects: Vec<Subject>, examples: Vec<(Uuid, Embedding)>) -> Self {
        let (owners, embeddings) = examples
            .into_iter()
            .filter_map(|(subject, embedding)| {
                let owner = subjects.iter().position(|s| s.id == subject)?;
                Some((owner, embedding))
            })
            .unzip();
        Examples {
            version,
            subjects,
            owners,
            embeddings,
        }
    }

    /// How many example faces there are.
    pub fn len(&self) -> usize {
        self.embeddings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.embeddings.is_empty()
    }

    /// The nearest example within `within` (inclusive, as `compare_faces`), if any.
    pub fn nearest(&self, query: &Embedding, within: f32) -> Option<Nearest> {
        self.by_subject(query, within).into_iter().next()
    }

    /// Each subject with an example within `within`, by its nearest example, nearest first.
    pub fn by_subject(&self, query: &Embedding, within: f32) -> Vec<Nearest> {
        let mut found = Vec::new();
        distances(query, &self.embeddings, &mut found);
        let mut best: Vec<Option<f32>> = vec![None; self.subjects.len()];
        for (owner, distance) in self.owners.iter().zip(found) {
            if distance <= within && best[*owner].is_none_or(|b| distance < b) {
                best[*owner] = Some(distance);
            }
        }
        let mut ranked: Vec<Nearest> = best
            .into_iter()
            .enumerate()
            .filter_map(|(owner, distance)| {
                let subject = &self.subjects[owner];
                Some(Nearest {
                    subject_id: subject.id,
                    name: subject.name.clone(),
                    distance: distance?,
                })
            })
            .collect();
        ranked.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.name.cmp(&b.name)));
        ranked
    }
}

/// A stored face found by a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Match {
    pub submission: Uuid,
    /// The submission's `created_at` in microseconds.
    pub created_at: i64,
    pub face: u32,
    pub distance: f32,
}

/// One stored face's place in the index.
#[derive(Debug, Clone, Copy)]
pub struct StoredFace {
    pub submission: Uuid,
    pub created_at: i64,
    pub face: u32,
}

#[derive(Debug, Default)]
struct Faces {
    entries: Vec<StoredFace>,
    embeddings: Vec<Embedding>,
    /// The submissions whose faces are in: each goes in once.
    submissions: HashSet<Uuid>,
}

/// Both halves, shared by the API's handlers and the refresh.
#[derive(Debug)]
pub struct Index {
    examples: RwLock<Arc<Examples>>,
    faces: RwLock<Faces>,
    /// Whether every face stored before this node started has been read in.
    loaded: AtomicBool,
    /// The last `kept_embeddings` row read in (see [`crate::refresh::kept`]).
    kept_seen: AtomicI64,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            examples: RwLock::new(Arc::new(Examples {
                version: -1,
                ..Examples::default()
            })),
            faces: RwLock::new(Faces::default()),
            loaded: AtomicBool::new(false),
            kept_seen: AtomicI64::new(0),
        }
    }
}

impl Index {
    /// The examples as they are now.
    pub fn examples(&self) -> Arc<Examples> {
        match self.examples.read() {
            Ok(examples) => examples.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts a newer snapshot in place (an older one, read before a concurrent
    /// refresh finished, is dropped).
    pub fn replace_examples(&self, examples: Examples) {
        let mut current = match self.examples.write() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        if examples.version >= current.version {
            *current = Arc::new(examples);
        }
    }

    /// Adds one submission's faces (`(face index, embedding)`), unless it is in already.
    pub fn add_faces(&self, submission: Uuid, created_at: i64, faces: &[(u32, Embedding)]) {
        let mut index = self.faces_mut();
        if faces.is_empty() || !index.submissions.insert(submission) {
            return;
        }
        for (face, embedding) in faces {
            index.entries.push(StoredFace {
                submission,
                created_at,
                face: *face,
            });
            index.embeddings.push(*embedding);
        }
    }

    /// Drops the faces of `removed` submissions.
    pub fn forget(&self, removed: &HashSet<Uuid>) {
        let mut index = self.faces_mut();
        if !removed.iter().any(|id| index.submissions.contains(id)) {
            return;
        }
        let Faces {
            entries,
            embeddings,
            submissions,
        } = &mut *index;
        let mut keep = entries.iter().map(|e| !removed.contains(&e.submission));
        embeddings.retain(|_| keep.next().unwrap_or(true));
        entries.retain(|e| !removed.contains(&e.submission));
        submissions.retain(|id| !removed.contains(id));
    }

    /// Every face stored before this node started is in.
    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The last `kept_embeddings` row whose faces were read in.
    pub fn kept_seen(&self) -> i64 {
        self.kept_seen.load(Ordering::Acquire)
    }

    pub fn set_kept_seen(&self, seq: i64) {
        self.kept_seen.store(seq, Ordering::Release);
    }

    /// Stored faces in the index.
    pub fn faces_len(&self) -> usize {
        self.faces_read().entries.len()
    }

    /// Whether `submission`'s faces are in.
    pub fn has_submission(&self, submission: Uuid) -> bool {
        self.faces_read().submissions.contains(&submission)
    }

    /// Every stored face within `within` of `query`, newest submission first (then
    /// by face). CPU-bound on a large index: call from a blocking thread.
    pub fn search(&self, query: &Embedding, within: f32) -> Vec<Match> {
        let index = self.faces_read();
        let mut found = Vec::new();
        distances(query, &index.embeddings, &mut found);
        let mut matches: Vec<Match> = index
            .entries
            .iter()
            .zip(found)
            .filter(|(_, distance)| *distance <= within)
            .map(|(entry, distance)| Match {
                submission: entry.submission,
                created_at: entry.created_at,
                face: entry.face,
                distance,
            })
            .collect();
        drop(index);
        matches.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then(b.submission.cmp(&a.submission))
                .then(a.face.cmp(&b.face))
        });
        matches
    }

    fn faces_read(&self) -> std::sync::RwLockReadGuard<'_, Faces> {
        match self.faces.read() {
            Ok(faces) => faces,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn faces_mut(&self) -> std::sync::RwLockWriteGuard<'_, Faces> {
        match self.faces.write() {
            Ok(faces) => faces,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedding(value: f32) -> Embedding {
        let mut e = [0.0; faces_detect::EMBEDDING_LEN];
        e[0] = value;
        Embedding(e)
    }

    fn subject(name: &str) -> Subject {
        Subject {
            id: Uuid::new_v4(),
            name: name.into(),
            created_at: chrono::Utc::now(),
            examples: 1,
        }
    }

    #[test]
    fn the_nearest_example_within_the_distance_names_the_face() {
        let (anna, ben) = (subject("Anna"), subject("Ben"));
        let examples = Examples::new(
            3,
            vec![anna.clone(), ben.clone()],
            vec![
                (anna.id, embedding(0.0)),
                (ben.id, embedding(1.0)),
                (anna.id, embedding(0.9)),
            ],
        );
        let nearest = examples.nearest(&embedding(0.8), 0.6).unwrap();
        assert_eq!(nearest.name, "Anna");
        assert!((nearest.distance - 0.1).abs() < 1e-6);
        let ranked = examples.by_subject(&embedding(0.8), 0.6);
        assert_eq!(
            ranked.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
            ["Anna", "Ben"]
        );
        assert_eq!(examples.nearest(&embedding(3.0), 0.6), None);
        // Inclusive, as face_recognition.compare_faces.
        assert!(examples.nearest(&embedding(1.5), 0.5).is_some());
    }

    #[test]
    fn searches_find_stored_faces_newest_first_and_forget_removed_ones() {
        let index = Index::default();
        let (old, new) = (Uuid::new_v4(), Uuid::new_v4());
        index.add_faces(old, 1, &[(0, embedding(0.0)), (1, embedding(5.0))]);
        index.add_faces(new, 2, &[(0, embedding(0.2))]);
        index.add_faces(new, 2, &[(0, embedding(0.2))]);
        assert_eq!(index.faces_len(), 3, "a submission goes in once");
        let found = index.search(&embedding(0.1), 0.6);
        assert_eq!(
            found
                .iter()
                .map(|m| (m.submission, m.face))
                .collect::<Vec<_>>(),
            [(new, 0), (old, 0)]
        );
        index.forget(&HashSet::from([old]));
        assert_eq!(index.faces_len(), 1);
        assert!(!index.has_submission(old));
        let found = index.search(&embedding(0.1), 0.6);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].submission, new);
    }

    #[test]
    fn an_older_snapshot_does_not_replace_a_newer_one() {
        let index = Index::default();
        index.replace_examples(Examples::new(5, vec![], vec![]));
        index.replace_examples(Examples::new(4, vec![], vec![]));
        assert_eq!(index.examples().version, 5);
    }
}
