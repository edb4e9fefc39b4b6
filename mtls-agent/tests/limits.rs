//! Limits on both sockets, seen from a raw client: the HTTP/2 SETTINGS the servers
//! announce, the handshake timeout, the idle timeout (which never closes a connection with
//! a stream open), and the connection limit per uid.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use mtls_agent::Limits;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads frames until the server's first SETTINGS; returns its (id, value) pairs.
async fn server_settings(s: &mut UnixStream) -> Vec<(u16, u32)> {
    loop {
        let mut header = [0u8; 9];
        s.read_exact(&mut header).await.unwrap();
        let len =
            usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).await.unwrap();
        if header[3] == 0x4 && header[4] & 0x1 == 0 {
            return payload
                .chunks(6)
                .map(|c| {
                    (
                        u16::from_be_bytes([c[0], c[1]]),
                        u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                    )
                })
                .collect();
        }
    }
}

/// Whether the server closes `s` within `limit` (reading and dropping what it sends).
async fn closed_within(s: &mut UnixStream, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn both_servers_announce_their_http2_limits() {
    let t = TestAgent::start(&web_for_me()).await;
    for socket in [t.dir.path().join("workload.sock"), t.sds_socket()] {
        let mut s = UnixStream::connect(&socket).await.unwrap();
        s.write_all(PREFACE).await.unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let settings = server_settings(&mut s).await;
        let get = |id: u16| settings.iter().find(|(i, _)| *i == id).map(|(_, v)| *v);
        // SETTINGS_MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE (16 KiB may be
        // left out: it is the protocol's initial value), MAX_HEADER_LIST_SIZE.
        assert_eq!(get(0x3), Some(100), "{socket:?}: {settings:?}");
        assert_eq!(get(0x4), Some(64 * 1024), "{socket:?}: {settings:?}");
        assert!(matches!(get(0x5), None | Some(16_384)), "{settings:?}");
        assert_eq!(get(0x6), Some(16 * 1024), "{socket:?}: {settings:?}");
    }
}

#[tokio::test]
async fn handshake_and_idle_timeouts_close_connections_but_not_open_streams() {
    let mut limits = Limits::default();
    limits.handshake_timeout = Duration::from_millis(300);
    limits.idle_timeout = Duration::from_millis(800);
    let t = TestAgent::start_with(&web_for_me(), |c| c.limits(limits)).await;
    let workload = t.dir.path().join("workload.sock");
    for socket in [workload.clone(), t.sds_socket()] {
        // Silent after connecting: closed at the handshake timeout.
        let mut silent = UnixStream::connect(&socket).await.unwrap();
        let started = Instant::now();
        assert!(
            closed_within(&mut silent, Duration::from_secs(5)).await,
            "{socket:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "{socket:?}"
        );
        // Half a preface, then nothing: closed too.
        let mut half = UnixStream::connect(&socket).await.unwrap();
        half.write_all(&PREFACE[..10]).await.unwrap();
        assert!(
            closed_within(&mut half, Duration::from_secs(5)).await,
            "{socket:?}"
        );
        // Not HTTP/2: closed at once.
        let mut http1 = UnixStream::connect(&socket).await.unwrap();
        http1
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(
            closed_within(&mut http1, Duration::from_secs(2)).await,
            "{socket:?}"
        );
        // A full handshake and no call: closed at the idle timeout, not before.
        let mut idle = UnixStream::connect(&socket).await.unwrap();
        idle.write_all(PREFACE).await.unwrap();
        idle.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        let started = Instant::now();
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)).await,
            "{socket:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(700),
            "{socket:?}"
        );
    }
    // An open FetchX509SVID stream is a call in flight: its connection outlives the idle
    // timeout and still receives rotations.
    let source = x509_source(&t.endpoint()).await;
    let first = svid_serial(&source);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let mut updates = source.updated();
    t.agent.rotate_now().unwrap();
    next_update(
        &mut updates,
        "a rotation on the stream open past the idle timeout",
    )
    .await;
    assert_ne!(svid_serial(&source), first);
}

#[tokio::test]
async fn connections_per_uid_are_bounded_over_both_sockets() {
    let mut limits = Limits::default();
    limits.max_connections_per_uid = 4;
    let t = TestAgent::start_with(&web_for_me(), |c| c.limits(limits)).await;
    let workload = t.dir.path().join("workload.sock");
    let mut held = Vec::new();
    for socket in [&workload, &t.sds_socket(), &workload, &t.sds_socket()] {
        let mut s = UnixStream::connect(socket).await.unwrap();
        s.write_all(PREFACE).await.unwrap();
        s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
        server_settings(&mut s).await;
        held.push(s);
    }
    // The fifth of our uid is closed at accept, on either socket.
    for socket in [&workload, &t.sds_socket()] {
        let mut s = UnixStream::connect(socket).await.unwrap();
        let _ = s.write_all(PREFACE).await;
        assert!(closed_within(&mut s, Duration::from_secs(2)).await);
    }
    // Closing one frees its place.
    drop(held.pop());
    let client = eventually_client(&t).await;
    assert_eq!(
        client
            .fetch_x509_svid()
            .await
            .unwrap()
            .spiffe_id()
            .to_string(),
        WEB
    );
}

async fn eventually_client(t: &TestAgent) -> spiffe::WorkloadApiClient {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let client = spiffe::WorkloadApiClient::connect_to(t.endpoint())
            .await
            .unwrap();
        match client.fetch_x509_svid().await {
            Ok(_) => return client,
            Err(e) => {
                assert!(Instant::now() < deadline, "never served again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn calls_in_flight_per_uid_are_bounded() {
    use support::pb::workload::X509svidRequest;
    use support::pb::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
    let mut limits = Limits::default();
    limits.max_calls_per_uid = 3;
    let t = TestAgent::start_with(&web_for_me(), |c| c.limits(limits)).await;
    let mut client =
        SpiffeWorkloadApiClient::new(unix_channel(t.dir.path().join("workload.sock")).await);
    let request = || workload_request(X509svidRequest {});
    // Three open streams: the uid's budget.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut stream = client.fetch_x509svid(request()).await.unwrap().into_inner();
        stream.message().await.unwrap().unwrap();
        streams.push(stream);
    }
    let status = client.fetch_x509svid(request()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Ending one stream frees its place.
    drop(streams.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.fetch_x509svid(request()).await {
            Ok(_) => break,
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted);
                assert!(Instant::now() < deadline, "the place was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
