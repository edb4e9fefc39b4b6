//! The crypto bound of a handshake on this machine: what one server-side mTLS handshake
//! must spend in public-key operations, from `openssl speed` (CPU time, P-256 ECDSA sign and
//! verify, X25519) and criterion's `kx_server` pairs (the server's share of each key
//! exchange, ML-KEM-768 included), so the handshake table has a physical limit row.
//!
//! ```
//! use mtls_benches::crypto::OpensslSpeed;
//! let mr = "+F4:3:256:30000.0:10000.0\n+F5:3:256:13000.0:0.00007\n+F5:22:253:20000.0:0.00005\n";
//! let speed = OpensslSpeed::parse_mr(mr, "OpenSSL 3.0.19").unwrap();
//! assert_eq!(speed.p256_sign_per_s, 30000.0);
//! assert_eq!(speed.x25519_per_s, 20000.0);
//! // 1 sign + 2 verifies + 2 X25519 operations:
//! let s = 1.0 / 30000.0 + 2.0 / 10000.0 + 2.0 / 20000.0;
//! assert!((speed.classical_bound_per_s() - 1.0 / s).abs() < 1e-6);
//! ```

use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `openssl speed -mr` figures, operations per CPU-second (OpenSSL divides by user CPU time).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpensslSpeed {
    /// `openssl version`.
    pub version: String,
    /// Seconds per algorithm given to `openssl speed`.
    pub seconds: u32,
    /// ECDSA P-256 signatures per second.
    pub p256_sign_per_s: f64,
    /// ECDSA P-256 verifications per second.
    pub p256_verify_per_s: f64,
    /// X25519 shared-secret derivations per second.
    pub x25519_per_s: f64,
    /// P-256 ECDH derivations per second.
    pub p256_ecdh_per_s: f64,
}

impl OpensslSpeed {
    /// Runs `openssl speed -mr -seconds <seconds> ecdsap256 ecdhp256 ecdhx25519`.
    pub fn measure(seconds: u32) -> Result<Self> {
        let version = Command::new("openssl")
            .arg("version")
            .output()
            .map_err(Error::io("running `openssl version`"))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();
        let out = Command::new("openssl")
            .args(["speed", "-mr", "-seconds", &seconds.to_string()])
            .args(["ecdsap256", "ecdhp256", "ecdhx25519"])
            .output()
            .map_err(Error::io("running `openssl speed`"))?;
        if !out.status.success() {
            return Err(Error::Invalid {
                what: "`openssl speed` run",
                expected: "exit status 0",
                found: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        let mut speed = Self::parse_mr(&String::from_utf8_lossy(&out.stdout), &version)?;
        speed.seconds = seconds;
        Ok(speed)
    }

    /// Parses `openssl speed -mr` output: `+F4:<i>:256:<sign/s>:<verify/s>` (ECDSA P-256)
    /// and `+F5:<i>:<bits>:<ops/s>:<s/op>` (ECDH; 256 bits is P-256, 253 is X25519).
    pub fn parse_mr(text: &str, version: &str) -> Result<Self> {
        let (mut sign, mut verify, mut x25519, mut ecdh) = (None, None, None, None);
        for line in text.lines() {
            let fields: Vec<&str> = line.trim().split(':').collect();
            let num = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            match (fields.first().copied(), fields.get(2).copied()) {
                (Some("+F4"), Some("256")) => {
                    sign = num(3);
                    verify = num(4);
                }
                (Some("+F5"), Some("256")) => ecdh = num(3),
                (Some("+F5"), Some("253")) => x25519 = num(3),
                _ => {}
            }
        }
        let need = |v: Option<f64>, what: &'static str| {
            v.filter(|v| *v > 0.0).ok_or_else(|| Error::Invalid {
                what: "`openssl speed -mr` output",
                expected: what,
                found: text.lines().take(6).collect::<Vec<_>>().join(" "),
            })
        };
        Ok(Self {
            version: version.to_owned(),
            seconds: 0,
            p256_sign_per_s: need(sign, "a `+F4:…:256:` line (ECDSA P-256)")?,
            p256_verify_per_s: need(verify, "a `+F4:…:256:` line (ECDSA P-256)")?,
            x25519_per_s: need(x25519, "a `+F5:…:253:` line (X25519)")?,
            p256_ecdh_per_s: need(ecdh, "a `+F5:…:256:` line (P-256 ECDH)")?,
        })
    }

    /// Seconds of public-key work in one server-side mTLS handshake with P-256
    /// certificates and X25519: one signature (CertificateVerify), two verifications (the
    /// client leaf's signature by the CA, the client's CertificateVerify), two X25519
    /// operations (the ephemeral key, the shared secret).
    pub fn classical_handshake_s(&self) -> f64 {
        1.0 / self.p256_sign_per_s + 2.0 / self.p256_verify_per_s + 2.0 / self.x25519_per_s
    }

    /// The most full handshakes one server CPU-second can do (classical).
    pub fn classical_bound_per_s(&self) -> f64 {
        1.0 / self.classical_handshake_s()
    }

    /// The same bound with `extra_s` more key-exchange work per handshake (for the hybrid
    /// group: criterion's `kx_server/X25519MLKEM768` minus `kx_server/X25519`).
    pub fn bound_per_s_with(&self, extra_s: f64) -> f64 {
        1.0 / (self.classical_handshake_s() + extra_s.max(0.0))
    }
}
