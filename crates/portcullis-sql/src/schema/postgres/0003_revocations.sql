-- JWT revocations: the source of truth that every instance's in-process
-- view loads (a snapshot) and follows (LISTEN/NOTIFY). Ids are kept as
-- their UTF-8 bytes (bytea: NUL-safe, any length), because the views match
-- them against claims; the key is their SHA-256 (32 bytes), so that a
-- 10 KB id is never a btree key. Times are the application's clock in
-- milliseconds.

-- Denied token ids (`jti`), until the token's `exp` (kept
-- `portcullis_jwt::MAX_LEEWAY` plus 60 s longer before purging).
CREATE TABLE IF NOT EXISTS {table:revoked_tokens} (
    id_digest  bytea  PRIMARY KEY CHECK (octet_length(id_digest) = 32),
    id         bytea  NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS {ident:revoked_tokens_expiry}
    ON {table:revoked_tokens} (expires_at);

-- Denied sessions and refresh families (`sid`), until their last access
-- token expires (kept as long as the tokens above).
CREATE TABLE IF NOT EXISTS {table:revoked_sessions} (
    id_digest  bytea  PRIMARY KEY CHECK (octet_length(id_digest) = 32),
    id         bytea  NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS {ident:revoked_sessions_expiry}
    ON {table:revoked_sessions} (expires_at);

-- Per-user token versions (`sub` -> version): a token whose `ver` is below
-- the user's version is refused. Versions only go up and never expire: a
-- forgotten version would restart at 1 and admit tokens minted since.
CREATE TABLE IF NOT EXISTS {table:revoked_users} (
    user_digest bytea  PRIMARY KEY CHECK (octet_length(user_digest) = 32),
    user_id     bytea  NOT NULL,
    version     bigint NOT NULL CHECK (version > 0)
);
