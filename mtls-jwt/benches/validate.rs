//! Validations per second: our validator (uncached and cached) vs raw `jsonwebtoken::decode`
//! with the same key, the same checks (iss, aud, exp) and the same token, in the same run.
// A bench may panic on a broken setup.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator};

fn bench_alg(c: &mut Criterion, alg: Algorithm, jwt_alg: jsonwebtoken::Algorithm) {
    let key = SigningKey::generate(alg).unwrap();
    let token = key
        .mint(
            &TokenSpec::new(Duration::from_secs(3600))
                .issuer("https://issuer.test")
                .audience("bookstore")
                .subject("spiffe://example.org/client")
                .claim("scope", "read write"),
        )
        .unwrap();
    let jwks = mtls_jwt::jwks_json([key.jwk(None)]);
    let build = |cache| {
        Validator::builder()
            .jwks(JwksSource::inline(jwks.clone()))
            .issuer("https://issuer.test")
            .audience("bookstore")
            .token_cache(cache)
            .build()
            .unwrap()
    };
    let uncached = build(0);
    let cached = build(100);

    // The raw baseline: the key decoded from the same JWK, the same checks.
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk(None)).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jwt_alg);
    validation.set_issuer(&["https://issuer.test"]);
    validation.set_audience(&["bookstore"]);

    jsonwebtoken::decode::<serde_json::Value>(&token, &decoding, &validation).unwrap();
    uncached.validate_now(&token).unwrap();

    let mut group = c.benchmark_group(alg.as_str());
    group.bench_function("jsonwebtoken::decode", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &decoding, &validation)
                .unwrap()
        })
    });
    group.bench_function("mtls_jwt uncached", |b| {
        b.iter(|| uncached.validate_now(black_box(&token)).unwrap())
    });
    group.bench_function("mtls_jwt cached", |b| {
        b.iter(|| cached.validate_now(black_box(&token)).unwrap())
    });
    group.finish();
}

fn validate(c: &mut Criterion) {
    bench_alg(c, Algorithm::ES256, jsonwebtoken::Algorithm::ES256);
    bench_alg(c, Algorithm::RS256, jsonwebtoken::Algorithm::RS256);
}

criterion_group!(benches, validate);
criterion_main!(benches);
