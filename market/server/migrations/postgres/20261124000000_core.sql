-- Ledger: double-entry accounts and transfers (amounts in integer credits).
CREATE TABLE accounts (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    debits_pending BIGINT NOT NULL DEFAULT 0,
    debits_posted BIGINT NOT NULL DEFAULT 0,
    credits_pending BIGINT NOT NULL DEFAULT 0,
    credits_posted BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL
);
INSERT INTO accounts (id, kind, created_at_ms) VALUES ('mint', 'issuance', 0), ('fees', 'system', 0), ('escrow', 'system', 0);

CREATE TABLE transfers (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    request_digest TEXT NOT NULL,
    debit TEXT NOT NULL REFERENCES accounts (id),
    credit TEXT NOT NULL REFERENCES accounts (id),
    amount BIGINT NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    pending_id TEXT,
    amount_posted BIGINT,
    created_at_ms BIGINT NOT NULL,
    expires_at_ms BIGINT
);
CREATE INDEX transfers_by_debit ON transfers (debit, seq);
CREATE INDEX transfers_by_credit ON transfers (credit, seq);
CREATE INDEX transfers_pending ON transfers (state, expires_at_ms);

-- Request hygiene.
CREATE TABLE nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    seen_at_ms BIGINT NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE TABLE idempotency (
    key_id TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    status BIGINT NOT NULL,
    response TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (key_id, idem_key)
);
CREATE TABLE audit (
    seq BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status BIGINT NOT NULL,
    request_digest TEXT NOT NULL
);

-- Registry.
CREATE TABLE packages (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    description TEXT NOT NULL,
    category TEXT NOT NULL,
    tags TEXT NOT NULL,
    search TEXT NOT NULL,
    downloads BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE TABLE versions (
    name TEXT NOT NULL REFERENCES packages (name),
    version TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    yanked BIGINT NOT NULL DEFAULT 0,
    published_at_ms BIGINT NOT NULL,
    imports TEXT NOT NULL,
    exports TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE blobs (
    digest TEXT PRIMARY KEY,
    bytes BYTEA NOT NULL
);
CREATE TABLE package_log (
    name TEXT NOT NULL,
    seq BIGINT NOT NULL,
    entry TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (name, seq)
);
