//! [`Negotiated`]: what a finished handshake agreed on — version, cipher suite,
//! key-exchange group, handshake kind, ALPN.

use std::fmt;

use rustls::{CipherSuite, HandshakeKind, NamedGroup, ProtocolVersion};

use crate::policy::{KxGroup, TlsSuite, TlsVersion, debug_name};

/// The parameters of a finished handshake, beside the verified peer
/// ([`PeerIdentity::negotiated`](crate::PeerIdentity::negotiated)).
///
/// ```
/// # fn handler(conn: &rustls::ServerConnection) {
/// if let Some(tls) = mtls_core::Negotiated::from_connection(conn) {
///     // "TLSv1.3 TLS_AES_256_GCM_SHA384 X25519MLKEM768 full"
///     tracing::debug!(%tls, post_quantum = tls.is_post_quantum(), "handshake");
/// }
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Negotiated {
    version: ProtocolVersion,
    cipher_suite: CipherSuite,
    group: Option<NamedGroup>,
    kind: Option<HandshakeKind>,
    alpn: Option<Vec<u8>>,
}

impl Negotiated {
    /// From a rustls connection whose handshake has got far enough to pick a version and
    /// suite (`None` before that).
    pub fn from_connection(conn: &rustls::CommonState) -> Option<Self> {
        Some(Self {
            version: conn.protocol_version()?,
            cipher_suite: conn.negotiated_cipher_suite()?.suite(),
            group: conn.negotiated_key_exchange_group().map(|g| g.name()),
            kind: conn.handshake_kind(),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    }

    /// The protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The version as a policy value, if it is TLS 1.2 or 1.3.
    pub fn tls_version(&self) -> Option<TlsVersion> {
        TlsVersion::from_protocol_version(self.version)
    }

    /// The cipher suite.
    pub fn cipher_suite(&self) -> CipherSuite {
        self.cipher_suite
    }

    /// The key-exchange group (`None` for a TLS 1.2 resumption, which has none).
    pub fn key_exchange_group(&self) -> Option<NamedGroup> {
        self.group
    }

    /// The group as a policy value, if it is one [`KxGroup`] names.
    pub fn kx_group(&self) -> Option<KxGroup> {
        self.group.and_then(KxGroup::from_named_group)
    }

    /// Full, full with a HelloRetryRequest (an extra round trip: the client's first key
    /// share was not one the server wanted), or resumed.
    pub fn handshake_kind(&self) -> Option<HandshakeKind> {
        self.kind
    }

    /// The ALPN protocol agreed on, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// Whether the key exchange resists a quantum computer (a hybrid ML-KEM group).
    pub fn is_post_quantum(&self) -> bool {
        self.kx_group().is_some_and(KxGroup::is_post_quantum)
    }

    /// `TLSv1.3`, `TLSv1.2`, or rustls' name for another version.
    pub fn version_name(&self) -> String {
        match self.tls_version() {
            Some(v) => v.to_string(),
            None => self.version.as_str().map_or_else(
                || format!("version 0x{:04x}", u16::from(self.version)),
                str::to_owned,
            ),
        }
    }

    /// The suite's IANA name (`TLS_AES_128_GCM_SHA256`).
    pub fn cipher_suite_name(&self) -> String {
        match TlsSuite::from_cipher_suite(self.cipher_suite) {
            Some(s) => s.iana_name().to_owned(),
            None => self.cipher_suite.as_str().map_or_else(
                || format!("suite 0x{:04x}", u16::from(self.cipher_suite)),
                str::to_owned,
            ),
        }
    }

    /// The group's name (`X25519MLKEM768`, `X25519`, `P-256`), or `none`.
    pub fn group_name(&self) -> String {
        self.group.map_or_else(|| "none".to_owned(), debug_name)
    }

    /// `full`, `full with HelloRetryRequest`, `resumed` (or `unknown`).
    pub fn handshake_kind_name(&self) -> &'static str {
        match self.kind {
            Some(HandshakeKind::Full) => "full",
            Some(HandshakeKind::FullWithHelloRetryRequest) => "full with HelloRetryRequest",
            Some(HandshakeKind::Resumed) => "resumed",
            None => "unknown",
        }
    }
}

impl fmt::Display for Negotiated {
    /// `TLSv1.3 TLS_AES_256_GCM_SHA384 X25519MLKEM768 full`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.version_name(),
            self.cipher_suite_name(),
            self.group_name(),
            self.handshake_kind_name()
        )
    }
}
