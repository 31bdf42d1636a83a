-- Sessions: one row per session, keyed by the SHA-256 of its id (a rowid
-- table: the purge deletes by rowid).
CREATE TABLE IF NOT EXISTS {table:sessions} (
    id_digest         BLOB    PRIMARY KEY NOT NULL CHECK (length(id_digest) = 32),
    user_digest       BLOB    CHECK (length(user_digest) = 32),
    user_id           BLOB,
    created_at        INTEGER NOT NULL,
    last_seen         INTEGER NOT NULL,
    idle_deadline     INTEGER NOT NULL,
    absolute_deadline INTEGER NOT NULL,
    expires_at        INTEGER GENERATED ALWAYS AS (min(idle_deadline, absolute_deadline)) STORED,
    metadata          TEXT    NOT NULL,
    data              TEXT    NOT NULL DEFAULT '{}',
    CHECK ((user_id IS NULL) = (user_digest IS NULL))
) STRICT;
-- A user's sessions, in eviction order.
CREATE INDEX IF NOT EXISTS {ident:sessions_user}
    ON {table:sessions} (user_digest, created_at) WHERE user_digest IS NOT NULL;
-- The purge's order.
CREATE INDEX IF NOT EXISTS {ident:sessions_expiry} ON {table:sessions} (expires_at);
