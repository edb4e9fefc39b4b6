//! What [`ClientConfigBuilder`](crate::ClientConfigBuilder) and
//! [`ServerConfigBuilder`](crate::ServerConfigBuilder) set the same way: who the peer must be, the
//! TLS policy, key logging, ALPN and the crypto provider (one set of setters, written once), and the rustls
//! steps both `build`s take.

use crate::error::Error;

/// The setters both config builders have, on fields of the same names (`policy`, `tls`,
/// `key_log`, `alpn`, `provider`): `$builder` names the type in the doc examples, `$peers`
/// who is verified ("servers", "clients"), `$sans_context` where Envoy has the SAN block.
/// The module using it imports `Arc`, `Authorizer`, `CryptoProvider`, `SanMatcher` and
/// `TlsPolicy`.
macro_rules! tls_setters {
    ($builder:ident, $peers:literal, $sans_context:literal) => {
        #[doc = concat!("Accept only ", $peers, " whose SPIFFE ID `authorizer` allows (implies the X509-SVID rules).")]
        pub fn authorize(mut self, authorizer: impl Authorizer) -> Self {
            self.policy.authorizer = Some(Arc::new(authorizer));
            self
        }

        #[doc = concat!("Accept only ", $peers, " with a SAN that one of `matchers` accepts (Envoy's")]
        #[doc = concat!("`match_typed_subject_alt_names`", $sans_context, "). With [`authorize`](Self::authorize) too, both must pass.")]
        ///
        /// ```
        /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
        /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["api.internal"]))?;
        /// # let identity = std::sync::Arc::new(mtls_core::Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?);
        /// # let trust = std::sync::Arc::new(mtls_core::TrustBundle::from_pem(ca.cert_pem())?);
        /// let envoy_block = r#"[{"san_type": "URI", "matcher": {"prefix": "spiffe://example.org/ns/prod/"}}]"#;
        /// let matchers: Vec<mtls_core::SanMatcher> = serde_json::from_str(envoy_block)?;
        #[doc = concat!("let config = mtls_core::", stringify!($builder), "::new(identity, trust).match_sans(matchers).build()?;")]
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn match_sans(mut self, matchers: impl IntoIterator<Item = SanMatcher>) -> Self {
            self.policy.sans.extend(matchers);
            self
        }

        /// Also offer TLS 1.2 (TLS 1.3 only by default): lowers the policy's `min_version`.
        pub fn allow_tls12(mut self) -> Self {
            self.tls = self.tls.allow_tls12();
            self
        }

        /// Replaces the [`TlsPolicy`] (versions, key-exchange groups, cipher suites; the
        /// default prefers hybrid post-quantum X25519MLKEM768). Checked by [`build`](Self::build).
        ///
        /// ```
        /// # let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("Root"))?;
        /// # let leaf = ca.issue(&mtls_certs::LeafParams::server(["api.internal"]))?;
        /// # let identity = std::sync::Arc::new(mtls_core::Identity::from_pem(leaf.chain_pem(), leaf.key_pem())?);
        /// # let trust = std::sync::Arc::new(mtls_core::TrustBundle::from_pem(ca.cert_pem())?);
        /// use mtls_core::{TlsPolicy, TlsPreset};
        #[doc = concat!("let builder = mtls_core::", stringify!($builder), "::new(identity, trust);")]
        /// let err = builder.tls_policy(TlsPolicy::preset(TlsPreset::Tls13Only).allow_tls12()).build().unwrap_err();
        /// assert!(err.to_string().starts_with("invalid TLS policy: cipher_suites:"), "{err}");
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn tls_policy(mut self, policy: TlsPolicy) -> Self {
            self.tls = policy;
            self
        }

        /// Writes this side's TLS secrets to the file named by `SSLKEYLOGFILE` (NSS key log
        /// format, for Wireshark) — only if that variable is set too; a warning is logged when
        /// it is. Off by default: anyone who can read the file can decrypt the traffic.
        pub fn key_log_from_env(mut self) -> Self {
            self.key_log = true;
            self
        }

        /// Replaces the ALPN protocols (`h2` by default; empty to disable ALPN).
        pub fn alpn_protocols(
            mut self,
            protocols: impl IntoIterator<Item = impl Into<Vec<u8>>>,
        ) -> Self {
            self.alpn = protocols.into_iter().map(Into::into).collect();
            self
        }

        /// Uses another crypto provider (e.g. aws-lc-rs in FIPS mode). The [`TlsPolicy`]
        /// picks its groups and suites from it, and [`build`](Self::build) refuses a policy
        /// naming one the provider lacks.
        pub fn crypto_provider(mut self, provider: Arc<CryptoProvider>) -> Self {
            self.provider = provider;
            self
        }
    };
}
pub(crate) use tls_setters;

/// rustls' refusal of the protocol versions, as ours.
pub(crate) fn versions_refused(e: rustls::Error) -> Error {
    Error::InvalidConfig {
        reason: e.to_string(),
    }
}
