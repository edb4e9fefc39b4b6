//! Issue 15: mtls-jwt's counters (Envoy `jwt_authn`'s statistics), read back through
//! `metrics-util`'s `DebuggingRecorder` after real validations, and real fetches from an
//! in-process loopback JWKS server (validator, its refresh task and the server all on the
//! test's current-thread runtime, so every task records into the test's recorder).
#![cfg(feature = "metrics")]
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../mtls-core/tests/support/metrics.rs"]
mod recorded;
mod support;

use std::time::{Duration, SystemTime};

use mtls_jwt::metrics::{
    ALLOWED, CACHE_LOOKUPS, DENIED, JWKS, JWKS_FETCHES, JWKS_KEYS, REASON, RESULT, STATE,
};
use mtls_jwt::{Algorithm, JwksSource, RemoteJwks, SigningKey, TokenSpec, Validator, jwks_json};
use recorded::{Recorded, Values};
use support::fault_server::{FaultServer, Reply};

const AUD: &str = "bookstore";

fn spec() -> TokenSpec {
    TokenSpec::new(Duration::from_secs(300)).audience(AUD)
}

fn inline(key: &SigningKey, cache: usize) -> Validator {
    Validator::builder()
        .jwks(JwksSource::inline(jwks_json([key.jwk(Some(key.kid()))])))
        .audience(AUD)
        .token_cache(cache)
        .build()
        .unwrap()
}

fn denied(values: &Values, reason: &str) -> u64 {
    values.counter(DENIED, &[(REASON, reason)])
}

fn lookups(values: &Values, result: &str) -> u64 {
    values.counter(CACHE_LOOKUPS, &[(RESULT, result)])
}

#[test]
fn each_verdict_counts_once_allowed_or_denied_by_its_envoy_reason() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let other = SigningKey::generate(Algorithm::ES256).unwrap();
    let rec = Recorded::new();
    rec.block_on(async {
        let v = inline(&key, 100);
        v.validate(&key.mint(&spec()).unwrap()).await.unwrap();
        v.validate_now(&key.mint(&spec().subject("b")).unwrap())
            .unwrap();
        // exp 100 s ago: beyond the 60 s clock skew.
        let past = SystemTime::now() - Duration::from_secs(400);
        let expired = key.mint(&spec().issued_at(past)).unwrap();
        v.validate(&expired).await.unwrap_err();
        for _ in 0..2 {
            let wrong = TokenSpec::new(Duration::from_secs(300)).audience("billing");
            v.validate(&key.mint(&wrong).unwrap()).await.unwrap_err();
        }
        // No token in the headers: counted by find_token, once, through validate_headers.
        v.validate_headers(&http::HeaderMap::new())
            .await
            .unwrap_err();
        v.validate("a.b").await.unwrap_err();
        // A kid the inline JWKS does not have.
        v.validate(&other.mint(&spec()).unwrap()).await.unwrap_err();
    });
    let values = rec.take();
    let sets = values.label_sets(DENIED);
    assert_eq!(values.counter(ALLOWED, &[]), 2);
    assert_eq!(denied(&values, "Jwt is expired"), 1, "{sets:?}");
    assert_eq!(
        denied(&values, "Audiences in Jwt are not allowed"),
        2,
        "{sets:?}"
    );
    assert_eq!(denied(&values, "Jwt is missing"), 1, "{sets:?}");
    assert_eq!(
        denied(
            &values,
            "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
        ),
        1,
        "{sets:?}"
    );
    assert_eq!(
        denied(
            &values,
            "Jwks doesn't have key to match kid or alg from Jwt"
        ),
        1,
        "{sets:?}"
    );
    assert_eq!(values.counter_total(DENIED), 6, "{sets:?}");
}

#[test]
fn a_cache_lookup_counts_once_per_verdict_and_only_with_the_cache_on() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let rec = Recorded::new();
    rec.block_on(async {
        let v = inline(&key, 100);
        let token = key.mint(&spec()).unwrap();
        v.validate(&token).await.unwrap(); // miss, verified, cached
        v.validate(&token).await.unwrap(); // hit
        v.validate_now(&token).unwrap(); // hit
        assert!(v.validate_cached(&token).unwrap().is_ok()); // hit, answered here
        // A server layer's path for a new token: validate_cached does not answer (and
        // counts nothing), the validate that follows counts the miss.
        let fresh = key.mint(&spec().subject("new")).unwrap();
        assert!(v.validate_cached(&fresh).is_none());
        v.validate(&fresh).await.unwrap();
        // With the cache off, no lookup happens and none is counted.
        let uncached = inline(&key, 0);
        uncached.validate(&token).await.unwrap();
        uncached.validate(&token).await.unwrap();
    });
    let values = rec.take();
    assert_eq!(
        lookups(&values, "hit"),
        3,
        "{:?}",
        values.label_sets(CACHE_LOOKUPS)
    );
    assert_eq!(
        lookups(&values, "miss"),
        2,
        "{:?}",
        values.label_sets(CACHE_LOOKUPS)
    );
    assert_eq!(values.counter(ALLOWED, &[]), 7);
    assert_eq!(values.counter_total(DENIED), 0);
}

#[test]
fn jwks_fetches_count_success_and_failure_and_the_key_set_shows_loaded_and_skipped() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let second = SigningKey::generate(Algorithm::RS256).unwrap();
    // Two usable keys and two that cannot verify: a symmetric key and an invalid point.
    let document = serde_json::json!({"keys": [
        key.jwk(Some(key.kid())),
        second.jwk(Some(second.kid())),
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"},
        {"kty": "EC", "kid": "bad", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
    ]})
    .to_string();
    let rec = Recorded::new();
    let (url, values) = rec.block_on(async {
        // The first fetch gets a 500, the retry (50 ms later) the keys.
        let server =
            FaultServer::start("127.0.0.1", vec![Reply::Status(500)], Reply::Json(document)).await;
        let url = server.url("/jwks");
        let v = Validator::builder()
            .jwks(RemoteJwks::new(url.clone()).retry_interval(Duration::from_millis(50)))
            .audience(AUD)
            .build()
            .unwrap();
        assert!(v.wait_for_keys(Duration::from_secs(10)).await, "keys");
        v.validate(&key.mint(&spec()).unwrap()).await.unwrap();
        // The server fails again: an explicit refresh counts one more failure.
        server.set_default(Reply::Status(503));
        v.refresh().await.unwrap_err();
        (url, rec.take())
    });
    let fetches = |result: &str| values.counter(JWKS_FETCHES, &[(RESULT, result), (JWKS, &url)]);
    let sets = values.label_sets(JWKS_FETCHES);
    assert_eq!(fetches("failure"), 2, "{sets:?}");
    assert_eq!(fetches("success"), 1, "{sets:?}");
    let keys = |state: &str| values.gauge(JWKS_KEYS, &[(STATE, state), (JWKS, &url)]);
    assert_eq!(
        keys("loaded"),
        Some(2.0),
        "{:?}",
        values.label_sets(JWKS_KEYS)
    );
    assert_eq!(
        keys("skipped"),
        Some(2.0),
        "{:?}",
        values.label_sets(JWKS_KEYS)
    );
    assert_eq!(values.counter(ALLOWED, &[]), 1);
}

#[test]
fn an_inline_jwks_shows_its_keys_and_fetches_nothing() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let rec = Recorded::new();
    rec.run(|| inline(&key, 100));
    let values = rec.take();
    assert_eq!(
        values.gauge(JWKS_KEYS, &[(STATE, "loaded"), (JWKS, "inline JWKS")]),
        Some(1.0)
    );
    assert_eq!(
        values.gauge(JWKS_KEYS, &[(STATE, "skipped"), (JWKS, "inline JWKS")]),
        Some(0.0)
    );
    assert_eq!(values.counter_total(JWKS_FETCHES), 0);
}
