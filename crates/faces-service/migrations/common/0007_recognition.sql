-- Recognition: people to recognise (subjects), their example faces, and the
-- embedding of every face detected (128 little-endian f32, 512 bytes; BYTEA is
-- PostgreSQL's bytes and a column SQLite keeps blobs in unchanged).

-- Names are unique whatever their case (CompreFace's clients expect it): `name_key`
-- is the name in lower case, as the service folds it (the same on both databases).
CREATE TABLE subjects (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- An example face of a subject: from an example photo (photo_key, the photo kept in
-- storage) or a stored face (submission_id, face_index). The embedding is copied,
-- so an example outlives the submission it came from (no foreign key there).
CREATE TABLE examples (
    id TEXT PRIMARY KEY,
    subject_id TEXT NOT NULL REFERENCES subjects (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    submission_id TEXT,
    face_index BIGINT,
    photo_key TEXT,
    x BIGINT NOT NULL,
    y BIGINT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    embedding BYTEA NOT NULL
);
CREATE INDEX examples_by_subject ON examples (subject_id, created_at);

-- One row per face of a processed submission, written in the result's transaction;
-- removed with the submission.
CREATE TABLE face_embeddings (
    submission_id TEXT NOT NULL REFERENCES submissions (id) ON DELETE CASCADE,
    face_index BIGINT NOT NULL,
    embedding BYTEA NOT NULL,
    PRIMARY KEY (submission_id, face_index)
);

-- Bumped in the transaction of every change to subjects or examples: each node
-- compares it with the version its in-memory examples were read at.
CREATE TABLE recognition (
    id INTEGER PRIMARY KEY,
    examples_version BIGINT NOT NULL
);
INSERT INTO recognition (id, examples_version) VALUES (1, 0);
