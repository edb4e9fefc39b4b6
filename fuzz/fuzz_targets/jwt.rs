//! `cargo +nightly fuzz run jwt`: see `mtls_fuzz::jwt`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::jwt(data));
