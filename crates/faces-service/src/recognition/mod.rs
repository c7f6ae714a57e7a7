//! Who is in a photo: subjects (a name and example faces), the setting that says
//! which photos get embeddings, and naming a face by its nearest example.
//!
//! Names are given when a face is read (`GET /image/<id>`, the feed, `?wait`), not
//! when it is processed: the stored embedding is compared with the examples as they
//! are now, so renaming, deleting or adding an example changes every answer from
//! then on, past photos included. [`index`] holds what each node compares with.
//! Pure: no database, no HTTP; `crate::refresh` keeps the index current. This
//! file only names the parts: [`people`] (subjects, examples, the setting),
//! [`index`] and [`naming`]; they import each other, never this file.

mod index;
mod naming;
mod people;

pub use index::{Examples, Index, Match, Nearest, StoredFace};
pub use naming::{name_faces, rounded, FaceView};
pub use people::{
    name_key, parse_distance, valid_name, Example, Recognition, Rect, Source, Subject,
    MAX_NAME_CHARS,
};
