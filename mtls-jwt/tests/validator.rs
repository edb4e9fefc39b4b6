//! Builder options: the JWT-SVID profile, lifetime, claim checks, HMAC, header extraction.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use mtls_jwt::{Algorithm, Error, GrpcCode, JwksSource, SigningKey, TokenSpec, Validator};

fn spec() -> TokenSpec {
    TokenSpec::new(Duration::from_secs(300)).issuer("https://issuer.test")
}

fn svid_validator(keys: &[&SigningKey]) -> Validator {
    Validator::builder()
        .jwks(JwksSource::inline(mtls_jwt::jwks_json(
            keys.iter().map(|k| k.jwk(None)),
        )))
        .jwt_svid("spiffe://example.org/bookstore")
        .build()
        .unwrap()
}

#[test]
fn jwt_svid_profile() {
    let es = SigningKey::generate(Algorithm::ES512).unwrap();
    let ed = SigningKey::generate(Algorithm::EdDSA).unwrap();
    let v = svid_validator(&[&es, &ed]);
    let aud = "spiffe://example.org/bookstore";
    let ok = es
        .mint(&spec().audience(aud).subject("spiffe://example.org/client"))
        .unwrap();
    let claims = v.validate_now(&ok).unwrap();
    assert_eq!(
        claims.spiffe_id().unwrap().to_string(),
        "spiffe://example.org/client"
    );

    let bad_sub = es.mint(&spec().audience(aud).subject("client")).unwrap();
    assert!(
        matches!(v.validate_now(&bad_sub), Err(Error::InvalidClaim { claim, .. }) if claim == "sub")
    );
    let no_sub = es.mint(&spec().audience(aud)).unwrap();
    assert!(matches!(
        v.validate_now(&no_sub),
        Err(Error::MissingClaim { claim: "sub" })
    ));
    let no_aud = es
        .mint(&spec().subject("spiffe://example.org/client"))
        .unwrap();
    assert!(matches!(
        v.validate_now(&no_aud),
        Err(Error::AudienceMissing { .. })
    ));
    let eddsa = ed
        .mint(&spec().audience(aud).subject("spiffe://example.org/client"))
        .unwrap();
    assert!(
        matches!(v.validate_now(&eddsa), Err(Error::AlgorithmNotAllowed { presented, .. }) if presented == "EdDSA")
    );
    let typ = es
        .mint(&spec().audience(aud).subject("spiffe://example.org/client"))
        .unwrap();
    // Re-sign with another typ: build the token by hand from the key.
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let payload = typ.split('.').nth(1).unwrap();
    let header = b64(format!(
        r#"{{"alg":"ES512","typ":"secevent+jwt","kid":"{}"}}"#,
        es.kid()
    )
    .as_bytes());
    let input = format!("{header}.{payload}");
    let other_typ = format!("{input}.{}", b64(&es.sign(input.as_bytes()).unwrap()));
    assert!(matches!(
        v.validate_now(&other_typ),
        Err(Error::TypNotAllowed { .. })
    ));
}

#[test]
fn lifetime_checks_and_hmac() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let jwks = mtls_jwt::jwks_json([key.jwk(None)]);
    let v = Validator::builder()
        .jwks(JwksSource::inline(jwks.clone()))
        .max_lifetime(Duration::from_secs(600))
        .check("scope has read", |c| {
            match c.get("scope").and_then(|s| s.as_str()) {
                Some("read") => Ok(()),
                other => Err(format!("scope {other:?}")),
            }
        })
        .build()
        .unwrap();
    v.validate_now(&key.mint(&spec().claim("scope", "read")).unwrap())
        .unwrap();
    let long = key
        .mint(&TokenSpec::new(Duration::from_secs(3600)).claim("scope", "read"))
        .unwrap();
    assert!(matches!(
        v.validate_now(&long),
        Err(Error::LifetimeTooLong { max: 600, .. })
    ));
    let e = v
        .validate_now(&key.mint(&spec().claim("scope", "write")).unwrap())
        .unwrap_err();
    assert!(matches!(&e, Error::ClaimCheckFailed { check, .. } if check == "scope has read"));
    assert_eq!(e.grpc_code(), GrpcCode::PermissionDenied);

    // Clock skew: expired 30 s ago passes with the default 60 s, fails with 10 s.
    let past = SystemTime::now() - Duration::from_secs(330);
    let t = key.mint(&spec().issued_at(past)).unwrap();
    let lenient = Validator::builder()
        .jwks(JwksSource::inline(jwks.clone()))
        .build()
        .unwrap();
    lenient.validate_now(&t).unwrap();
    let strict = Validator::builder()
        .jwks(JwksSource::inline(jwks))
        .clock_skew(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(matches!(
        strict.validate_now(&t),
        Err(Error::Expired { .. })
    ));

    // HMAC only with an explicit secret (and a long enough one).
    assert!(matches!(
        Validator::builder().hmac_secret(b"short".to_vec()).build(),
        Err(Error::Config { .. })
    ));
    assert!(matches!(
        Validator::builder().build(),
        Err(Error::Config { .. })
    ));
}

#[tokio::test]
async fn headers_and_typed_claims() {
    let key = SigningKey::generate(Algorithm::RS256).unwrap();
    let v = Validator::builder()
        .jwks(JwksSource::inline(mtls_jwt::jwks_json([key.jwk(None)])))
        .audience("bookstore")
        .build()
        .unwrap();
    let token = key
        .mint(&spec().audience("bookstore").subject("alice"))
        .unwrap();
    let mut headers = http::HeaderMap::new();
    assert!(matches!(
        v.validate_headers(&headers).await,
        Err(Error::Missing)
    ));
    headers.insert("authorization", format!("BEARER {token}").parse().unwrap());
    assert_eq!(
        v.validate_headers(&headers).await.unwrap().subject(),
        Some("alice")
    );

    #[derive(serde::Deserialize)]
    struct Mine {
        sub: String,
        exp: u64,
    }
    let mine: Mine = v.validate_as(&token).await.unwrap();
    assert_eq!(mine.sub, "alice");
    assert!(mine.exp > 0);
    // Cached and uncached answers agree.
    assert_eq!(
        v.validate(&token).await.unwrap(),
        v.validate_now(&token).unwrap()
    );
}

/// Issue 14: a JWKS file is polled by the family's one file poller (its own thread), so a
/// validator over one needs no runtime, and a key set published into a `Publisher` is used
/// from the next token on — both from plain sync code.
#[test]
fn file_and_published_key_sets_work_without_a_runtime() {
    let (k1, k2) = (
        SigningKey::generate(Algorithm::ES256).unwrap(),
        SigningKey::generate(Algorithm::ES256).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, mtls_jwt::jwks_json([k1.jwk(None)])).unwrap();
    let v = Validator::builder()
        .jwks(mtls_jwt::FileJwks::new(&path).poll_interval(Duration::from_millis(5)))
        .build()
        .expect("a file JWKS builds outside a runtime");
    v.validate_now(&k1.mint(&spec()).unwrap()).unwrap();
    std::fs::write(&path, mtls_jwt::jwks_json([k2.jwk(None)])).unwrap();
    let t2 = k2.mint(&spec()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while v.validate_now(&t2).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new file not used within 10 s"
        );
        std::thread::yield_now();
    }

    // The validator's source feeds another validator; a Publisher is a source too.
    let follower = Validator::builder()
        .jwks(JwksSource::source(v.jwks().unwrap()))
        .build()
        .unwrap();
    follower.validate_now(&t2).unwrap();
    let keys = mtls_identity::source::Publisher::new(
        mtls_jwt::KeySet::from_json(&mtls_jwt::jwks_json([k1.jwk(None)])).unwrap(),
    );
    let published = Validator::builder()
        .jwks(JwksSource::source(keys.source()))
        .build()
        .unwrap();
    assert!(matches!(
        published.validate_now(&t2),
        Err(Error::UnknownKid { .. })
    ));
    keys.publish(mtls_jwt::KeySet::from_json(&mtls_jwt::jwks_json([k2.jwk(None)])).unwrap());
    published.validate_now(&t2).unwrap();
}
