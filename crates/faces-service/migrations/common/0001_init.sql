-- Submissions: one row per accepted upload. Times are microseconds since the Unix epoch (UTC).
CREATE TABLE submissions (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('queued', 'processing', 'done', 'failed')),
    created_at BIGINT NOT NULL,
    processed_at BIGINT,
    original_key TEXT NOT NULL,
    processed_key TEXT,
    content_hash TEXT NOT NULL,
    byte_size BIGINT NOT NULL,
    width BIGINT,
    height BIGINT,
    faces_count BIGINT,
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
    attempts BIGINT NOT NULL DEFAULT 0,
    run_at BIGINT NOT NULL,
    lease_until BIGINT,
    lease_token TEXT,
    last_error TEXT
);
CREATE INDEX jobs_ready ON jobs (state, run_at);
