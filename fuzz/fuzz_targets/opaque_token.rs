//! `OpaqueToken::parse` and `TokenDigest::from_hex` against the base64 crate's strict decoder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::opaque_token::run(data));
