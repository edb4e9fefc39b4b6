//! mTLS server with AuthzLayer and JwtLayer: handshake rejection, per-method SPIFFE policy,
//! JWT failures mapped as Envoy maps them, subject bound to the peer; a verified-token cache
//! hit decided without validating again, the binding and the claims as on a first call.
// Tests panic on failure by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mtls_core::Authorize;
use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenSpec, Validator, jwks_json};
use mtls_tonic::{
    authz::{AuthzLayer, MethodPolicy},
    client::{BearerInterceptor, MtlsConnector, StaticToken},
    jwt::{JwtError, JwtLayer, JwtRules, TokenValidator},
    server::MtlsIncoming,
};
use support::pki::{CLIENT_ID, Pki, SERVICE_NAME};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, service::interceptor::InterceptedService, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ISSUER: &str = "https://issuer.example.org";
const AUDIENCE: &str = "bookstore";

/// The token issuer's key (ES256), shared by the tests of this file.
fn signing_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(Algorithm::ES256).unwrap())
}

/// mtls-jwt's validator over the issuer's JWKS, as a server would configure it.
fn validator() -> Validator {
    let key = signing_key();
    Validator::builder()
        .jwks(JwksSource::inline(jwks_json([key.jwk(Some(key.kid()))])))
        .issuer(ISSUER)
        .audience(AUDIENCE)
        .build()
        .unwrap()
}

/// What a token for `sub` and `aud` from [`ISSUER`] says, valid for ten minutes from now.
fn spec(sub: &str, aud: &str) -> TokenSpec {
    TokenSpec::new(Duration::from_secs(600))
        .issuer(ISSUER)
        .subject(sub)
        .audience(aud)
}

/// [`spec`] signed with the issuer's key.
fn token(sub: &str, aud: &str) -> String {
    signing_key().mint(&spec(sub, aud)).unwrap()
}

/// Check: any member of example.org, with a token whose sub is the peer. Watch: admin only.
async fn server(pki: &Pki) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    server_with(pki, Arc::new(validator())).await
}

/// [`server`] validating tokens with `validator`.
async fn server_with<V: TokenValidator>(
    pki: &Pki,
    validator: Arc<V>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    server_denying(pki, validator, false).await
}

/// [`server_with`], with both layers' `detailed_denials(detailed)`.
async fn server_denying<V: TokenValidator>(
    pki: &Pki,
    validator: Arc<V>,
    detailed: bool,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let config = pki.server_config(Pki::member_policy());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = MtlsIncoming::new(listener, config);
    let policy = MethodPolicy::deny_by_default()
        .allow("/grpc.health.v1.Health/Check", Pki::member_policy())
        .unwrap()
        .allow(
            "/grpc.health.v1.Health/Watch",
            Authorize::exact("spiffe://example.org/ns/default/sa/admin".parse().unwrap()),
        )
        .unwrap();
    let rules = JwtRules::require_all().bind_subject_to_peer();
    let (_reporter, service) = support::replica::probe("solo");
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(AuthzLayer::new(policy).detailed_denials(detailed))
            .layer(JwtLayer::new(validator, rules).detailed_denials(detailed))
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    (addr, task)
}

fn client(
    channel: Channel,
    bearer: String,
) -> HealthClient<InterceptedService<Channel, BearerInterceptor>> {
    HealthClient::with_interceptor(channel, BearerInterceptor::new(StaticToken::new(bearer)))
}

async fn check(
    pki: &Pki,
    addr: SocketAddr,
    bearer: Option<String>,
) -> Result<String, tonic::Status> {
    let channel = support::mtls_channel(pki.client_config(CLIENT_ID), addr).await;
    let response = match bearer {
        Some(b) => {
            client(channel, b)
                .check(HealthCheckRequest::default())
                .await?
        }
        None => {
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await?
        }
    };
    Ok(support::meta(&response, "x-peer"))
}

/// A Check call as [`CLIENT_ID`] presenting `bearer` (`None`: no token) to a fresh
/// [`server`], which must refuse it with `code`: the refusal's message.
async fn refused(bearer: Option<String>, code: Code) -> String {
    support::init_tracing();
    let pki = Pki::new();
    let (addr, task) = server(&pki).await;
    let status = check(&pki, addr, bearer).await.unwrap_err();
    task.abort();
    assert_eq!(status.code(), code, "{status:?}");
    status.message().to_owned()
}

/// Asserts that `message` starts with `prefix` and names each of `names`.
fn assert_message(message: &str, prefix: &str, names: &[&str]) {
    assert!(
        message.starts_with(prefix),
        "expected a message starting {prefix:?}, saw {message:?}"
    );
    for name in names {
        assert!(
            message.contains(name),
            "expected a message naming {name:?}, saw {message:?}"
        );
    }
}

#[tokio::test]
async fn allowed_peer_with_bound_token_reaches_handler_with_identity() {
    support::init_tracing();
    let pki = Pki::new();
    let (addr, task) = server(&pki).await;
    let peer = check(&pki, addr, Some(token(CLIENT_ID, AUDIENCE)))
        .await
        .unwrap();
    assert_eq!(peer, CLIENT_ID, "handler saw request.peer_identity()");
    task.abort();
}

#[tokio::test]
async fn intruder_certificate_fails_the_handshake() {
    support::init_tracing();
    let pki = Pki::new();
    let (addr, task) = server(&pki).await;
    let connector = MtlsConnector::new(pki.intruder_client_config())
        .server_name(SERVICE_NAME)
        .unwrap();
    // TLS 1.3: the client's side of the handshake completes before the server has judged our
    // certificate; the server's verdict arrives as an alert on the first read.
    let outcome = async {
        let mut tls = connector
            .connect(addr, None)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        match tls.read(&mut buf).await {
            Ok(0) => Err("closed".to_owned()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    let error = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        error.contains("alert") || error.contains("closed"),
        "{error}"
    );
    task.abort();
}

#[tokio::test]
async fn method_not_allowed_is_permission_denied() {
    support::init_tracing();
    let pki = Pki::new();
    let (addr, task) = server(&pki).await;
    let channel = support::mtls_channel(pki.client_config(CLIENT_ID), addr).await;
    let mut health = client(channel, token(CLIENT_ID, AUDIENCE));
    let status = health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let watch = "/grpc.health.v1.Health/Watch";
    assert_message(status.message(), "", &[CLIENT_ID, watch]);
    task.abort();
}

/// A denied caller is told who was refused for what, never who would be let in, what
/// audience or issuer is expected; the server's log has all of it; `detailed_denials(true)`
/// tells the caller too. current_thread: the server logs under this thread's subscriber.
#[tokio::test]
async fn denials_tell_the_caller_no_policy_and_the_log_everything() {
    const ADMIN: &str = "spiffe://example.org/ns/default/sa/admin";
    let (captured, _guard) = support::CapturedLogs::warnings();
    let pki = Pki::new();
    let other_issuer = signing_key()
        .mint(&spec(CLIENT_ID, AUDIENCE).issuer("https://elsewhere.example.org"))
        .unwrap();
    for detailed in [false, true] {
        let (addr, task) = server_denying(&pki, Arc::new(validator()), detailed).await;
        // The SPIFFE policy: Watch is for the admin only.
        let channel = support::mtls_channel(pki.client_config(CLIENT_ID), addr).await;
        let status = client(channel, token(CLIENT_ID, AUDIENCE))
            .watch(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        let refused = format!("peer {CLIENT_ID} may not call /grpc.health.v1.Health/Watch");
        if detailed {
            assert_eq!(status.message(), format!("{refused}: expected {ADMIN}"));
        } else {
            assert_eq!(status.message(), refused);
        }
        // The JWT rules: audience and issuer.
        let audience = check(&pki, addr, Some(token(CLIENT_ID, "someone-else")))
            .await
            .unwrap_err();
        let issuer = check(&pki, addr, Some(other_issuer.clone()))
            .await
            .unwrap_err();
        assert_eq!(audience.code(), Code::PermissionDenied, "{audience:?}");
        assert_eq!(issuer.code(), Code::Unauthenticated, "{issuer:?}");
        let (aud_text, iss_text) = (audience.message(), issuer.message());
        assert!(
            aud_text.starts_with("Audiences in Jwt are not allowed: presented [\"someone-else\"]"),
            "{aud_text}"
        );
        assert!(
            iss_text.starts_with(
                "Jwt issuer is not configured: presented \"https://elsewhere.example.org\""
            ),
            "{iss_text}"
        );
        for text in [aud_text, iss_text] {
            assert_eq!(text.contains("expected"), detailed, "{text}");
            assert_eq!(
                text.contains(&format!("\"{AUDIENCE}\"")),
                detailed && text == aud_text,
                "{text}"
            );
            assert_eq!(
                text.contains(ISSUER),
                detailed && text == iss_text,
                "{text}"
            );
        }
        task.abort();
    }
    // Both servers logged every denial with what was expected.
    let log = captured.text();
    let denied =
        format!("peer {CLIENT_ID} may not call /grpc.health.v1.Health/Watch: expected {ADMIN}");
    assert_eq!(log.matches(&denied).count(), 2, "{log}");
    assert_eq!(
        log.matches(&format!("expected one of [\"{AUDIENCE}\"]"))
            .count(),
        2,
        "{log}"
    );
    assert_eq!(
        log.matches(&format!("expected one of [\"{ISSUER}\"]"))
            .count(),
        2,
        "{log}"
    );
}

/// A flood of denials is a few log lines per second, the rest counted on the next line.
#[tokio::test]
async fn denial_logs_are_rate_limited() {
    let (captured, _guard) = support::CapturedLogs::warnings();
    let pki = Pki::new();
    let (addr, task) = server(&pki).await;
    let channel = support::mtls_channel(pki.client_config(CLIENT_ID), addr).await;
    let mut health = client(channel, token(CLIENT_ID, AUDIENCE));
    for _ in 0..30 {
        let status = health
            .watch(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let burst = captured.text().matches("call denied").count();
    // 30 denials in well under a second: the first window's 5 lines (a slow machine may
    // straddle two windows: 10).
    assert!(
        (5..=10).contains(&burst),
        "{burst} lines:\n{}",
        captured.text()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    health
        .watch(HealthCheckRequest::default())
        .await
        .unwrap_err();
    let log = captured.text();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains("call denied"))
        .unwrap();
    let unlogged = 30 - burst as u64;
    assert!(
        last.contains(&format!("unlogged_since_last_line={unlogged}")),
        "{last}"
    );
    task.abort();
}

#[tokio::test]
async fn missing_token_is_unauthenticated() {
    let message = refused(None, Code::Unauthenticated).await;
    assert_eq!(message, "Jwt is missing");
}

#[tokio::test]
async fn wrong_audience_is_permission_denied() {
    let wrong = token(CLIENT_ID, "someone-else");
    let message = refused(Some(wrong), Code::PermissionDenied).await;
    assert_message(&message, "Audiences in Jwt are not allowed", &[]);
}

#[tokio::test]
async fn garbage_token_is_unauthenticated() {
    let message = refused(Some("not.a.jwt".into()), Code::Unauthenticated).await;
    assert_message(&message, "Jwt header is an invalid JSON", &[]);
}

#[tokio::test]
async fn subject_other_than_peer_is_permission_denied() {
    let other = token("spiffe://example.org/ns/default/sa/other", AUDIENCE);
    let message = refused(Some(other), Code::PermissionDenied).await;
    assert_message(&message, "", &[CLIENT_ID]);
}

#[tokio::test]
async fn silent_client_does_not_stall_accepts() {
    support::init_tracing();
    let pki = Pki::new();
    let config = pki.server_config(Pki::member_policy());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = mtls_tonic::server::ServerOptions::default()
        .handshake_timeout(Duration::from_secs(5))
        .max_concurrent_handshakes(8);
    let incoming = MtlsIncoming::configured(listener, config, options);
    let (_reporter, service) = support::replica::probe("solo");
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    // Four clients that connect and say nothing, one that sends garbage.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut garbage = tokio::net::TcpStream::connect(addr).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // A real client is served well within the 5 s handshake timeout of the silent ones.
    let started = std::time::Instant::now();
    let channel = support::mtls_channel(pki.client_config(CLIENT_ID), addr).await;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
    task.abort();
}

#[tokio::test]
async fn expired_token_is_unauthenticated() {
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let expired = signing_key()
        .mint(&spec(CLIENT_ID, AUDIENCE).issued_at(an_hour_ago))
        .unwrap();
    let message = refused(Some(expired), Code::Unauthenticated).await;
    assert_message(&message, "Jwt is expired", &[]);
}

#[tokio::test]
async fn token_signed_by_another_key_is_unauthenticated() {
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    let forged = stranger.mint(&spec(CLIENT_ID, AUDIENCE)).unwrap();
    let message = refused(Some(forged), Code::Unauthenticated).await;
    let unknown_key = "Jwks doesn't have key to match kid or alg from Jwt";
    assert_message(&message, unknown_key, &[stranger.kid()]);
}

#[tokio::test]
async fn token_from_another_issuer_is_unauthenticated() {
    let elsewhere = spec(CLIENT_ID, AUDIENCE).issuer("https://elsewhere.example.org");
    let other = signing_key().mint(&elsewhere).unwrap();
    let message = refused(Some(other), Code::Unauthenticated).await;
    assert_message(
        &message,
        "Jwt issuer is not configured",
        &["elsewhere.example.org"],
    );
}

/// mtls-jwt's validator, counting which way the layer asked: a full validation, or a
/// verified-token cache hit answered synchronously.
#[derive(Default)]
struct Counted {
    validator: Option<Validator>,
    validations: AtomicUsize,
    cache_hits: AtomicUsize,
}

impl Counted {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            validator: Some(validator()),
            ..Self::default()
        })
    }

    fn inner(&self) -> &Validator {
        self.validator.as_ref().unwrap()
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.validations.load(Ordering::SeqCst),
            self.cache_hits.load(Ordering::SeqCst),
        )
    }
}

impl TokenValidator for Counted {
    type Claims = mtls_jwt::Claims;

    fn validate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Self::Claims, JwtError>> + Send + 'a>> {
        self.validations.fetch_add(1, Ordering::SeqCst);
        TokenValidator::validate(self.inner(), token)
    }

    fn validate_cached(&self, token: &str) -> Option<Result<Self::Claims, JwtError>> {
        let verdict = TokenValidator::validate_cached(self.inner(), token);
        if verdict.is_some() {
            self.cache_hits.fetch_add(1, Ordering::SeqCst);
        }
        verdict
    }

    fn subject<'c>(&self, claims: &'c Self::Claims) -> Option<&'c str> {
        TokenValidator::subject(self.inner(), claims)
    }

    fn find_token<'h>(&self, headers: &'h http::HeaderMap) -> Result<&'h str, JwtError> {
        TokenValidator::find_token(self.inner(), headers)
    }
}

#[tokio::test]
async fn a_cached_token_is_not_validated_again_and_stays_bound_to_the_peer() {
    support::init_tracing();
    let pki = Pki::new();
    let counted = Counted::new();
    let (addr, task) = server_with(&pki, counted.clone()).await;
    let mut health = client(
        support::mtls_channel(pki.client_config(CLIENT_ID), addr).await,
        token(CLIENT_ID, AUDIENCE),
    );
    for call in 1..=3 {
        let response = health.check(HealthCheckRequest::default()).await.unwrap();
        assert_eq!(
            response.metadata().get("x-peer").unwrap().to_str().unwrap(),
            CLIENT_ID,
            "call {call} reached the handler with the peer's identity"
        );
    }
    assert_eq!(
        counted.counts(),
        (1, 2),
        "(validations, cache hits): the first call validated, the next two were cache hits"
    );

    // A verified token whose `sub` is another workload: refused on the cache hit too.
    let mut stolen = client(
        support::mtls_channel(pki.client_config(CLIENT_ID), addr).await,
        token("spiffe://example.org/ns/default/sa/other", AUDIENCE),
    );
    for call in 1..=2 {
        let status = stolen
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "call {call}: {status:?}"
        );
        assert!(
            status.message().contains(CLIENT_ID)
                && status
                    .message()
                    .contains("spiffe://example.org/ns/default/sa/other"),
            "call {call}: {}",
            status.message()
        );
    }
    assert_eq!(
        counted.counts(),
        (2, 3),
        "the stolen token was a cache hit the second time"
    );
    task.abort();
}

#[tokio::test]
async fn a_cache_hit_hands_the_claims_to_the_handler() {
    use tower::{Layer, ServiceExt};
    let counted = Counted::new();
    let handler = tower::service_fn(|request: http::Request<()>| async move {
        let claims = request.extensions().get::<mtls_jwt::Claims>().unwrap();
        let mut response = http::Response::new(String::new());
        let sub = claims.subject().unwrap().parse().unwrap();
        response.headers_mut().insert("x-sub", sub);
        Ok::<_, Infallible>(response)
    });
    let service = JwtLayer::new(counted.clone(), JwtRules::require_all()).layer(handler);
    let bearer = format!("Bearer {}", token(CLIENT_ID, AUDIENCE));
    for call in 1..=2 {
        let request = http::Request::builder()
            .uri("/bookstore.Bookstore/GetBook")
            .header("authorization", &bearer)
            .body(())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.headers()["x-sub"], CLIENT_ID, "call {call}");
    }
    assert_eq!(counted.counts(), (1, 1), "(validations, cache hits)");
}
