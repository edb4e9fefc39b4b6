//! `cargo +nightly fuzz run jwks`: see `mtls_fuzz::jwks`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::jwks(data));
