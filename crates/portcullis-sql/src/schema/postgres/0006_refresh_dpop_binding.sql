-- The DPoP key a refresh family is bound to (RFC 9449 §5): the RFC 7638
-- SHA-256 thumbprint (base64url) of the key whose proof came with the
-- login, fixed for the family's life; NULL for an unbound (bearer) family.
ALTER TABLE {table:refresh_families} ADD COLUMN dpop_jkt text;
