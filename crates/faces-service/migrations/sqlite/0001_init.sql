-- Submissions: one row per accepted upload. Times are microseconds since the Unix epoch (UTC).
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'done', 'failed')),
    created_at INTEGER NOT NULL,
    processed_at INTEGER,
    original_key TEXT NOT NULL,
    processed_key TEXT,
    content_hash TEXT NOT NULL,
    byte_size INTEGER NOT NULL,
    width INTEGER,
    height INTEGER,
    faces_count INTEGER,
    faces TEXT,
    duplicate_of TEXT,
    error TEXT
);
CREATE INDEX submissions_newest ON submissions (created_at DESC, id DESC);
CREATE INDEX submissions_by_hash ON submissions (content_hash, status);

-- The durable queue: one job per submission, claimed with a lease that a live worker renews.
CREATE TABLE jobs (
    submission_id TEXT PRIMARY KEY REFERENCES submissions (id) ON DELETE CASCADE,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    run_at INTEGER NOT NULL,
    lease_until INTEGER,
    lease_token TEXT,
    last_error TEXT
);
CREATE INDEX jobs_ready ON jobs (state, run_at);
