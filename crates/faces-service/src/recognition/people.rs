//! The people to recognise: subjects, their example faces, their names, and the
//! setting that says which photos get embeddings.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use faces_detect::Embedding;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::submission::FaceBox;

/// Which processed photos get an embedding per face (`--recognition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recognition {
    /// Every face of every photo: names and search for all of them.
    All,
    /// Only while at least one subject exists: no cost until someone is to be recognised.
    Subjects,
    /// None: faces get no names and are not searchable.
    Off,
}

impl Recognition {
    pub fn as_str(self) -> &'static str {
        match self {
            Recognition::All => "all",
            Recognition::Subjects => "subjects",
            Recognition::Off => "off",
        }
    }
}

impl FromStr for Recognition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "all" => Ok(Recognition::All),
            "subjects" => Ok(Recognition::Subjects),
            "off" => Ok(Recognition::Off),
            other => Err(format!(
                "unknown recognition {other:?}: use all, subjects or off"
            )),
        }
    }
}

/// A match distance: a number above 0 (`--match-distance`, a search's `distance`).
pub fn parse_distance(text: &str) -> Result<f32, String> {
    text.trim()
        .parse::<f32>()
        .ok()
        .filter(|d| d.is_finite() && *d > 0.0)
        .ok_or_else(|| format!("“{text}” is not a distance above 0, such as 0.6"))
}

/// The longest subject name, in characters.
pub const MAX_NAME_CHARS: usize = 200;

/// A subject's name as given, trimmed; `Err` with the sentence a client is answered.
pub fn valid_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("Enter a name.".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "Ensure this name has at most {MAX_NAME_CHARS} characters."
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("A name cannot contain control characters.".into());
    }
    Ok(name.to_owned())
}

/// What makes two names the same subject's: their lower case (`Anna` is `anna`).
pub fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// A person to recognise.
#[derive(Debug, Clone, PartialEq)]
pub struct Subject {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// How many example faces it has.
    pub examples: i64,
}

/// Where an example face came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// An example photo, kept in storage under this key.
    Photo(String),
    /// Face `face` of a stored submission (which retention may since have removed).
    Stored { submission: Uuid, face: i64 },
}

/// A face's box in whole pixels of the upright image it was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Rect {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

impl From<&FaceBox> for Rect {
    fn from(face: &FaceBox) -> Self {
        Rect {
            x: face.x,
            y: face.y,
            width: face.width,
            height: face.height,
        }
    }
}

impl Rect {
    /// The integer rectangle the embedding is computed from (dlib's convention:
    /// right and bottom edges inside), the same as the model's `FaceRect::of` gives
    /// for the face this box was rounded from.
    pub fn face_rect(self) -> faces_detect::FaceRect {
        faces_detect::FaceRect {
            left: self.x,
            top: self.y,
            right: self.x + self.width - 1,
            bottom: self.y + self.height - 1,
        }
    }
}

/// One example face of a subject.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub id: Uuid,
    pub subject_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub source: Source,
    pub rect: Rect,
    pub embedding: Embedding,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_names_parse() {
        assert_eq!("ALL".parse::<Recognition>(), Ok(Recognition::All));
        assert_eq!(
            " subjects".parse::<Recognition>(),
            Ok(Recognition::Subjects)
        );
        assert!("some".parse::<Recognition>().is_err());
        assert_eq!(valid_name("  Anna ").unwrap(), "Anna");
        assert_eq!(valid_name(" ").unwrap_err(), "Enter a name.");
        assert!(valid_name("a\u{7}b").is_err());
        assert!(valid_name(&"x".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(valid_name(&"x".repeat(MAX_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn a_box_becomes_dlibs_rectangle_with_edges_inside() {
        let rect = Rect {
            x: 10,
            y: 20,
            width: 30,
            height: 40,
        };
        let face = rect.face_rect();
        assert_eq!(
            (face.left, face.top, face.right, face.bottom),
            (10, 20, 39, 59)
        );
    }
}
