//! Subjects and their example faces. Every change bumps `recognition.examples_version`
//! in its own transaction (and, on PostgreSQL, sends `NOTIFY faces_subjects` in it):
//! each node compares the version with its in-memory examples' and reads them again.

use chrono::Utc;
use faces_detect::Embedding;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use uuid::Uuid;

use super::connection::{
    embedding_from, from_micros, micros, parse_uuid, Db, Dialect, SUBJECTS_CHANNEL,
};
use crate::recognition::{name_key, Example, Rect, Source, Subject};

/// Why a subject could not be written.
#[derive(Debug)]
pub enum SubjectError {
    /// Another subject has this name.
    NameTaken,
    /// No such subject.
    NotFound,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for SubjectError {
    fn from(error: sqlx::Error) -> Self {
        if error
            .as_database_error()
            .is_some_and(|e| e.is_unique_violation())
        {
            SubjectError::NameTaken
        } else {
            SubjectError::Database(error)
        }
    }
}

const SUBJECT_COLUMNS: &str = "s.id, s.name, s.created_at, \
     (SELECT COUNT(*) FROM examples e WHERE e.subject_id = s.id) AS examples";
const EXAMPLE_COLUMNS: &str =
    "id, subject_id, created_at, submission_id, face_index, photo_key, x, y, width, height, embedding";

impl Db {
    /// Every subject, by name.
    pub async fn subjects(&self) -> sqlx::Result<Vec<Subject>> {
        let sql = format!("SELECT {SUBJECT_COLUMNS} FROM subjects s ORDER BY s.name, s.id");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter().map(subject_from_row).collect()
    }

    pub async fn subject(&self, id: Uuid) -> sqlx::Result<Option<Subject>> {
        let sql = format!("SELECT {SUBJECT_COLUMNS} FROM subjects s WHERE s.id = $1");
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(subject_from_row).transpose()
    }

    /// The subject called `name`, in any case.
    pub async fn subject_named(&self, name: &str) -> sqlx::Result<Option<Subject>> {
        let sql = format!("SELECT {SUBJECT_COLUMNS} FROM subjects s WHERE s.name_key = $1");
        let row = sqlx::query(&sql)
            .bind(name_key(name))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(subject_from_row).transpose()
    }

    /// Whether any subject exists (`--recognition subjects` asks before each photo).
    pub async fn any_subject(&self) -> sqlx::Result<bool> {
        let row = sqlx::query("SELECT id FROM subjects LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// A new subject named `name` (already valid).
    pub async fn create_subject(&self, name: &str) -> Result<Subject, SubjectError> {
        let subject = Subject {
            id: Uuid::new_v4(),
            name: name.to_owned(),
            created_at: Utc::now(),
            examples: 0,
        };
        let dialect = self.dialect;
        self.transaction(async |tx| {
            sqlx::query(
                "INSERT INTO subjects (id, name, name_key, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(subject.id.to_string())
            .bind(subject.name.clone())
            .bind(name_key(&subject.name))
            .bind(micros(subject.created_at))
            .execute(&mut *tx)
            .await?;
            changed(tx, dialect).await
        })
        .await?;
        Ok(subject)
    }

    /// Renames subject `id`; returns it as it is now.
    pub async fn rename_subject(&self, id: Uuid, name: &str) -> Result<Subject, SubjectError> {
        let dialect = self.dialect;
        let renamed = self
            .transaction(async |tx| {
                let updated =
                    sqlx::query("UPDATE subjects SET name = $1, name_key = $2 WHERE id = $3")
                        .bind(name.to_owned())
                        .bind(name_key(name))
                        .bind(id.to_string())
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                if updated == 1 {
                    changed(tx, dialect).await?;
                }
                Ok(updated == 1)
            })
            .await?;
        if !renamed {
            return Err(SubjectError::NotFound);
        }
        self.subject(id).await?.ok_or(SubjectError::NotFound)
    }

    /// Deletes subject `id` and its examples; returns the keys of their stored
    /// photos (for the caller to delete once this committed), `None` if there was no
    /// such subject.
    pub async fn delete_subject(&self, id: Uuid) -> sqlx::Result<Option<Vec<String>>> {
        let dialect = self.dialect;
        self.transaction(async |tx| {
            let keys: Vec<String> = sqlx::query(
                "SELECT photo_key FROM examples WHERE subject_id = $1 AND photo_key IS NOT NULL",
            )
            .bind(id.to_string())
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("photo_key"))
            .collect::<sqlx::Result<_>>()?;
            sqlx::query("DELETE FROM examples WHERE subject_id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            let deleted = sqlx::query("DELETE FROM subjects WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if deleted == 0 {
                return Ok(None);
            }
            changed(tx, dialect).await?;
            Ok(Some(keys))
        })
        .await
    }

    /// A subject's examples, oldest first.
    pub async fn examples_of(&self, subject: Uuid) -> sqlx::Result<Vec<Example>> {
        let sql = format!(
            "SELECT {EXAMPLE_COLUMNS} FROM examples WHERE subject_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(subject.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(example_from_row).collect()
    }

    /// Adds `example` to its subject; `NotFound` if the subject is gone.
    pub async fn add_example(&self, example: &Example) -> Result<(), SubjectError> {
        let dialect = self.dialect;
        let (submission, face, photo) = match &example.source {
            Source::Photo(key) => (None, None, Some(key.clone())),
            Source::Stored { submission, face } => {
                (Some(submission.to_string()), Some(*face), None)
            }
        };
        let added = self
            .transaction(async |tx| {
                let subject = sqlx::query("SELECT id FROM subjects WHERE id = $1")
                    .bind(example.subject_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                if subject.is_none() {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO examples (id, subject_id, created_at, submission_id, face_index, photo_key, \
                     x, y, width, height, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                )
                .bind(example.id.to_string())
                .bind(example.subject_id.to_string())
                .bind(micros(example.created_at))
                .bind(submission)
                .bind(face)
                .bind(photo)
                .bind(example.rect.x)
                .bind(example.rect.y)
                .bind(example.rect.width)
                .bind(example.rect.height)
                .bind(example.embedding.to_le_bytes().to_vec())
                .execute(&mut *tx)
                .await?;
                changed(tx, dialect).await?;
                Ok(true)
            })
            .await?;
        if added {
            Ok(())
        } else {
            Err(SubjectError::NotFound)
        }
    }

    /// Deletes example `id` of `subject`: `None` if there is none, else the key of
    /// its stored photo, if it has one (for the caller to delete after the commit).
    pub async fn delete_example(
        &self,
        subject: Uuid,
        id: Uuid,
    ) -> sqlx::Result<Option<Option<String>>> {
        let dialect = self.dialect;
        self.transaction(async |tx| {
            let row =
                sqlx::query("SELECT photo_key FROM examples WHERE id = $1 AND subject_id = $2")
                    .bind(id.to_string())
                    .bind(subject.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let key: Option<String> = row.try_get("photo_key")?;
            sqlx::query("DELETE FROM examples WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            changed(tx, dialect).await?;
            Ok(Some(key))
        })
        .await
    }

    /// The version of subjects and examples now.
    pub async fn examples_version(&self) -> sqlx::Result<i64> {
        sqlx::query("SELECT examples_version FROM recognition WHERE id = 1")
            .fetch_one(&self.pool)
            .await?
            .try_get("examples_version")
    }

    /// Every subject and every example's `(subject id, embedding)`, with the version
    /// they are at: read in one transaction, so they agree.
    #[allow(clippy::type_complexity)]
    pub async fn all_examples(&self) -> sqlx::Result<(i64, Vec<Subject>, Vec<(Uuid, Embedding)>)> {
        self.transaction(async |tx| {
            let version: i64 = sqlx::query("SELECT examples_version FROM recognition WHERE id = 1")
                .fetch_one(&mut *tx)
                .await?
                .try_get("examples_version")?;
            let sql = format!("SELECT {SUBJECT_COLUMNS} FROM subjects s ORDER BY s.name, s.id");
            let subjects = sqlx::query(&sql)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(subject_from_row)
                .collect::<sqlx::Result<_>>()?;
            let examples = sqlx::query("SELECT subject_id, embedding FROM examples")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| {
                    let subject = parse_uuid(&row.try_get::<String, _>("subject_id")?)?;
                    Ok((subject, embedding_from(row, "embedding")?))
                })
                .collect::<sqlx::Result<_>>()?;
            Ok((version, subjects, examples))
        })
        .await
    }

    /// Which of the example ids exist: the sweep of leftovers keeps their photos.
    pub async fn existing_examples(
        &self,
        ids: &[Uuid],
    ) -> sqlx::Result<std::collections::HashSet<Uuid>> {
        let mut existing = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT id FROM examples WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                existing.insert(parse_uuid(&row.try_get::<String, _>("id")?)?);
            }
        }
        Ok(existing)
    }
}

/// Records a change to subjects or examples in the transaction `tx`.
async fn changed(tx: &mut AnyConnection, dialect: Dialect) -> sqlx::Result<()> {
    sqlx::query("UPDATE recognition SET examples_version = examples_version + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await?;
    if dialect == Dialect::Postgres {
        // Delivered at commit, and only if it commits.
        sqlx::query("SELECT pg_notify($1, '')")
            .bind(SUBJECTS_CHANNEL)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

fn subject_from_row(row: &AnyRow) -> sqlx::Result<Subject> {
    Ok(Subject {
        id: parse_uuid(&row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        created_at: from_micros(row.try_get("created_at")?),
        examples: row.try_get("examples")?,
    })
}

fn example_from_row(row: &AnyRow) -> sqlx::Result<Example> {
    let photo: Option<String> = row.try_get("photo_key")?;
    let submission: Option<String> = row.try_get("submission_id")?;
    let face: Option<i64> = row.try_get("face_index")?;
    let source = match (photo, submission, face) {
        (Some(key), _, _) => Source::Photo(key),
        (None, Some(submission), Some(face)) => Source::Stored {
            submission: parse_uuid(&submission)?,
            face,
        },
        _ => return Err(sqlx::Error::Decode("an example with no source".into())),
    };
    Ok(Example {
        id: parse_uuid(&row.try_get::<String, _>("id")?)?,
        subject_id: parse_uuid(&row.try_get::<String, _>("subject_id")?)?,
        created_at: from_micros(row.try_get("created_at")?),
        source,
        rect: Rect {
            x: row.try_get("x")?,
            y: row.try_get("y")?,
            width: row.try_get("width")?,
            height: row.try_get("height")?,
        },
        embedding: embedding_from(row, "embedding")?,
    })
}
