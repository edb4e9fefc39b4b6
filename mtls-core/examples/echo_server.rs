//! An mTLS echo server: verifies clients with mtls-core and prints one line per connection,
//! either `accepted <addr> <peer identity>` or `rejected <addr>: <reason>`.
//!
//! ```text
//! cargo run -p mtls-core --example echo_server -- --ca ca.pem --cert svid.pem --key svid-key.pem \
//!     --listen 127.0.0.1:8443 --allow-spiffe-id spiffe://example.org/ns/prod/sa/web \
//!     --allow-san URI:prefix:spiffe://example.org/ns/prod/
//! ```
//!
//! The first line is `listening on ADDR` (use port 0 and read the port back). The
//! certificate, key and CA files are watched: replacing them rotates without a restart.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mtls_core::{
    Authorize, FileIdentitySource, FileTrustSource, PeerIdentity, SanMatcher, ServerConfigBuilder,
    SpiffeId,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(clap::Parser, Debug)]
#[command(about = "mTLS echo server (mtls-core example)")]
struct Args {
    #[command(flatten)]
    files: common::PemFiles,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// Allow this client SPIFFE ID (repeatable; clients must then be X509-SVIDs).
    #[arg(long = "allow-spiffe-id")]
    allow_spiffe_id: Vec<SpiffeId>,
    /// Allow clients with a SAN matching TYPE:MATCHER:VALUE, e.g. URI:prefix:spiffe://example.org/ (repeatable).
    #[arg(long = "allow-san")]
    allow_san: Vec<SanMatcher>,
    /// Admit clients without a certificate (reported as unauthenticated).
    #[arg(long)]
    permissive: bool,
    #[command(flatten)]
    tls: common::TlsArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = common::start();

    let identity =
        FileIdentitySource::watch(&args.files.cert, &args.files.key, Duration::from_secs(1))?;
    let trust = FileTrustSource::watch(&args.files.ca, None::<PathBuf>, Duration::from_secs(1))?;
    let mut builder = ServerConfigBuilder::new(identity, trust).alpn_protocols(["h2", "echo"]);
    if !args.allow_spiffe_id.is_empty() {
        builder = builder.authorize(Authorize::one_of(args.allow_spiffe_id));
    }
    if !args.allow_san.is_empty() {
        builder = builder.match_sans(args.allow_san);
    }
    if args.permissive {
        builder = builder.allow_unauthenticated();
    }
    builder = common::with_tls_args!(builder, &args.tls);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(builder.build()?));

    let listener = TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (tcp, addr) = listener.accept().await?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            let mut tls = match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    println!(
                        "rejected {addr}: {}",
                        mtls_core::explain_handshake_error(&err)
                    );
                    return;
                }
                Err(_) => {
                    println!("rejected {addr}: handshake timed out");
                    return;
                }
            };
            match PeerIdentity::from_connection(tls.get_ref().1) {
                Ok(peer) => match peer.negotiated() {
                    Some(tls) => println!("accepted {addr} {peer} negotiated {tls}"),
                    None => println!("accepted {addr} {peer}"),
                },
                Err(err) => println!("accepted {addr} (unreadable peer certificate: {err})"),
            }
            let (read, mut write) = tokio::io::split(&mut tls);
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let _ = tls.shutdown().await;
        });
    }
}
