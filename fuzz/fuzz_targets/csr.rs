//! `cargo +nightly fuzz run csr`: see `mtls_fuzz::csr`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mtls_fuzz::csr(data));
