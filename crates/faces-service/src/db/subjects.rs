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
const EXAMPLE_COLUMNS_OF_E: &str =
    "e.id, e.subject_id, e.created_at, e.submission_id, e.face_index, \
     e.photo_key, e.x, e.y, e.width, e.height, e.embedding";

/// What a deletion of subjects or examples removed.
#[derive(Debug, Default)]
pub struct Removed {
    /// The subjects deleted, by name.
    pub subjects: Vec<String>,
    /// Examples removed.
    pub examples: i64,
    /// Their stored photos, for the caller to delete once the rows are gone.
    pub photo_keys: Vec<String>,
}

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
        let added = self
            .transaction(async |tx| {
                let subject = sqlx::query("SELECT id FROM subjects WHERE id = $1")
                    .bind(example.subject_id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                if subject.is_none() {
                    return Ok(false);
                }
                insert_example(tx, example, example.subject_id).await?;
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

    /// Adds `examples` to the subject called `name` (in any case), creating it if
    /// there is none, all in one transaction. Returns the subject's id and whether
    /// it was created.
    pub async fn add_examples_named(
        &self,
        name: &str,
        examples: &[Example],
    ) -> Result<(Uuid, bool), SubjectError> {
        let dialect = self.dialect;
        let added = self
            .transaction(async |tx| {
                let existing = sqlx::query("SELECT id FROM subjects WHERE name_key = $1")
                    .bind(name_key(name))
                    .fetch_optional(&mut *tx)
                    .await?;
                let (id, created) = match existing {
                    Some(row) => (parse_uuid(&row.try_get::<String, _>("id")?)?, false),
                    None => {
                        let id = Uuid::new_v4();
                        sqlx::query(
                            "INSERT INTO subjects (id, name, name_key, created_at) VALUES ($1, $2, $3, $4)",
                        )
                        .bind(id.to_string())
                        .bind(name.to_owned())
                        .bind(name_key(name))
                        .bind(micros(Utc::now()))
                        .execute(&mut *tx)
                        .await?;
                        (id, true)
                    }
                };
                for example in examples {
                    insert_example(tx, example, id).await?;
                }
                changed(tx, dialect).await?;
                Ok((id, created))
            })
            .await?;
        Ok(added)
    }

    /// Renames the subject called `old` to `new` (names in any case); if another
    /// subject is called `new`, `old`'s examples move to it and `old` goes (a merge,
    /// as CompreFace does). `NotFound` if no subject is called `old`.
    pub async fn rename_named(&self, old: &str, new: &str) -> Result<(), SubjectError> {
        let dialect = self.dialect;
        let renamed = self
            .transaction(async |tx| {
                let Some(from) = sqlx::query("SELECT id FROM subjects WHERE name_key = $1")
                    .bind(name_key(old))
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(false);
                };
                let from: String = from.try_get("id")?;
                let into = sqlx::query("SELECT id FROM subjects WHERE name_key = $1 AND id <> $2")
                    .bind(name_key(new))
                    .bind(from.clone())
                    .fetch_optional(&mut *tx)
                    .await?;
                match into {
                    Some(into) => {
                        let into: String = into.try_get("id")?;
                        sqlx::query("UPDATE examples SET subject_id = $1 WHERE subject_id = $2")
                            .bind(into)
                            .bind(from.clone())
                            .execute(&mut *tx)
                            .await?;
                        sqlx::query("DELETE FROM subjects WHERE id = $1")
                            .bind(from)
                            .execute(&mut *tx)
                            .await?;
                    }
                    None => {
                        sqlx::query("UPDATE subjects SET name = $1, name_key = $2 WHERE id = $3")
                            .bind(new.to_owned())
                            .bind(name_key(new))
                            .bind(from)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                changed(tx, dialect).await?;
                Ok(true)
            })
            .await?;
        if renamed {
            Ok(())
        } else {
            Err(SubjectError::NotFound)
        }
    }

    /// Deletes the subjects whose name is `name` in any case (`None`: every
    /// subject) and their examples. Returns the deleted subjects' names, the
    /// number of examples removed, and the keys of their stored photos (for the
    /// caller to delete once this committed).
    pub async fn delete_subjects_named(&self, name: Option<&str>) -> sqlx::Result<Removed> {
        let filter = if name.is_some() {
            "WHERE name_key = $1"
        } else {
            ""
        };
        let key = name.map(name_key);
        let dialect = self.dialect;
        self.transaction(async |tx| {
            let select_subjects = format!("SELECT id, name FROM subjects {filter}");
            let mut query = sqlx::query(&select_subjects);
            if let Some(key) = &key {
                query = query.bind(key.clone());
            }
            let subjects = query.fetch_all(&mut *tx).await?;
            let mut removed = Removed::default();
            for row in &subjects {
                let id: String = row.try_get("id")?;
                removed.subjects.push(row.try_get("name")?);
                let (count, keys) = delete_examples_of(tx, &id).await?;
                removed.examples += count;
                removed.photo_keys.extend(keys);
                sqlx::query("DELETE FROM subjects WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            if !subjects.is_empty() {
                changed(tx, dialect).await?;
            }
            Ok(removed)
        })
        .await
    }

    /// Deletes every example of every subject (the subjects stay).
    pub async fn delete_all_examples(&self) -> sqlx::Result<Removed> {
        let dialect = self.dialect;
        self.transaction(async |tx| {
            let keys: Vec<String> =
                sqlx::query("SELECT photo_key FROM examples WHERE photo_key IS NOT NULL")
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .map(|row| row.try_get("photo_key"))
                    .collect::<sqlx::Result<_>>()?;
            let examples = sqlx::query("DELETE FROM examples")
                .execute(&mut *tx)
                .await?
                .rows_affected() as i64;
            if examples > 0 {
                changed(tx, dialect).await?;
            }
            Ok(Removed {
                subjects: Vec::new(),
                examples,
                photo_keys: keys,
            })
        })
        .await
    }

    /// Example `id` (of any subject) and its subject's name.
    pub async fn example(&self, id: Uuid) -> sqlx::Result<Option<(Example, String)>> {
        let sql = format!(
            "SELECT {}, s.name AS subject_name FROM examples e JOIN subjects s ON s.id = e.subject_id WHERE e.id = $1",
            EXAMPLE_COLUMNS_OF_E
        );
        let row = sqlx::query(&sql)
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| Ok((example_from_row(&row)?, row.try_get("subject_name")?)))
            .transpose()
    }

    /// A page of examples, oldest first, with their subjects' names: of the subject
    /// called `subject` (any case), or of all. Also returns how many there are in all.
    pub async fn examples_page(
        &self,
        subject: Option<&str>,
        offset: i64,
        limit: i64,
    ) -> sqlx::Result<(Vec<(Uuid, String)>, i64)> {
        let filter = if subject.is_some() {
            "WHERE s.name_key = $1"
        } else {
            ""
        };
        let (at, next) = if subject.is_some() { (2, 3) } else { (1, 2) };
        let key = subject.map(name_key);
        let count_sql = format!(
            "SELECT COUNT(*) AS n FROM examples e JOIN subjects s ON s.id = e.subject_id {filter}"
        );
        let page_sql = format!(
            "SELECT e.id, s.name FROM examples e JOIN subjects s ON s.id = e.subject_id {filter} \
             ORDER BY e.created_at, e.id LIMIT ${at} OFFSET ${next}"
        );
        let mut count = sqlx::query(&count_sql);
        let mut page = sqlx::query(&page_sql);
        if let Some(key) = &key {
            count = count.bind(key.clone());
            page = page.bind(key.clone());
        }
        let total: i64 = count.fetch_one(&self.pool).await?.try_get("n")?;
        let rows = page.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let examples = rows
            .iter()
            .map(|row| {
                Ok((
                    parse_uuid(&row.try_get::<String, _>("id")?)?,
                    row.try_get("name")?,
                ))
            })
            .collect::<sqlx::Result<_>>()?;
        Ok((examples, total))
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

    /// Deletes example `id` of whichever subject: `None` if there is none, else
    /// its subject's name and the key of its stored photo, if it has one.
    pub async fn delete_example_by_id(
        &self,
        id: Uuid,
    ) -> sqlx::Result<Option<(String, Option<String>)>> {
        let dialect = self.dialect;
        self.transaction(async |tx| {
            let row = sqlx::query(
                "SELECT e.photo_key, s.name FROM examples e JOIN subjects s ON s.id = e.subject_id WHERE e.id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            sqlx::query("DELETE FROM examples WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            changed(tx, dialect).await?;
            Ok(Some((row.try_get("name")?, row.try_get("photo_key")?)))
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
        self.existing_ids("examples", ids).await
    }
}

/// Inserts `example` as one of subject `subject`'s in the transaction `tx`.
async fn insert_example(
    tx: &mut AnyConnection,
    example: &Example,
    subject: Uuid,
) -> sqlx::Result<()> {
    let (submission, face, photo) = match &example.source {
        Source::Photo(key) => (None, None, Some(key.clone())),
        Source::Stored { submission, face } => (Some(submission.to_string()), Some(*face), None),
    };
    sqlx::query(
        "INSERT INTO examples (id, subject_id, created_at, submission_id, face_index, photo_key, \
         x, y, width, height, embedding) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(example.id.to_string())
    .bind(subject.to_string())
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
    Ok(())
}

/// Deletes subject `id`'s examples in `tx`: how many, and their photos' keys.
async fn delete_examples_of(tx: &mut AnyConnection, id: &str) -> sqlx::Result<(i64, Vec<String>)> {
    let keys: Vec<String> = sqlx::query(
        "SELECT photo_key FROM examples WHERE subject_id = $1 AND photo_key IS NOT NULL",
    )
    .bind(id.to_owned())
    .fetch_all(&mut *tx)
    .await?
    .iter()
    .map(|row| row.try_get("photo_key"))
    .collect::<sqlx::Result<_>>()?;
    let count = sqlx::query("DELETE FROM examples WHERE subject_id = $1")
        .bind(id.to_owned())
        .execute(&mut *tx)
        .await?
        .rows_affected() as i64;
    Ok((count, keys))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A transaction that reads before it writes must not fail because another
    /// connection wrote in between: on SQLite a deferred `BEGIN` would get
    /// `SQLITE_BUSY` at once (its snapshot is stale; the busy timeout does not
    /// apply), which users saw as a 503 while workers polled the queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deletes_succeed_while_another_connection_writes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("faces.db").display()
        );
        let db = Db::connect(&url).await.unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = tokio::spawn({
            let (db, stop) = (db.clone(), stop.clone());
            async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    db.check().await.unwrap();
                }
            }
        });
        for round in 0..300 {
            let name = format!("person {round}");
            db.create_subject(&name).await.unwrap();
            let removed = db.delete_subjects_named(Some(&name)).await;
            match removed {
                Ok(removed) => assert_eq!(removed.subjects, [name], "round {round}"),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.await.unwrap();
    }
}
