-- Refresh-token families: one row per login on one device. Tokens are
-- kept only as SHA-256 digests of their secrets; the user id as its UTF-8
-- bytes (any text, NUL included), found through its SHA-256 (a long id
-- cannot be a btree key). Times are the application clock's milliseconds.
CREATE TABLE "portcullis"."refresh_families" (
    family_digest     bytea  PRIMARY KEY CHECK (octet_length(family_digest) = 32),  -- SHA-256 of the family id
    family_id         text   NOT NULL,     -- the family id (the access tokens' sid; not a credential)
    user_digest       bytea  NOT NULL CHECK (octet_length(user_digest) = 32),  -- SHA-256 of the user id
    user_id           bytea  NOT NULL,     -- the user id's UTF-8 bytes
    current_digest    bytea  NOT NULL CHECK (octet_length(current_digest) = 32),  -- the live token's digest
    previous_digest   bytea,               -- the token it replaced (the grace window); NULL before the first rotation
    previous_at       bigint,              -- when that one was rotated
    history           text   NOT NULL,     -- older digests: hex, concatenated, oldest first (presenting one is reuse)
    rotations         bigint NOT NULL,
    created_at        bigint NOT NULL,
    last_used_at      bigint NOT NULL,
    idle_deadline     bigint NOT NULL,
    absolute_deadline bigint NOT NULL,
    expires_at        bigint GENERATED ALWAYS AS (LEAST(idle_deadline, absolute_deadline)) STORED,
    claims            text   NOT NULL,     -- JSON object: claims copied into every access token
    device            text   NOT NULL,     -- JSON: user agent and address of the last login or refresh
    clock_offset      bigint NOT NULL DEFAULT 0,  -- the writer's clock minus the database's (ms) at the last write: served only until `expires_at - clock_offset` plus 60 s by the database's clock
    reused_at         bigint               -- when a rotation found reuse; NULL while live. A reused family is kept until it ends: every token it replaced is reuse again, nothing else finds it
);

-- A user's families (list, revoke all, the per-user cap), oldest first.
CREATE INDEX "refresh_families_user" ON "portcullis"."refresh_families" (user_digest, created_at);

-- The purge of ended families.
CREATE INDEX "refresh_families_expiry" ON "portcullis"."refresh_families" (expires_at);
