//! cfssl JSON: CSR documents (`cfssl genkey`/`gencert` input) and signing configurations.

use mtls_certs::cfssl::{CfsslCsr, SigningConfig, parse_duration};

/// `data` = a mode byte, then JSON: a cfssl CSR (mode even) or a signing config (mode odd).
/// Everything derived from a document that loads (key algorithm, subject, SANs, every
/// profile's expiry; usage names are checked when the config loads) must be computed without panicking; durations that parse
/// are the same when parsed again from the config.
pub fn cfssl_json(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let _ = parse_duration(text);
    if mode % 2 == 0 {
        let Ok(csr) = CfsslCsr::from_json(text) else {
            return;
        };
        let _ = csr.key_algorithm();
        let subject = csr.subject();
        let _ = subject.to_string();
        let sans = csr.sans();
        assert!(sans.len() <= csr.hosts.len());
        if let Some(expiry) = csr.ca.as_ref().and_then(|ca| ca.expiry.as_deref()) {
            let _ = parse_duration(expiry);
        }
        return;
    }
    let Ok(config) = SigningConfig::from_json(text) else {
        return;
    };
    let names: Vec<Option<&str>> = std::iter::once(None)
        .chain(config.signing.profiles.keys().map(|k| Some(k.as_str())))
        .collect();
    for name in names {
        if let Ok(profile) = config.profile(name)
            && let Ok(a) = profile.expiry()
        {
            assert_eq!(profile.expiry().ok(), Some(a));
        }
    }
}
