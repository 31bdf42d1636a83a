-- The DPoP proof replay cache: one row per accepted proof, named by the
-- 32-byte id the verifier passes (a SHA-256 of the proof's key thumbprint
-- and jti), never the proof, its key or a token. Times are seconds since
-- the epoch.
CREATE TABLE {table:dpop_replay} (
    proof_id   bytea  PRIMARY KEY CHECK (octet_length(proof_id) = 32),  -- the proof's id
    expires_at bigint NOT NULL  -- the end of the proof's iat window: a replay before it is refused
);

-- The purge of rows past their window.
CREATE INDEX {ident:dpop_replay_expiry} ON {table:dpop_replay} (expires_at);
