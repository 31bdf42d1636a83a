//! `RefreshToken::parse` and `FamilyId::parse`: canonical input only, exact round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| portcullis_fuzz::refresh_token::run(data));
