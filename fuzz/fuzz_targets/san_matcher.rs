//! `cargo +nightly fuzz run san_matcher`: see `mtls_fuzz::san_matcher`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::san_matcher(data));
