//! `Cookie` headers against a reference parser; `Set-Cookie` round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    portcullis_fuzz::cookie::run(&portcullis_fuzz::cookie::Input::from_bytes(data));
});
