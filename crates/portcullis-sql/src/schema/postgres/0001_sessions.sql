-- Sessions: one row per session, keyed by the SHA-256 of its id.
CREATE TABLE IF NOT EXISTS {table:sessions} (
    id_digest         bytea  PRIMARY KEY CHECK (octet_length(id_digest) = 32),
    user_digest       bytea  CHECK (octet_length(user_digest) = 32),
    user_id           bytea,
    created_at        bigint NOT NULL,
    last_seen         bigint NOT NULL,
    idle_deadline     bigint NOT NULL,
    absolute_deadline bigint NOT NULL,
    expires_at        bigint GENERATED ALWAYS AS (LEAST(idle_deadline, absolute_deadline)) STORED,
    metadata          text   NOT NULL,
    data              jsonb  NOT NULL DEFAULT '{}',
    -- The writer's clock minus the database's (ms) at the last write: the
    -- row is served only until `expires_at - clock_offset` plus 60 s by
    -- the database's clock, whatever a reader's clock says.
    clock_offset      bigint NOT NULL DEFAULT 0,
    CHECK ((user_id IS NULL) = (user_digest IS NULL))
);
-- A user's sessions, in eviction order.
CREATE INDEX IF NOT EXISTS {ident:sessions_user}
    ON {table:sessions} (user_digest, created_at) WHERE user_digest IS NOT NULL;
-- The purge's order.
CREATE INDEX IF NOT EXISTS {ident:sessions_expiry} ON {table:sessions} (expires_at);
