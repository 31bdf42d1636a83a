//! CSRF tokens in urlencoded and multipart bodies, through `CsrfLayer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: portcullis_fuzz::csrf::FormInput| {
    portcullis_fuzz::csrf::run_form(&input)
});
