-- The login throttle's failure counters: one row per counter, named by its
-- scope and the SHA-256 digest of what it counts (an account, a client
-- address, or the pair), never an account name or an address. Times are
-- the application clock's milliseconds.
CREATE TABLE "portcullis"."throttle_counters" (
    key_digest   bytea  NOT NULL CHECK (octet_length(key_digest) = 32),  -- SHA-256 of what the counter counts
    scope        text   NOT NULL CHECK (octet_length(scope) BETWEEN 1 AND 32),  -- account, address or account_at_address
    failures     bigint NOT NULL CHECK (failures BETWEEN 1 AND 4294967295),  -- since the counter was last forgotten or reset
    last_failure bigint NOT NULL,  -- the last failure's time, as its writer's clock had it
    expires_at   bigint NOT NULL,  -- last_failure + the throttle's forget_after: the counter counts as zero from then on
    PRIMARY KEY (key_digest, scope)
);

-- The purge of forgotten counters.
CREATE INDEX "throttle_counters_expiry" ON "portcullis"."throttle_counters" (expires_at);
