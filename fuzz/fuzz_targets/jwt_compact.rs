//! Any string as a compact JWS (`verify_jws`) and as an access token (`JwtLayer::verify`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::jwt::run_compact(data));
