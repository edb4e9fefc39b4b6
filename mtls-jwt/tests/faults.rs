//! Issue 25: a remote JWKS server that misbehaves on purpose (in-process loopback HTTP and
//! HTTPS servers with a test PKI made here): body limits (the endless body is in
//! body_limit.rs, alone in its process for the RSS measure), redirects to other hosts
//! and from https to http, failures at start-up, a hanging server under 1,000 concurrent
//! unknown-kid tokens; and what the errors say.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use mtls_jwt::{Algorithm, Error, RemoteJwks, SigningKey, TokenSpec, Validator};
use support::fault_server::{FaultServer, Reply, TestPki};

fn token(key: &SigningKey) -> String {
    key.mint(&TokenSpec::new(Duration::from_secs(300))).unwrap()
}

fn jwks(keys: &[&SigningKey]) -> String {
    mtls_jwt::jwks_json(keys.iter().map(|k| k.jwk(None)))
}

fn build(source: RemoteJwks) -> Validator {
    Validator::builder()
        .jwks(source)
        .first_fetch_wait(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// How often `needle` occurs in `text`.
fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

fn is_unknown_kid(e: &Error) -> bool {
    matches!(e, Error::UnknownKid { .. })
}

/// 1,000 concurrent validations of `token`, each failing as `expected` says: how long each
/// took, sorted.
async fn burst(v: &Validator, token: &str, expected: fn(&Error) -> bool) -> Vec<Duration> {
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let v = v.clone();
            let t = token.to_owned();
            tokio::spawn(async move {
                let started = Instant::now();
                let result = v.validate(&t).await;
                (started.elapsed(), result)
            })
        })
        .collect();
    let mut times = Vec::new();
    for t in tasks {
        let (took, result) = t.await.unwrap();
        assert!(result.as_ref().is_err_and(expected), "{result:?}");
        times.push(took);
    }
    times.sort();
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smaller_body_limit_applies_to_a_declared_length_too() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let body = jwks(&[&key]);
    let server = FaultServer::start("127.0.0.1", vec![], Reply::Json(body.clone())).await;
    let v = build(RemoteJwks::new(server.url("/jwks")).max_body_size(body.len() - 1));
    let err = v.validate(&token(&key)).await.unwrap_err();
    let limit = format!("{} bytes", body.len() - 1);
    assert!(err.to_string().contains(&limit), "{err}");
    let v = build(RemoteJwks::new(server.url("/jwks")).max_body_size(body.len()));
    v.validate(&token(&key)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_host_is_refused_by_default() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    // The keys live on another loopback host, which the URL policy itself allows.
    let keys = FaultServer::start("127.0.0.2", vec![], Reply::Json(jwks(&[&key]))).await;
    let location = keys.url("/keys");
    let redirect = FaultServer::start("127.0.0.1", vec![], Reply::Redirect(location.clone())).await;

    let v = build(RemoteJwks::new(redirect.url("/jwks")));
    let err = v.validate(&token(&key)).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::JwksFetchFailed { .. }), "{text}");
    assert!(
        text.contains("302") && text.contains(&location) && text.contains("not allowed"),
        "names the status and the Location: {text}"
    );
    assert_eq!(keys.hits(), 0, "the hop was never made");

    // Opted in: the hop is checked by the URL policy, and followed.
    let v = build(RemoteJwks::new(redirect.url("/jwks")).follow_redirects(true));
    v.validate(&token(&key)).await.unwrap();
    assert!(keys.hits() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_to_http_redirect_is_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let pki = TestPki::new();
    let plain = FaultServer::start("127.0.0.1", vec![], Reply::Json(jwks(&[&key]))).await;
    let location = plain.url("/keys");
    let https = FaultServer::start_tls(&pki, vec![], Reply::Redirect(location.clone())).await;
    let good = FaultServer::start_tls(&pki, vec![], Reply::Json(jwks(&[&key]))).await;
    let ca = || reqwest::Certificate::from_der(&pki.ca_der).unwrap();

    // Our defaults with the test CA: the HTTPS server itself is fine...
    let ours = RemoteJwks::client_builder()
        .add_root_certificate(ca())
        .build()
        .unwrap();
    let v = build(RemoteJwks::new(good.url("/jwks")).http_client(ours.clone()));
    v.validate(&token(&key)).await.unwrap();
    // ...and its redirect to plain http is not followed.
    let v = build(RemoteJwks::new(https.url("/jwks")).http_client(ours));
    let text = v.validate(&token(&key)).await.unwrap_err().to_string();
    assert!(text.contains("302") && text.contains(&location), "{text}");

    // With the checked policy: the hop is refused before it is made.
    let checked = RemoteJwks::client_builder()
        .add_root_certificate(ca())
        .redirect(RemoteJwks::redirect_policy())
        .build()
        .unwrap();
    let v = build(RemoteJwks::new(https.url("/jwks")).http_client(checked));
    let text = v.validate(&token(&key)).await.unwrap_err().to_string();
    assert!(text.contains("https to plain http"), "{text}");
    assert_eq!(plain.hits(), 0, "no request went out in plain text");

    // A caller's client that follows anything: the keys it got over http are not trusted.
    let careless = reqwest::Client::builder()
        .add_root_certificate(ca())
        .build()
        .unwrap();
    let v = build(RemoteJwks::new(https.url("/jwks")).http_client(careless));
    let text = v.validate(&token(&key)).await.unwrap_err().to_string();
    assert!(text.contains("https to plain http"), "{text}");
    assert!(v.key_ids().is_empty());
    assert!(plain.hits() >= 1, "that client did follow the hop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_500s_at_start_up_then_keys_within_5_s() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let server = FaultServer::start(
        "127.0.0.1",
        vec![Reply::Status(500), Reply::Status(500), Reply::Status(500)],
        Reply::Json(jwks(&[&key])),
    )
    .await;
    let started = Instant::now();
    let v = build(RemoteJwks::new(server.url("/jwks")));
    let good = token(&key);
    let mut failures = 0;
    loop {
        let asked = Instant::now();
        match v.validate(&good).await {
            Ok(_) => break,
            Err(e) => {
                failures += 1;
                let text = e.to_string();
                assert!(text.contains("500"), "names the failure: {text}");
                assert_eq!(count(&text, "Jwks remote fetch is failed"), 1, "{text}");
                // Told at once, not after a 10 s wait for keys that are not coming.
                assert!(
                    asked.elapsed() < Duration::from_secs(2),
                    "{:?}",
                    asked.elapsed()
                );
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no keys 5 s after start-up ({} requests, {failures} failed validations)",
            server.hits()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.hits() >= 4, "three 500s, then the keys");
    assert!(failures >= 1, "the 500s were seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_server_holds_no_request() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let server =
        FaultServer::start("127.0.0.1", vec![Reply::Json(jwks(&[&key]))], Reply::Hang).await;
    let v = build(RemoteJwks::new(server.url("/jwks")));
    assert!(v.wait_for_keys(Duration::from_secs(10)).await);
    let stranger = token(&SigningKey::generate(Algorithm::ES256).unwrap());

    // No fetch in flight: one token starts the refetch (which hangs) and waits for it at
    // most `miss_wait` (1 s); the 999 others are rate-limited at once.
    let times = burst(&v, &stranger, is_unknown_kid).await;
    let slow: Vec<_> = times
        .iter()
        .filter(|t| **t >= Duration::from_millis(100))
        .collect();
    assert!(
        slow.len() <= 1,
        "{} of 1,000 held 100 ms or more, e.g. {:?}",
        slow.len(),
        &slow[..slow.len().min(5)]
    );
    assert!(times[999] < Duration::from_secs(3), "{:?}", times[999]);
    assert_eq!(server.hits(), 2, "one refetch for 1,000 misses");

    // A fetch hanging in flight (the refetch above, up to its 10 s timeout), the rate-limit
    // window open again: no token queues behind the fetch — each answered within 100 ms.
    server.set_default(Reply::Json(jwks(&[&key])));
    let v =
        build(RemoteJwks::new(server.url("/jwks")).refetch_min_interval(Duration::from_millis(1)));
    assert!(v.wait_for_keys(Duration::from_secs(10)).await);
    server.set_default(Reply::Hang);
    let refresher = {
        let v = v.clone();
        tokio::spawn(async move { v.refresh().await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.hits() < 4 {
        assert!(
            Instant::now() < deadline,
            "the refresh never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let times = burst(&v, &stranger, is_unknown_kid).await;
    assert!(
        times[999] < Duration::from_millis(100),
        "slowest of 1,000: {:?}",
        times[999]
    );
    assert!(!refresher.is_finished(), "the fetch was hanging all along");
    refresher.abort();
    // Known keys were never held either.
    v.validate_now(&token(&key)).unwrap();
}

/// No keys, no fetch in flight and the background retry a minute away: a token starts a
/// fetch itself (one, for its own wait of at most `miss_wait`) and is validated by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_with_no_keys_loaded_starts_a_fetch() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let server = FaultServer::start(
        "127.0.0.1",
        vec![Reply::Status(500)],
        Reply::Json(jwks(&[&key])),
    )
    .await;
    let v = build(RemoteJwks::new(server.url("/jwks")).retry_interval(Duration::from_secs(60)));
    // The start-up fetch: a 500.
    assert!(!v.wait_for_keys(Duration::from_secs(1)).await);
    assert_eq!(server.hits(), 1);
    let good = token(&key);
    // The next token fetches (the retry would come only a minute later).
    let asked = Instant::now();
    v.validate(&good).await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(server.hits(), 2, "one fetch, started by the token");
}

/// A JWKS server hanging from the start: a token waits for the first fetch only within
/// `first_fetch_wait` of the build. After that window — the first fetch still hanging, then
/// a retry hanging — 1,000 concurrent tokens are each answered within 100 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_hanging_from_start_up_holds_tokens_only_in_the_start_up_window() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let server = FaultServer::start("127.0.0.1", vec![], Reply::Hang).await;
    let built = Instant::now();
    let v = Validator::builder()
        .jwks(RemoteJwks::new(server.url("/jwks")).fetch_timeout(Duration::from_secs(5)))
        .first_fetch_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let good = token(&key);
    let no_keys = |e: &Error| matches!(e, Error::JwksFetchFailed { .. });

    // In the window: held for the first fetch until the window closes, not its 5 s timeout.
    let err = v.validate(&good).await.unwrap_err();
    let held = built.elapsed();
    assert!(no_keys(&err), "{err}");
    assert!(
        held >= Duration::from_millis(900) && held < Duration::from_millis(2500),
        "held {held:?} (first_fetch_wait 1 s, fetch_timeout 5 s)"
    );

    // After it, the first fetch still hanging: nobody waits for it.
    let times = burst(&v, &good, no_keys).await;
    assert!(
        times[999] < Duration::from_millis(100),
        "slowest of 1,000: {:?}",
        times[999]
    );
    assert!(
        built.elapsed() < Duration::from_secs(5),
        "the first fetch was still hanging"
    );
    assert_eq!(server.hits(), 1, "those tokens started no fetch");

    // The first fetch timed out; a retry hangs in flight: still nobody waits, and each is
    // told what the last fetch ran into.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.hits() < 2 {
        assert!(Instant::now() < deadline, "no retry after the timeout");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let times = burst(&v, &good, no_keys).await;
    assert!(
        times[999] < Duration::from_millis(100),
        "slowest of 1,000: {:?}",
        times[999]
    );
    let text = v.validate(&good).await.unwrap_err().to_string();
    assert!(text.contains("timed out"), "{text}");
    assert_eq!(server.hits(), 2, "one retry in flight, no fetch per token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_say_who_they_are() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let server = FaultServer::start("127.0.0.1", vec![], Reply::Json(jwks(&[&key]))).await;
    let v = build(RemoteJwks::new(server.url("/jwks")));
    v.validate(&token(&key)).await.unwrap();
    assert_eq!(
        server.user_agents(),
        [concat!("mtls-jwt/", env!("CARGO_PKG_VERSION"))]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_errors_keep_their_cause_said_once() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let good = token(&key);
    let check = |text: &str, cause: &str| {
        assert!(text.contains(cause), "expected {cause:?} in: {text}");
        assert_eq!(count(text, "Jwks remote fetch is failed"), 1, "{text}");
        assert!(
            !text.contains("Error {") && !text.contains("Some("),
            "no Debug: {text}"
        );
    };

    // Connection refused: nothing listens on the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/jwks");
    let v = build(RemoteJwks::new(url.clone()));
    let text = v.validate(&good).await.unwrap_err().to_string();
    check(&text, "Connection refused");
    assert_eq!(count(&text, &url), 1, "the URL said once: {text}");
    let text = v.refresh().await.unwrap_err().to_string();
    check(&text, "Connection refused");

    // Timed out: the server never answers.
    let hang = FaultServer::start("127.0.0.1", vec![], Reply::Hang).await;
    let v = build(RemoteJwks::new(hang.url("/jwks")).fetch_timeout(Duration::from_millis(300)));
    let text = v.validate(&good).await.unwrap_err().to_string();
    check(&text, "timed out");

    // TLS: a server certificate from a CA nobody trusts.
    let pki = TestPki::new();
    let tls = FaultServer::start_tls(&pki, vec![], Reply::Json(jwks(&[&key]))).await;
    let v = build(RemoteJwks::new(tls.url("/jwks")));
    let text = v.validate(&good).await.unwrap_err().to_string();
    check(&text, "certificate");
}

/// A PyJWT-made JWKS with two keys under one `kid`, fetched: a token signed by the second
/// verifies (Envoy tries each key of the `kid`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_jwks_with_a_shared_kid_tries_each_key() {
    let py = support::PyTokens::get();
    let server = FaultServer::start("127.0.0.1", vec![], Reply::Json(py.jwks.to_string())).await;
    let v = build(RemoteJwks::new(server.url("/jwks")));
    let claims = v.validate(py.token("shared-kid-second")).await.unwrap();
    assert_eq!(claims.kid(), Some("k-shared"));
    // Not any key would do: a token of the same kid signed elsewhere still fails.
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    let spec = TokenSpec::new(Duration::from_secs(300)).kid("k-shared");
    let err = v
        .validate(&stranger.mint(&spec).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::BadSignature), "{err}");
}
