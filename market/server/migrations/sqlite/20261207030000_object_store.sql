-- Blob bytes move to the object store (market/server/src/store.rs): the
-- blobs table keeps what a blob is (digest, size, pin) and the key of the
-- object holding its bytes (`object`, a key no other record ever names).
-- `bytes` is kept, nullable, only for rows written before this migration:
-- the market moves them into the store when it starts
-- (blobs::move_into_store), names their object and sets `bytes` NULL.
-- SQLite cannot drop NOT NULL in place, so the table is rebuilt.
CREATE TABLE blobs_moving (
    digest TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    pinned BIGINT NOT NULL DEFAULT 0,
    object TEXT,
    bytes BLOB
);
INSERT INTO blobs_moving (digest, size, pinned, bytes) SELECT digest, LENGTH(bytes), pinned, bytes FROM blobs;
DROP TABLE blobs;
ALTER TABLE blobs_moving RENAME TO blobs;
