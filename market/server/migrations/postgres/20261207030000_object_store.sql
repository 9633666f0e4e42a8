-- Blob bytes move to the object store (market/server/src/store.rs): the
-- blobs table keeps what a blob is (digest, size, pin) and the key of the
-- object holding its bytes (`object`, a key no other record ever names).
-- `bytes` is kept, nullable, only for rows written before this migration:
-- the market moves them into the store when it starts
-- (blobs::move_into_store), names their object and sets `bytes` NULL.
ALTER TABLE blobs ADD COLUMN size BIGINT;
ALTER TABLE blobs ADD COLUMN object TEXT;
UPDATE blobs SET size = LENGTH(bytes);
ALTER TABLE blobs ALTER COLUMN size SET NOT NULL;
ALTER TABLE blobs ALTER COLUMN bytes DROP NOT NULL;
