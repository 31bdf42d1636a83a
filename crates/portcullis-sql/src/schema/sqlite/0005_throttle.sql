-- The login throttle's failure counters: one row per counter, named by its
-- scope and the SHA-256 digest of what it counts (an account, a client
-- address, or the pair), never an account name or an address. Times are
-- the application clock's milliseconds. A rowid table (the purge deletes
-- by rowid), STRICT (a value of the wrong type is refused, never stored).
CREATE TABLE {table:throttle_counters} (
    key_digest   BLOB    NOT NULL CHECK (length(key_digest) = 32),  -- SHA-256 of what the counter counts
    scope        TEXT    NOT NULL CHECK (length(scope) BETWEEN 1 AND 32),  -- account, address or account_at_address
    failures     INTEGER NOT NULL CHECK (failures BETWEEN 1 AND 4294967295),  -- since the counter was last forgotten or reset
    last_failure INTEGER NOT NULL,  -- the last failure's time, as its writer's clock had it
    expires_at   INTEGER NOT NULL,  -- last_failure + the throttle's forget_after: the counter counts as zero from then on
    PRIMARY KEY (key_digest, scope)
) STRICT;

-- The purge of forgotten counters.
CREATE INDEX {ident:throttle_counters_expiry} ON {table:throttle_counters} (expires_at);
