//! Names the faces of submissions as they are read (`GET /image/<id>`, `GET
//! /images`, `?wait` answers, the feed): each stored embedding against this node's
//! examples as they are now (see [`crate::recognition`] for why at read time).

use std::collections::HashMap;
use std::sync::Arc;

use faces_detect::Embedding;
use uuid::Uuid;

use crate::recognition::{name_faces, Examples, FaceView};
use crate::state::AppState;
use crate::submission::Submission;

/// The embeddings of some submissions' faces and the examples to name them by.
pub struct Names {
    pub embeddings: HashMap<Uuid, Vec<(usize, Embedding)>>,
    examples: Arc<Examples>,
    within: f32,
}

impl Names {
    /// Reads the embeddings of `submissions` (those with faces).
    pub async fn read(state: &AppState, submissions: &[&Submission]) -> sqlx::Result<Names> {
        let ids: Vec<Uuid> = submissions
            .iter()
            .filter(|s| s.faces.as_ref().is_some_and(|f| !f.is_empty()))
            .map(|s| s.id)
            .collect();
        let embeddings = if ids.is_empty() {
            HashMap::new()
        } else {
            state.db.embeddings_of(&ids).await?
        };
        Ok(Names {
            embeddings,
            examples: state.index.examples(),
            within: state.config.match_distance,
        })
    }

    /// `submission`'s faces with `subject` and `distance`; `None` before it is done.
    pub fn faces(&self, submission: &Submission) -> Option<Vec<FaceView>> {
        let faces = submission.faces.clone()?;
        let embeddings = self
            .embeddings
            .get(&submission.id)
            .map_or(&[][..], Vec::as_slice);
        Some(name_faces(faces, embeddings, &self.examples, self.within))
    }
}
