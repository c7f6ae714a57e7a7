-- Per-request detection options, part of the duplicate key. Rows from before were
-- detected on the embedded defaults.
ALTER TABLE submissions ADD COLUMN mode TEXT NOT NULL DEFAULT 'fast' CHECK (mode IN ('fast', 'accurate'));
ALTER TABLE submissions ADD COLUMN threshold DOUBLE PRECISION NOT NULL DEFAULT 0.5;
