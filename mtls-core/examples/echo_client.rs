//! An mTLS echo client: presents a certificate, authorizes the server by SPIFFE ID or SAN,
//! sends one line and prints the reply.
//!
//! ```text
//! cargo run -p mtls-core --example echo_client -- --ca ca.pem --cert svid.pem --key svid-key.pem \
//!     --connect 127.0.0.1:8443 --allow-spiffe-id spiffe://example.org/ns/prod/sa/api --message hello
//! ```
//!
//! Prints `connected to <server identity>` then `reply: <line>`; exits non-zero with the
//! reason if the handshake fails. With neither `--allow-spiffe-id` nor `--allow-san`, the
//! server certificate must be valid for `--server-name` (default: the host of `--connect`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mtls_core::{
    Authorize, ClientConfigBuilder, Identity, PeerIdentity, SanMatcher, SpiffeId, TrustBundle,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(clap::Parser, Debug)]
#[command(about = "mTLS echo client (mtls-core example)")]
struct Args {
    #[command(flatten)]
    files: common::PemFiles,
    /// Server address.
    #[arg(long)]
    connect: SocketAddr,
    /// Name to send as SNI (and check when no policy is given).
    #[arg(long)]
    server_name: Option<String>,
    /// Accept a server with this SPIFFE ID (repeatable).
    #[arg(long = "allow-spiffe-id")]
    allow_spiffe_id: Vec<SpiffeId>,
    /// Accept a server with a SAN matching TYPE:MATCHER:VALUE (repeatable).
    #[arg(long = "allow-san")]
    allow_san: Vec<SanMatcher>,
    /// Line to send.
    #[arg(long, default_value = "hello")]
    message: String,
    #[command(flatten)]
    tls: common::TlsArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Args = common::start();

    let identity = Arc::new(Identity::from_pem_files(&args.files.cert, &args.files.key)?);
    let trust = Arc::new(TrustBundle::from_pem_file(&args.files.ca)?);
    let mut builder = ClientConfigBuilder::new(identity, trust);
    if !args.allow_spiffe_id.is_empty() {
        builder = builder.authorize(Authorize::one_of(args.allow_spiffe_id));
    }
    if !args.allow_san.is_empty() {
        builder = builder.match_sans(args.allow_san);
    }
    builder = common::with_tls_args!(builder, &args.tls);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(builder.build()?));
    let name = args
        .server_name
        .unwrap_or_else(|| args.connect.ip().to_string());
    let server_name = ServerName::try_from(name)?;

    let work = async {
        let tcp = tokio::net::TcpStream::connect(args.connect).await?;
        let mut tls = connector.connect(server_name, tcp).await?;
        let peer = PeerIdentity::from_connection(tls.get_ref().1).map_err(std::io::Error::other)?;
        println!("connected to {peer}");
        if let Some(tls) = peer.negotiated() {
            println!("negotiated {tls}");
        }
        tls.write_all(format!("{}\n", args.message).as_bytes())
            .await?;
        tls.flush().await?;
        let mut reply = String::new();
        BufReader::new(&mut tls).read_line(&mut reply).await?;
        println!("reply: {}", reply.trim_end());
        let _ = tls.shutdown().await;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(Duration::from_secs(10), work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => {
            match mtls_core::Error::from_io(&err) {
                Some(reason) => eprintln!("error: {reason}"),
                None => eprintln!("error: {err}"),
            }
            std::process::exit(1);
        }
        Err(_) => {
            eprintln!("error: timed out");
            std::process::exit(1);
        }
    }
}
