//! CSRF tokens in the `x-csrf-token` header, through `CsrfLayer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: portcullis_fuzz::csrf::HeaderInput| {
    portcullis_fuzz::csrf::run_header(&input)
});
