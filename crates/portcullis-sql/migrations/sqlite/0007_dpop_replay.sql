-- The DPoP proof replay cache: one row per accepted proof, named by the
-- 32-byte id the verifier passes (a SHA-256 of the proof's key thumbprint
-- and jti), never the proof, its key or a token. Times are seconds since
-- the epoch. A rowid table (the purge deletes by rowid), STRICT (a value of
-- the wrong type is refused, never stored).
CREATE TABLE "portcullis_dpop_replay" (
    proof_id   BLOB    PRIMARY KEY CHECK (length(proof_id) = 32),  -- the proof's id
    expires_at INTEGER NOT NULL  -- the end of the proof's iat window: a replay before it is refused
) STRICT;

-- The purge of rows past their window.
CREATE INDEX "portcullis_dpop_replay_expiry" ON "portcullis_dpop_replay" (expires_at);
