//! SPIFFE bundles (JWK Sets with `spiffe_sequence`), as a bundle endpoint or a file serves them.

use mtls_core::SpiffeBundle;

/// `data` is a SPIFFE bundle document of `example.org`. A bundle that parses emits a
/// document that parses to the same authorities, sequence and refresh hint (nothing skipped),
/// with unique `kid`s, and its PEM holds exactly its X.509 authorities.
pub fn spiffe_bundle(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let td: mtls_core::TrustDomain = "example.org".parse().expect("a valid trust domain");
    let Ok(bundle) = SpiffeBundle::parse(td.clone(), text) else {
        return;
    };
    let again = SpiffeBundle::parse(td.clone(), &bundle.to_json()).expect("our own output parses");
    assert_eq!(again.x509_authorities(), bundle.x509_authorities());
    assert_eq!(again.jwt_authorities(), bundle.jwt_authorities());
    assert_eq!(again.sequence(), bundle.sequence());
    assert_eq!(again.refresh_hint(), bundle.refresh_hint());
    assert_eq!(again.skipped(), 0);
    let mut kids: Vec<&str> = bundle.jwt_authorities().iter().map(|a| a.kid()).collect();
    let n = kids.len();
    kids.sort_unstable();
    kids.dedup();
    assert_eq!(kids.len(), n, "duplicate kid accepted");
    if !bundle.x509_authorities().is_empty() {
        let from_pem = SpiffeBundle::new(td)
            .add_x509_authorities_pem(bundle.to_pem())
            .expect("our PEM parses");
        assert_eq!(from_pem.x509_authorities(), bundle.x509_authorities());
    }
}
