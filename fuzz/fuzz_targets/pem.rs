//! `cargo +nightly fuzz run pem`: see `mtls_fuzz::pem`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::pem(data));
