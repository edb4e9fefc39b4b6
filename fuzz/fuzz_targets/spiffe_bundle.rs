//! `cargo +nightly fuzz run spiffe_bundle`: see `mtls_fuzz::spiffe_bundle`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::spiffe_bundle(data));
