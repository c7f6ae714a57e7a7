-- One row that `/readyz` rewrites: readiness means the database takes a write,
-- not only that it answers a read (a full disk or a held lock fails the write).
CREATE TABLE readiness (
    id INTEGER PRIMARY KEY,
    checked_at BIGINT NOT NULL
);
INSERT INTO readiness (id, checked_at) VALUES (1, 0);
