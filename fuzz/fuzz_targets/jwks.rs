//! JWKS documents, single JWKs, and the remote client's URL and `Cache-Control` parsers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::jwks::run(data));
