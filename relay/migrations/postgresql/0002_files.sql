-- Files on PostgreSQL: what a relay on SQLite keeps under logs/, blobs/ and stdin/ in its
-- data dir (docs/storage.md, "Files on PostgreSQL"). Chunked BYTEA rows, not large
-- objects: measured in docs/benchmarks.md; rows go with the tables they belong to (a
-- DELETE frees them, pg_dump carries them, no lo_unlink bookkeeping).

-- Task output: one row per task (the sizes and flags a task view reports) and the bytes as
-- the drones shipped them, one row per accepted chunk at its offset.
CREATE TABLE log_state (
    task TEXT PRIMARY KEY,
    stdout_size BIGINT NOT NULL DEFAULT 0,
    stderr_size BIGINT NOT NULL DEFAULT 0,
    order_size BIGINT NOT NULL DEFAULT 0,
    truncated BOOLEAN NOT NULL DEFAULT FALSE,        -- the output cap was reached
    order_truncated BOOLEAN NOT NULL DEFAULT FALSE,  -- the order's own cap was reached
    closed BOOLEAN NOT NULL DEFAULT FALSE            -- the task finished: nothing new
);

CREATE TABLE log_chunks (
    task TEXT NOT NULL,
    stream TEXT NOT NULL,
    "offset" BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (task, stream, "offset")
);

-- Blobs by content hash (artifacts and fetched files). An upload writes its chunks under a
-- fresh ``blob_id`` inside one transaction that commits only once the body's size and hash
-- are checked and its ``blobs`` row is in: a refused or broken upload leaves no row.
-- Every chunk but the last holds exactly the store's chunk size, so a range read knows
-- which rows to take from the offsets alone.
CREATE TABLE blobs (
    sha256 TEXT PRIMARY KEY,
    blob_id BIGINT NOT NULL UNIQUE,
    size BIGINT NOT NULL,
    chunk_size INTEGER NOT NULL,
    stored_at DOUBLE PRECISION NOT NULL   -- retention spares a blob touched within its grace
);

CREATE SEQUENCE blob_ids;

CREATE TABLE blob_chunks (
    blob_id BIGINT NOT NULL,
    idx INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (blob_id, idx)
);

-- A task's unconsumed stdin: its window state and the chunks the pilot sent, by offset.
CREATE TABLE stdin_state (
    task TEXT PRIMARY KEY,
    "end" BIGINT NOT NULL DEFAULT 0,
    acked BIGINT NOT NULL DEFAULT 0,
    eof BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE stdin_chunks (
    task TEXT NOT NULL,
    "offset" BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (task, "offset")
);

-- The bytes never pass through TOAST compression: they are sealed records (random to a
-- compressor), so trying costs CPU for nothing.
ALTER TABLE log_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
ALTER TABLE stdin_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
