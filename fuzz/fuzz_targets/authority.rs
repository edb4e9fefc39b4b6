//! `cargo +nightly fuzz run authority`: see `mtls_fuzz::authority`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::authority(data));
