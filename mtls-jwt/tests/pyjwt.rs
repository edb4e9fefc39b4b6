//! Tokens minted by an independent implementation (PyJWT, keys from Python `cryptography`)
//! validate, and each attack or mistake fails with its own named error; tokens we mint
//! verify in PyJWT.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use mtls_jwt::{Algorithm, Error, GrpcCode, JwksSource, SigningKey, TokenSpec, Validator};
use support::PyTokens;

fn validator() -> Validator {
    Validator::builder()
        .jwks(JwksSource::inline(PyTokens::get().jwks.to_string()))
        .issuer("https://issuer.test")
        .audience("bookstore")
        .build()
        .unwrap()
}

#[test]
fn pyjwt_tokens_validate_for_every_algorithm() {
    let py = PyTokens::get();
    let v = validator();
    for alg in ["RS256", "PS256", "ES256", "ES384", "EdDSA"] {
        let claims = v
            .validate_now(py.token(&format!("valid-{alg}")))
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(claims.algorithm().as_str(), alg);
        assert_eq!(claims.kid(), Some(format!("k-{alg}").as_str()));
        assert_eq!(claims.subject(), Some("spiffe://example.org/client"));
        assert_eq!(claims.spiffe_id().unwrap().path(), "/client");
    }
    let multi = v.validate_now(py.token("valid-multi-aud")).unwrap();
    assert_eq!(multi.audiences(), ["other", "bookstore"]);
    // No kid: matched against every key of its alg.
    v.validate_now(py.token("no-kid-ES384")).unwrap();
}

#[test]
fn each_bad_token_fails_with_its_own_error() {
    let py = PyTokens::get();
    let v = validator();
    let err = |name: &str| {
        let e = v
            .validate_now(py.token(name))
            .expect_err(&format!("{name} must be refused"));
        eprintln!("{name}: {e}");
        e
    };
    assert!(matches!(err("tampered"), Error::BadSignature));
    assert!(matches!(err("expired"), Error::Expired { .. }));
    assert!(matches!(err("nbf-future"), Error::NotYetValid { .. }));
    let aud = err("wrong-aud");
    assert!(
        matches!(&aud, Error::AudienceNotAllowed { presented, .. } if presented == &["elsewhere"])
    );
    assert_eq!(
        (aud.http_status(), aud.grpc_code()),
        (403, GrpcCode::PermissionDenied)
    );
    assert_eq!(aud.envoy_message(), "Audiences in Jwt are not allowed");
    assert!(matches!(err("no-aud"), Error::AudienceMissing { .. }));
    let iss = err("wrong-iss");
    assert!(
        matches!(&iss, Error::IssuerNotAllowed { presented: Some(p), .. } if p == "https://evil.test")
    );
    assert_eq!(iss.envoy_message(), "Jwt issuer is not configured");
    assert!(matches!(
        err("no-exp"),
        Error::MissingClaim { claim: "exp" }
    ));
    assert!(
        matches!(err("alg-none"), Error::AlgorithmNotSupported { presented } if presented == "none")
    );
    assert!(
        matches!(err("hs256-confusion"), Error::AlgorithmNotAllowed { presented, .. } if presented == "HS256")
    );
    assert!(matches!(err("unknown-kid"), Error::UnknownKid { kid } if kid == "k-nobody"));
    assert!(matches!(
        err("kid-other-alg"),
        Error::KeyAlgorithmMismatch { key_alg, token_alg, .. } if key_alg == "PS256" && token_alg == "RS256"
    ));
    assert!(
        matches!(err("kid-enc"), Error::KeyNotForSignature { key_use, .. } if key_use == "use: enc")
    );
    assert!(matches!(
        err("oversize"),
        Error::TooLarge { limit: 8192, .. }
    ));
    assert!(matches!(
        err("two-segments"),
        Error::WrongSegmentCount { found: 2 }
    ));
    assert!(matches!(
        err("four-segments"),
        Error::WrongSegmentCount { found: 4 }
    ));
    for name in [
        "tampered",
        "expired",
        "unknown-kid",
        "alg-none",
        "two-segments",
    ] {
        let e = err(name);
        assert_eq!(
            (e.http_status(), e.grpc_code()),
            (401, GrpcCode::Unauthenticated),
            "{name}"
        );
    }
    assert_eq!(err("expired").envoy_message(), "Jwt is expired");
    assert_eq!(err("tampered").envoy_message(), "Jwt verification fails");
    assert!(matches!(v.validate_now(""), Err(Error::Missing)));
}

#[test]
fn hs256_with_the_public_key_as_secret_fails_even_when_hmac_is_on() {
    // With an HMAC secret configured, the confused token still fails: wrong secret.
    let py = PyTokens::get();
    let v = Validator::builder()
        .jwks(JwksSource::inline(py.jwks.to_string()))
        .hmac_secret(vec![7u8; 32])
        .audience("bookstore")
        .build()
        .unwrap();
    assert!(matches!(
        v.validate_now(py.token("hs256-confusion")),
        Err(Error::BadSignature)
    ));
}

#[test]
fn typ_rules_apply() {
    let py = PyTokens::get();
    let jwks = py.jwks.to_string();
    let accept = Validator::builder()
        .jwks(JwksSource::inline(jwks.clone()))
        .accept_typ(["JWT"])
        .build()
        .unwrap();
    accept.validate_now(py.token("valid-ES256")).unwrap();
    assert!(matches!(
        accept.validate_now(py.token("typ-other")),
        Err(Error::TypNotAllowed { presented: Some(t), .. }) if t == "dpop+jwt"
    ));
    let require = Validator::builder()
        .jwks(JwksSource::inline(jwks))
        .require_typ(["dpop+jwt"])
        .build()
        .unwrap();
    require.validate_now(py.token("typ-other")).unwrap();
}

#[test]
fn pyjwt_verifies_tokens_we_mint() {
    let dir = tempfile::tempdir().unwrap();
    let mut jwks = Vec::new();
    let mut tokens = Vec::new();
    for alg in [
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
        Algorithm::EdDSA,
    ] {
        let key = SigningKey::generate(alg).unwrap();
        jwks.push(key.jwk(None));
        tokens.push(
            key.mint(
                &TokenSpec::new(Duration::from_secs(120))
                    .issuer("https://issuer.test")
                    .audience("bookstore")
                    .subject("spiffe://example.org/client")
                    .claim("alg_used", alg.as_str()),
            )
            .unwrap(),
        );
    }
    let file = dir.path().join("jwks.json");
    std::fs::write(&file, mtls_jwt::jwks_json(jwks)).unwrap();
    let out = mtls_test_support::pyjwt::verify(&file, "https://issuer.test", "bookstore", &tokens);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[4]["alg_used"], "EdDSA");
}

#[test]
fn jsonwebtoken_verifies_our_tokens_and_we_verify_its() {
    use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let token = key
        .mint(
            &TokenSpec::new(Duration::from_secs(60))
                .issuer("i")
                .audience("a"),
        )
        .unwrap();
    let mut validation = Validation::new(jsonwebtoken::Algorithm::ES256);
    validation.set_audience(&["a"]);
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        &token,
        &DecodingKey::from_ec_pem(key.public_pem().as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    assert_eq!(decoded.claims["iss"], "i");

    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(key.kid().to_owned());
    let now = jsonwebtoken::get_current_timestamp();
    let theirs = jsonwebtoken::encode(
        &header,
        &serde_json::json!({"iss": "i", "aud": "a", "exp": now + 60}),
        &EncodingKey::from_ec_pem(key.private_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let v = Validator::builder()
        .jwks(JwksSource::inline(mtls_jwt::jwks_json([key.jwk(None)])))
        .issuer("i")
        .audience("a")
        .build()
        .unwrap();
    v.validate_now(&theirs).unwrap();
}
