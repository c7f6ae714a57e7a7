-- What processing the photo holds in memory at its peak, measured from its header
-- at upload: workers admit it against the memory budget before reading the file.
-- NULL for rows from before; workers then assume the worst case.
ALTER TABLE submissions ADD COLUMN decode_bytes BIGINT;
