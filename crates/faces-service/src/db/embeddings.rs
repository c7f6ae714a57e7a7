//! The embedding of every face of a processed submission (`face_embeddings`):
//! written with the result (see [`super::queue`]), read to name faces and to fill
//! each node's search index. Embeddings computed later (a face named or searched
//! by) are kept with a `kept_embeddings` row that the other nodes follow.

use std::collections::HashMap;

use faces_detect::Embedding;
use sqlx::Row;
use uuid::Uuid;

use super::connection::{embedding_from, parse_uuid, Db, Dialect};

/// The PostgreSQL advisory lock that orders `kept_embeddings` inserts (migration 0008).
const KEPT_LOCK: i64 = 728_463;

/// One stored face's embedding, as the index loads it.
#[derive(Debug, Clone)]
pub struct StoredEmbedding {
    pub submission: Uuid,
    /// The submission's `created_at`, microseconds.
    pub created_at: i64,
    pub face: u32,
    pub embedding: Embedding,
}

impl Db {
    /// The embeddings of the faces of `ids`, as `(face index, embedding)` per submission.
    pub async fn embeddings_of(
        &self,
        ids: &[Uuid],
    ) -> sqlx::Result<HashMap<Uuid, Vec<(usize, Embedding)>>> {
        let mut found: HashMap<Uuid, Vec<(usize, Embedding)>> = HashMap::new();
        for chunk in ids.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT submission_id, face_index, embedding FROM face_embeddings \
                 WHERE submission_id IN ({}) ORDER BY submission_id, face_index",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all(&self.pool).await? {
                let id = parse_uuid(&row.try_get::<String, _>("submission_id")?)?;
                let face: i64 = row.try_get("face_index")?;
                found
                    .entry(id)
                    .or_default()
                    .push((face.max(0) as usize, embedding_from(&row, "embedding")?));
            }
        }
        Ok(found)
    }

    /// The embedding of face `face` of submission `id`, if it has one.
    pub async fn face_embedding(&self, id: Uuid, face: usize) -> sqlx::Result<Option<Embedding>> {
        let row = sqlx::query(
            "SELECT embedding FROM face_embeddings WHERE submission_id = $1 AND face_index = $2",
        )
        .bind(id.to_string())
        .bind(face as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| embedding_from(&row, "embedding")).transpose()
    }

    /// Keeps the embeddings of submission `id`'s faces, computed after it was
    /// processed without them; faces that have one already keep theirs. One
    /// transaction with a `kept_embeddings` row, which tells the other API nodes
    /// ([`Db::kept_after`]): all are kept or none.
    pub async fn keep_embeddings(&self, id: Uuid, faces: &[(u32, Embedding)]) -> sqlx::Result<()> {
        if faces.is_empty() {
            return Ok(());
        }
        let rows: Vec<String> = (0..faces.len())
            .map(|n| format!("($1, ${}, ${})", 2 * n + 2, 2 * n + 3))
            .collect();
        let sql = format!(
            "INSERT INTO face_embeddings (submission_id, face_index, embedding) VALUES {} \
             ON CONFLICT (submission_id, face_index) DO NOTHING",
            rows.join(", ")
        );
        let dialect = self.dialect;
        self.transaction(async |tx| {
            let mut insert = sqlx::query(&sql).bind(id.to_string());
            for (face, embedding) in faces {
                insert = insert
                    .bind(i64::from(*face))
                    .bind(embedding.to_le_bytes().to_vec());
            }
            insert.execute(&mut *tx).await?;
            if dialect == Dialect::Postgres {
                // Held until commit: rows commit in the order of their `seq`.
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(KEPT_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO kept_embeddings (submission_id) VALUES ($1)")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            Ok(())
        })
        .await
    }

    /// The photos whose embeddings were kept after `seq` (see
    /// [`Db::keep_embeddings`]): `(seq, submission id, its created_at)`, in order.
    pub async fn kept_after(&self, seq: i64, limit: i64) -> sqlx::Result<Vec<(i64, Uuid, i64)>> {
        let rows = sqlx::query(
            "SELECT k.seq, k.submission_id, s.created_at FROM kept_embeddings k \
             JOIN submissions s ON s.id = k.submission_id WHERE k.seq > $1 ORDER BY k.seq LIMIT $2",
        )
        .bind(seq)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let id = parse_uuid(&row.try_get::<String, _>("submission_id")?)?;
                Ok((row.try_get("seq")?, id, row.try_get("created_at")?))
            })
            .collect()
    }

    /// How many of submission `id`'s faces have an embedding.
    pub async fn embeddings_count(&self, id: Uuid) -> sqlx::Result<i64> {
        sqlx::query("SELECT COUNT(*) AS n FROM face_embeddings WHERE submission_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?
            .try_get("n")
    }

    /// Up to `limit` stored embeddings after `after` (a `(submission id, face index)`
    /// of the previous page), in key order: the index reads them all at start. The
    /// row-value comparison is a range on the primary key in both databases, so each
    /// page costs its own rows, not a scan.
    pub async fn stored_embeddings(
        &self,
        after: Option<(Uuid, u32)>,
        limit: i64,
    ) -> sqlx::Result<Vec<StoredEmbedding>> {
        let (id, face) = after.map_or((String::new(), -1), |(id, face)| {
            (id.to_string(), i64::from(face))
        });
        let rows = sqlx::query(
            "SELECT f.submission_id, f.face_index, f.embedding, s.created_at FROM face_embeddings f \
             JOIN submissions s ON s.id = f.submission_id \
             WHERE (f.submission_id, f.face_index) > ($1, $2) \
             ORDER BY f.submission_id, f.face_index LIMIT $3",
        )
        .bind(id)
        .bind(face)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StoredEmbedding {
                    submission: parse_uuid(&row.try_get::<String, _>("submission_id")?)?,
                    created_at: row.try_get("created_at")?,
                    face: row.try_get::<i64, _>("face_index")?.max(0) as u32,
                    embedding: embedding_from(row, "embedding")?,
                })
            })
            .collect()
    }
}
