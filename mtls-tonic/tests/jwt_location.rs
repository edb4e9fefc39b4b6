//! Issue 13 item 9: `JwtLayer` finds the token exactly where the validator is configured
//! to look (`ValidatorBuilder::token_location`), and reads every `authorization` header the
//! way `Validator::validate_headers` does — one extraction path, one bearer parser.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::time::Duration;

use mtls_jwt::{Algorithm, JwksSource, SigningKey, TokenLocation, TokenSpec, Validator, jwks_json};
use mtls_tonic::jwt::{JwtLayer, JwtRules};
use tower::{Layer, ServiceExt};

/// Calls a JwtLayer-wrapped handler with `headers`; the gRPC status it answered (0 when
/// the handler ran).
async fn status_of(validator: Validator, headers: &[(&str, &str)]) -> i32 {
    let handler = tower::service_fn(|request: http::Request<()>| async move {
        assert!(request.extensions().get::<mtls_jwt::Claims>().is_some());
        Ok::<_, Infallible>(http::Response::new(String::new()))
    });
    let service = JwtLayer::new(validator, JwtRules::require_all()).layer(handler);
    let mut request = http::Request::builder().uri("/bookstore.Bookstore/GetBook");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = service.oneshot(request.body(()).unwrap()).await.unwrap();
    response
        .headers()
        .get("grpc-status")
        .map_or(0, |v| v.to_str().unwrap().parse().unwrap())
}

fn setup() -> (SigningKey, String) {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let token = key.mint(&TokenSpec::new(Duration::from_secs(300))).unwrap();
    (key, token)
}

fn validator(key: &SigningKey, location: TokenLocation) -> Validator {
    Validator::builder()
        .jwks(JwksSource::inline(jwks_json([key.jwk(None)])))
        .token_location(location)
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_layer_reads_the_validators_custom_header() {
    let (key, token) = setup();
    let v = validator(&key, TokenLocation::header("x-jwt-assertion").unwrap());
    assert_eq!(
        status_of(v.clone(), &[("x-jwt-assertion", &token)]).await,
        0
    );
    // The validator does not look at `authorization`, so neither does the layer.
    let bearer = format!("Bearer {token}");
    assert_eq!(status_of(v, &[("authorization", &bearer)]).await, 16);
}

#[tokio::test]
async fn the_layer_reads_a_prefixed_custom_header() {
    let (key, token) = setup();
    let location = TokenLocation::Header {
        name: http::HeaderName::from_static("x-token"),
        prefix: Some("Token ".into()),
    };
    let v = validator(&key, location);
    let value = format!("Token {token}");
    assert_eq!(status_of(v.clone(), &[("x-token", &value)]).await, 0);
    assert_eq!(status_of(v, &[("x-token", &token)]).await, 16);
}

#[tokio::test]
async fn the_layer_reads_every_authorization_header_as_the_validator_does() {
    let (key, token) = setup();
    let v = validator(&key, TokenLocation::Authorization);
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", "Basic dXNlcjpwYXNz"),
        ("authorization", bearer.as_str()),
    ];
    let mut map = http::HeaderMap::new();
    for (n, value) in headers {
        map.append(n, value.parse().unwrap());
    }
    // The library finds it...
    v.validate_headers(&map).await.unwrap();
    // ...and so do the layer and the public helper.
    assert_eq!(mtls_tonic::jwt::bearer_token(&map), Some(token.as_str()));
    assert_eq!(status_of(v, &headers).await, 0);
}
