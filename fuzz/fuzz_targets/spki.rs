//! `cargo +nightly fuzz run spki`: see `mtls_fuzz::spki`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::spki(data));
