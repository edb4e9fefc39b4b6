//! `cargo +nightly fuzz run spiffe_id`: see `mtls_fuzz::spiffe_id`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::spiffe_id(data));
