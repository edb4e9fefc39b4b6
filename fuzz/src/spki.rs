//! The DER code of mtls-jwt: SubjectPublicKeyInfo and RSAPublicKey, reached through
//! `PublicKey::from_spki_der` / `from_pem` and the JWK → key path of `KeySet`.

use mtls_jwt::{KeySet, PublicKey, jwks_json};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// `data` is a DER SubjectPublicKeyInfo. What `PublicKey::from_spki_der` accepts, x509-parser
/// (an independent DER reader) must read as the same algorithm and key bits, with nothing
/// after it; the key must survive PEM and JWK round trips with the same thumbprint.
pub fn spki(data: &[u8]) {
    let Ok(key) = PublicKey::from_spki_der(data) else {
        return;
    };
    let (rest, reference) = SubjectPublicKeyInfo::from_der(data)
        .unwrap_or_else(|e| panic!("accepted an SPKI x509-parser cannot read: {e}"));
    assert!(
        rest.is_empty(),
        "accepted an SPKI with {} trailing bytes",
        rest.len()
    );
    let jwk = key.to_jwk(Some("k"));
    let oid = reference.algorithm.algorithm.to_id_string();
    let kty = jwk["kty"].as_str().unwrap_or_default();
    let expected_oid = match kty {
        "RSA" => "1.2.840.113549.1.1.1",
        "EC" => "1.2.840.10045.2.1",
        "OKP" => "1.3.101.112",
        other => panic!("unexpected kty {other}"),
    };
    assert_eq!(oid, expected_oid, "algorithm of a {kty} key");
    assert_eq!(reference.subject_public_key.unused_bits, 0);

    let pem = key.to_pem();
    let again = PublicKey::from_pem(&pem).unwrap_or_else(|e| panic!("{e}\n{pem}"));
    assert_eq!(again, key, "PEM round trip");
    assert_eq!(again.thumbprint(), key.thumbprint());

    // The JWK form must describe the same key: loading it either gives a usable key
    // with the same id, or refuses it (e.g. a point not on the curve) — never panics.
    if let Ok(set) = KeySet::from_json(&jwks_json([jwk])) {
        assert_eq!(set.key_ids(), ["k"]);
    }
}
