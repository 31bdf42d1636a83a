//! Headers and claims JSON signed with the harness's HS256 key, so every input reaches the claim rules.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: portcullis_fuzz::jwt::ClaimsInput| {
    portcullis_fuzz::jwt::run_claims(&input)
});
