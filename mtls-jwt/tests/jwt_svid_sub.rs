//! A JWT-SVID's `sub` is a SPIFFE ID in canonical form, as go-spiffe's `jwtsvid` parses it
//! (`spiffeid.FromString`): the `spiffe` crate would lower-case the scheme and trust domain
//! and accept it. Regression from the `jwt` fuzz target (fuzz/README.md).
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use mtls_jwt::{Algorithm, Error, JwksSource, SigningKey, TokenSpec, Validator};

#[test]
fn non_canonical_spiffe_ids_in_sub_are_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let aud = "spiffe://example.org/bookstore";
    let validator = Validator::builder()
        .jwks(JwksSource::inline(mtls_jwt::jwks_json([key.jwk(None)])))
        .jwt_svid(aud)
        .build()
        .unwrap();
    let token = |sub: &str| {
        key.mint(
            &TokenSpec::new(Duration::from_secs(300))
                .audience(aud)
                .subject(sub),
        )
        .unwrap()
    };

    let ok = validator
        .validate_now(&token("spiffe://example.org/w"))
        .unwrap();
    assert_eq!(
        ok.spiffe_id().unwrap().to_string(),
        "spiffe://example.org/w"
    );

    for sub in [
        "spiffE://example.org/w",
        "SPIFFE://example.org/w",
        "spiffe://Example.org/w",
        "spiffe://EXAMPLE.ORG/w",
    ] {
        match validator.validate_now(&token(sub)) {
            Err(Error::InvalidClaim { claim, reason }) => {
                assert_eq!(claim, "sub");
                assert!(reason.contains("canonical"), "{sub}: {reason}");
            }
            other => panic!("{sub}: expected InvalidClaim(sub), got {other:?}"),
        }
    }
}
