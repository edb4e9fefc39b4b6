//! Session resumption as an option on both sides, read off the handshake itself: off by
//! default (every connection full), a stateful server cache and stateless tickets each let
//! the second connection of a client that enabled resumption resume; a client that did not
//! enable it never resumes.
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use mtls_core::{Authorize, ClientConfigBuilder, Resumption, ServerConfigBuilder};
use rustls::HandshakeKind;
use support::{Pki, handshake};

const SERVER_ID: &str = "spiffe://example.org/ns/prod/sa/api";
const CLIENT_ID: &str = "spiffe://example.org/ns/prod/sa/web";

fn server(pki: &Pki, resumption: Resumption) -> rustls::ServerConfig {
    ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
        .authorize(Authorize::exact(CLIENT_ID.parse().unwrap()))
        .resumption(resumption)
        .build()
        .unwrap()
}

fn client(pki: &Pki, resume: bool) -> rustls::ClientConfig {
    let builder =
        ClientConfigBuilder::new(Arc::new(pki.svid(CLIENT_ID)), Arc::new(pki.spiffe_bundle()))
            .authorize(Authorize::exact(SERVER_ID.parse().unwrap()));
    let builder = if resume {
        builder.enable_resumption()
    } else {
        builder
    };
    builder.build().unwrap()
}

/// The handshake kinds of three connections in a row (as the server saw them), with the
/// client's SPIFFE ID as the server saw it each time.
async fn three(server: &rustls::ServerConfig, client: &rustls::ClientConfig) -> Vec<HandshakeKind> {
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let out = handshake(server.clone(), client.clone(), "127.0.0.1").await;
        let (client_seen, server_seen) = out.assert_ok();
        assert_eq!(
            client_seen.spiffe_id().map(|id| id.to_string()).as_deref(),
            Some(CLIENT_ID)
        );
        let kind = client_seen.negotiated().unwrap().handshake_kind().unwrap();
        assert_eq!(
            server_seen.negotiated().unwrap().handshake_kind(),
            Some(kind),
            "both sides agree on the handshake kind"
        );
        kinds.push(kind);
    }
    kinds
}

#[tokio::test]
async fn off_by_default_every_connection_is_full() {
    let pki = Pki::new();
    let server =
        ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
            .build()
            .unwrap();
    assert!(!server.ticketer.enabled());
    assert_eq!(server.send_tls13_tickets, 0);
    let kinds = three(&server, &client(&pki, true)).await;
    assert_eq!(kinds, [HandshakeKind::Full; 3]);
}

#[tokio::test]
async fn stateful_cache_and_tickets_resume_the_second_connection() {
    let pki = Pki::new();
    for resumption in [Resumption::Stateful { capacity: 16 }, Resumption::Tickets] {
        let server = server(&pki, resumption);
        let kinds = three(&server, &client(&pki, true)).await;
        assert_eq!(
            kinds,
            [
                HandshakeKind::Full,
                HandshakeKind::Resumed,
                HandshakeKind::Resumed
            ],
            "{resumption:?}"
        );
    }
}

#[tokio::test]
async fn a_client_without_resumption_never_resumes() {
    let pki = Pki::new();
    let server = server(&pki, Resumption::Tickets);
    let kinds = three(&server, &client(&pki, false)).await;
    assert_eq!(kinds, [HandshakeKind::Full; 3]);
}

#[tokio::test]
async fn enable_resumption_is_a_stateful_cache() {
    let pki = Pki::new();
    let server =
        ServerConfigBuilder::new(Arc::new(pki.svid(SERVER_ID)), Arc::new(pki.spiffe_bundle()))
            .enable_resumption()
            .build()
            .unwrap();
    assert!(!server.ticketer.enabled(), "no stateless tickets");
    assert_eq!(
        three(&server, &client(&pki, true)).await[1],
        HandshakeKind::Resumed
    );
}
