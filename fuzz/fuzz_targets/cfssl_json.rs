//! `cargo +nightly fuzz run cfssl_json`: see `mtls_fuzz::cfssl_json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::cfssl_json(data));
