//! The in-memory handshake both handshake benches drive (no sockets: CPU only).

use std::sync::Arc;

use rustls::{ClientConnection, ServerConnection};

/// One full handshake between fresh connections from the two configurations, the flights
/// passed through one buffer. Returns the server's side (for the caller's checks) and the
/// sizes of the client's and the server's first flights.
pub(crate) fn handshake(
    server_cfg: &Arc<rustls::ServerConfig>,
    client_cfg: &Arc<rustls::ClientConfig>,
) -> (ServerConnection, (usize, usize)) {
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut client = ClientConnection::new(Arc::clone(client_cfg), name).unwrap();
    let mut server = ServerConnection::new(Arc::clone(server_cfg)).unwrap();
    let mut buf = Vec::with_capacity(16384);
    let mut sizes = (0, 0);
    let mut first = true;
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        if first {
            sizes.0 = buf.len();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
        }
        server.process_new_packets().unwrap();
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        if first {
            sizes.1 = buf.len();
            first = false;
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
        }
        client.process_new_packets().unwrap();
    }
    assert!(server.peer_certificates().is_some());
    (server, sizes)
}
