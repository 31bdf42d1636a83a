-- JWT revocations: the source of truth this process's in-process view
-- loads at start (a snapshot) and that every revocation writes before the
-- view applies it. Ids are kept as their UTF-8 bytes (BLOB: NUL-safe), the
-- views match them against claims; the key is their SHA-256 (32 bytes).
-- Times are the application's clock in milliseconds. Rowid tables (the
-- purge deletes by rowid).

-- Denied token ids (`jti`), until the token's `exp` (kept
-- `portcullis_jwt::MAX_LEEWAY` plus 60 s longer before purging).
CREATE TABLE IF NOT EXISTS {table:revoked_tokens} (
    id_digest  BLOB    NOT NULL PRIMARY KEY CHECK (length(id_digest) = 32),
    id         BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {ident:revoked_tokens_expiry}
    ON {table:revoked_tokens} (expires_at);

-- Denied sessions and refresh families (`sid`), until their last access
-- token expires (kept as long as the tokens above).
CREATE TABLE IF NOT EXISTS {table:revoked_sessions} (
    id_digest  BLOB    NOT NULL PRIMARY KEY CHECK (length(id_digest) = 32),
    id         BLOB    NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS {ident:revoked_sessions_expiry}
    ON {table:revoked_sessions} (expires_at);

-- Per-user token versions (`sub` -> version): a token whose `ver` is below
-- the user's version is refused. Versions only go up and never expire: a
-- forgotten version would restart at 1 and admit tokens minted since.
CREATE TABLE IF NOT EXISTS {table:revoked_users} (
    user_digest BLOB    NOT NULL PRIMARY KEY CHECK (length(user_digest) = 32),
    user_id     BLOB    NOT NULL,
    version     INTEGER NOT NULL CHECK (version > 0)
);
