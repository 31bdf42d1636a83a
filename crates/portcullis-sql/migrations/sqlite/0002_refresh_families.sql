-- Refresh-token families: one row per login on one device. Tokens are
-- kept only as SHA-256 digests of their secrets; the user id as its UTF-8
-- bytes (any text, NUL included), found through its SHA-256. Times are the
-- application clock's milliseconds. A rowid table (the purge deletes by
-- rowid), STRICT (a value of the wrong type is refused, never stored).
CREATE TABLE "portcullis_refresh_families" (
    family_digest     BLOB    NOT NULL PRIMARY KEY CHECK (length(family_digest) = 32),  -- SHA-256 of the family id
    family_id         TEXT    NOT NULL,              -- the family id (the access tokens' sid; not a credential)
    user_digest       BLOB    NOT NULL CHECK (length(user_digest) = 32),  -- SHA-256 of the user id
    user_id           BLOB    NOT NULL,              -- the user id's UTF-8 bytes
    current_digest    BLOB    NOT NULL CHECK (length(current_digest) = 32),  -- the live token's digest
    previous_digest   BLOB,                          -- the token it replaced (the grace window); NULL before the first rotation
    previous_at       INTEGER,                       -- when that one was rotated
    history           TEXT    NOT NULL,              -- older digests: hex, concatenated, oldest first (presenting one is reuse)
    rotations         INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    last_used_at      INTEGER NOT NULL,
    idle_deadline     INTEGER NOT NULL,
    absolute_deadline INTEGER NOT NULL,
    expires_at        INTEGER GENERATED ALWAYS AS (min(idle_deadline, absolute_deadline)) STORED,
    claims            TEXT    NOT NULL,              -- JSON object: claims copied into every access token
    device            TEXT    NOT NULL,              -- JSON: user agent and address of the last login or refresh
    reused_at         INTEGER                        -- when a rotation found reuse; NULL while live. A reused family is kept until it ends: every token it replaced is reuse again, nothing else finds it
) STRICT;

-- A user's families (list, revoke all, the per-user cap), oldest first.
CREATE INDEX "portcullis_refresh_families_user" ON "portcullis_refresh_families" (user_digest, created_at);

-- The purge of ended families.
CREATE INDEX "portcullis_refresh_families_expiry" ON "portcullis_refresh_families" (expires_at);
