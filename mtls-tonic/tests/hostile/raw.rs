//! A raw HTTP/2 client over mTLS (frames written by hand, so it can misbehave in ways the
//! `h2` crate refuses to), a server in its own process (so its RSS and CPU are its own),
//! and `/proc` readings.
// Test helpers: `pub` for the test file; not every constant is used by every test.
#![allow(unreachable_pub, dead_code)]

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf},
    net::TcpStream,
    task::JoinHandle,
};
use tokio_rustls::client::TlsStream;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const ACK: u8 = 0x1;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;
pub const REFUSED_STREAM: u32 = 0x7;
pub const CANCEL: u32 = 0x8;

/// One frame: 9-byte header and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 5.1).
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// One header field, "literal without indexing, new name", no Huffman.
pub fn hpack_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 0, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// A gRPC request header block for `path`, plus `extra` fields.
pub fn request_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "https"),
        (":path", path),
        (":authority", "bookstore.test"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        hpack_field(&mut out, name, value);
    }
    out
}

/// An empty `grpc.health.v1.HealthCheckRequest` as one gRPC message.
pub const EMPTY_GRPC_MESSAGE: [u8; 5] = [0, 0, 0, 0, 0];

/// What the server sent us, as far as the tests care.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    pub settings: Vec<(u16, u32)>,
    pub goaway: Option<(u32, u32, String)>,
    pub resets: Vec<(u32, u32)>,
    pub headers: usize,
    pub pongs: usize,
    pub data_bytes: usize,
    pub closed: bool,
}

/// A raw HTTP/2 client connection.
pub struct RawH2 {
    writer: Arc<tokio::sync::Mutex<WriteHalf<TlsStream<TcpStream>>>>,
    pub seen: Arc<Mutex<Seen>>,
    reader: Option<JoinHandle<()>>,
    /// The read half, kept unread (a slow reader).
    unread: Option<ReadHalf<TlsStream<TcpStream>>>,
}

impl RawH2 {
    /// TLS to `addr` with `config`, the client preface and our SETTINGS; `read` starts a
    /// reader that records frames and acknowledges the server's SETTINGS; without it the
    /// connection is never read (a slow reader).
    pub async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        settings: &[(u16, u32)],
        read: bool,
    ) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("bookstore.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .unwrap();
        let (rd, wr) = tokio::io::split(tls);
        let writer = Arc::new(tokio::sync::Mutex::new(wr));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        preface.extend(frame(SETTINGS, 0, 0, &payload));
        writer.lock().await.write_all(&preface).await.unwrap();
        let (reader, unread) = if read {
            let task = tokio::spawn(read_frames(rd, writer.clone(), seen.clone()));
            (Some(task), None)
        } else {
            (None, Some(rd))
        };
        Self {
            writer,
            seen,
            reader,
            unread,
        }
    }

    /// Writes `bytes`; `false` once the server has closed the connection.
    pub async fn send(&self, bytes: &[u8]) -> bool {
        let mut writer = self.writer.lock().await;
        writer.write_all(bytes).await.is_ok() && writer.flush().await.is_ok()
    }

    /// The never-read half of a slow reader's connection.
    pub fn take_unread(&mut self) -> Option<ReadHalf<TlsStream<TcpStream>>> {
        self.unread.take()
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the server closed the connection (EOF or reset), up to `timeout`.
    pub async fn wait_closed(&self, timeout: Duration) -> Seen {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.seen().closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.seen()
    }
}

impl Drop for RawH2 {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
    }
}

async fn read_frames(
    mut rd: ReadHalf<TlsStream<TcpStream>>,
    writer: Arc<tokio::sync::Mutex<WriteHalf<TlsStream<TcpStream>>>>,
    seen: Arc<Mutex<Seen>>,
) {
    let mut head = [0u8; 9];
    loop {
        if rd.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        if rd.read_exact(&mut payload).await.is_err() {
            break;
        }
        let reply = {
            let mut s = seen.lock().unwrap();
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    for pair in payload.chunks_exact(6) {
                        s.settings.push((
                            u16::from_be_bytes([pair[0], pair[1]]),
                            u32::from_be_bytes([pair[2], pair[3], pair[4], pair[5]]),
                        ));
                    }
                    Some(frame(SETTINGS, ACK, 0, &[]))
                }
                GOAWAY if payload.len() >= 8 => {
                    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    let debug = String::from_utf8_lossy(&payload[8..]).into_owned();
                    s.goaway = Some((last, code, debug));
                    None
                }
                RST_STREAM if payload.len() == 4 => {
                    let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                    s.resets.push((stream, code));
                    None
                }
                HEADERS => {
                    s.headers += 1;
                    None
                }
                PING if flags & ACK != 0 => {
                    s.pongs += 1;
                    None
                }
                PING => Some(frame(PING, ACK, 0, &payload)),
                DATA => {
                    s.data_bytes += len;
                    None
                }
                _ => None,
            }
        };
        if let Some(reply) = reply {
            let mut w = writer.lock().await;
            let _ = w.write_all(&reply).await;
            let _ = w.flush().await;
        }
    }
    seen.lock().unwrap().closed = true;
}

/// A server process: this test binary re-run as `hostile_server_child` with the PKI in
/// `dir`. Killed (by PID) when dropped.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    pub fn start(dir: &Path, env: &[(&str, String)]) -> Self {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "hostile_server_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MTLS_HOSTILE_SERVER_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("server child exited before listening")
                .unwrap();
            // The harness may print "test hostile_server_child ... " on the same line.
            if let Some((_, addr)) = line.split_once("LISTENING ") {
                break addr.trim().parse().unwrap();
            }
        };
        // Keep draining its stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Self { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of `pid` in seconds (clock ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    ticks as f64 / 100.0
}
