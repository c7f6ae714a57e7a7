-- Embeddings computed after their photo was processed (naming or searching by a face
-- of a photo processed without them): one row per photo, so that every API node adds
-- that photo's faces to its search index (each reads the rows after the last it saw,
-- every 2 s). Writers take one advisory lock before inserting, so rows commit in
-- `seq` order and a reader never skips one. Rows live as long as their submissions.
CREATE TABLE kept_embeddings (
    seq BIGSERIAL PRIMARY KEY,
    submission_id TEXT NOT NULL REFERENCES submissions (id) ON DELETE CASCADE
);
CREATE INDEX kept_embeddings_by_submission ON kept_embeddings (submission_id);
