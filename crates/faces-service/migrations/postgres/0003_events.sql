-- The outbox: one row per feed event (a detection with faces), written in the same
-- transaction as the result. `seq` orders the feed across every node: writers take
-- one advisory lock before inserting, so events commit in `seq` order and a reader
-- that has seen `seq` n never later finds a smaller one. `GET /faces?after=` replays
-- it. Rows live as long as their submissions (retention deletes both).
CREATE TABLE events (
    seq BIGSERIAL PRIMARY KEY,
    submission_id TEXT NOT NULL REFERENCES submissions (id) ON DELETE CASCADE
);
CREATE INDEX events_by_submission ON events (submission_id);
-- Results from before the outbox become its first events, oldest first.
INSERT INTO events (submission_id)
    SELECT id FROM submissions WHERE status = 'done' AND processed_key IS NOT NULL
    ORDER BY processed_at, id;
