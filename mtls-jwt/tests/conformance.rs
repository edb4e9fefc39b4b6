//! Audit findings (issue 13, items 4, 5, 7, 8): a future `iat` cannot stretch
//! `max_lifetime`, the JOSE header is a JSON object of valid UTF-8, keys sharing a `kid` are
//! each tried, weak RSA keys are refused when the JWKS loads, and a cache hit still runs the
//! custom checks. Issue 25 item 4: RSA keys outside 2048–8192 bits are refused with their
//! size, and a JWKS full of junk keys is one log line.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mtls_jwt::{Algorithm, Error, JwksSource, KeySet, SigningKey, TokenSpec, Validator, jwks_json};
use serde_json::json;

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with exactly these header and payload bytes, signed by `key`.
fn signed(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = key.sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64(&signature))
}

fn validator(key: &SigningKey) -> mtls_jwt::ValidatorBuilder {
    Validator::builder().jwks(JwksSource::inline(jwks_json([key.jwk(None)])))
}

#[test]
fn a_future_iat_cannot_stretch_max_lifetime() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let v = validator(&key)
        .max_lifetime(Duration::from_secs(600))
        .build()
        .unwrap();
    let now = now();
    let mint = |iat: i64, exp: i64| {
        key.mint(
            &TokenSpec::new(Duration::from_secs(60))
                .claim("iat", iat)
                .claim("nbf", now)
                .claim("exp", exp),
        )
        .unwrap()
    };
    // Lives 65 minutes from now; `exp - iat` alone would say 5.
    let err = v.validate_now(&mint(now + 3600, now + 3900)).unwrap_err();
    assert!(matches!(err, Error::IssuedInFuture { .. }), "{err}");
    assert!(err.to_string().contains("iat"), "{err}");
    assert_eq!(err.http_status(), 401);

    // Within the clock skew `iat` may be ahead, but the lifetime counts from now.
    let err = v.validate_now(&mint(now + 30, now + 630)).unwrap_err();
    assert!(
        matches!(err, Error::LifetimeTooLong { lifetime, max: 600 } if lifetime >= 629),
        "{err}"
    );
    v.validate_now(&mint(now + 30, now + 590)).unwrap();
    // An old `iat` still counts from `iat`.
    let err = v.validate_now(&mint(now - 3600, now + 60)).unwrap_err();
    assert!(matches!(err, Error::LifetimeTooLong { .. }), "{err}");
}

#[test]
fn the_jose_header_must_be_a_json_object() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let v = validator(&key).build().unwrap();
    let payload = json!({"exp": now() + 300}).to_string();
    // serde would fill `alg` and `kid` by position from an array.
    let array = json!(["ES256", key.kid()]).to_string();
    let err = v
        .validate_now(&signed(&key, array.as_bytes(), payload.as_bytes()))
        .unwrap_err();
    assert!(matches!(err, Error::MalformedHeader { .. }), "{err}");
    assert!(err.to_string().contains("object"), "{err}");
    for not_object in ["\"ES256\"", "null", "42"] {
        let err = v
            .validate_now(&signed(&key, not_object.as_bytes(), payload.as_bytes()))
            .unwrap_err();
        assert!(
            matches!(err, Error::MalformedHeader { .. }),
            "{not_object}: {err}"
        );
    }
    // The well-formed object is accepted.
    let header = json!({"alg": "ES256", "kid": key.kid()}).to_string();
    v.validate_now(&signed(&key, header.as_bytes(), payload.as_bytes()))
        .unwrap();
}

#[test]
fn invalid_utf8_in_header_or_payload_is_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let v = validator(&key).build().unwrap();
    let good_header = json!({"alg": "ES256", "kid": key.kid()}).to_string();
    let good_payload = json!({"exp": now() + 300}).to_string();

    // An unknown header member whose string is not UTF-8 (0xff never occurs in UTF-8).
    let mut header = format!(r#"{{"alg":"ES256","kid":"{}","x":""#, key.kid()).into_bytes();
    header.extend_from_slice(&[0xff, 0xfe]);
    header.extend_from_slice(b"\"}");
    let err = v
        .validate_now(&signed(&key, &header, good_payload.as_bytes()))
        .unwrap_err();
    assert!(matches!(err, Error::MalformedHeader { .. }), "{err}");

    // An overlong encoding of '/' (0xc0 0xaf) in a claim.
    let mut payload = format!(r#"{{"exp":{},"note":""#, now() + 300).into_bytes();
    payload.extend_from_slice(&[0xc0, 0xaf]);
    payload.extend_from_slice(b"\"}");
    let err = v
        .validate_now(&signed(&key, good_header.as_bytes(), &payload))
        .unwrap_err();
    assert!(matches!(err, Error::MalformedPayload { .. }), "{err}");

    // A lone surrogate escape is not a Unicode scalar value either.
    let payload = format!(r#"{{"exp":{},"note":"\udc00"}}"#, now() + 300);
    let err = v
        .validate_now(&signed(&key, good_header.as_bytes(), payload.as_bytes()))
        .unwrap_err();
    assert!(matches!(err, Error::MalformedPayload { .. }), "{err}");
}

#[test]
fn keys_sharing_a_kid_are_each_tried() {
    let first = SigningKey::generate(Algorithm::ES256).unwrap();
    let second = SigningKey::generate(Algorithm::ES256).unwrap();
    let rsa = SigningKey::generate(Algorithm::RS256).unwrap();
    let jwks = jwks_json([
        rsa.jwk(Some("shared")),
        first.jwk(Some("shared")),
        second.jwk(Some("shared")),
    ]);
    let v = Validator::builder()
        .jwks(JwksSource::inline(jwks))
        .build()
        .unwrap();
    let spec = TokenSpec::new(Duration::from_secs(300)).kid("shared");
    for key in [&first, &second, &rsa] {
        v.validate_now(&key.mint(&spec).unwrap()).unwrap();
    }
    // A key that is not in the set still fails with a bad signature.
    let stranger = SigningKey::generate(Algorithm::ES256).unwrap();
    let err = v.validate_now(&stranger.mint(&spec).unwrap()).unwrap_err();
    assert!(matches!(err, Error::BadSignature), "{err}");
}

/// Runs `command` (the openssl CLI), which must succeed (its stderr in the failure): its
/// stdout.
fn openssl(command: &mut Command) -> Vec<u8> {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A 1024-bit RSA key made by the openssl CLI: (PEM path holder, JWK).
fn weak_rsa(kid: &str) -> (tempfile::TempDir, serde_json::Value) {
    openssl_rsa(kid, 1024)
}

/// An RSA key of `bits` made by the openssl CLI: (PEM path holder, JWK).
fn openssl_rsa(kid: &str, bits: usize) -> (tempfile::TempDir, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("weak.pem");
    openssl(
        Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
            ])
            .arg(&pem),
    );
    let out = openssl(
        Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in"])
            .arg(&pem),
    );
    let text = String::from_utf8(out).unwrap();
    let hex = text.trim().strip_prefix("Modulus=").unwrap();
    let n: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(n.len(), bits / 8);
    let jwk =
        json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": b64(&n), "e": "AQAB"});
    (dir, jwk)
}

/// Signs `input` with the PEM key in `dir` (RS256) using the openssl CLI.
fn openssl_rs256(dir: &tempfile::TempDir, input: &str) -> Vec<u8> {
    let data = dir.path().join("input");
    std::fs::write(&data, input).unwrap();
    openssl(
        Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(dir.path().join("weak.pem"))
            .arg(&data),
    )
}

#[test]
fn rsa_keys_under_2048_bits_are_refused_when_the_jwks_loads() {
    let (dir, weak) = weak_rsa("legacy-1024");
    // Alone: the JWKS is refused, naming the kid and the size.
    let err = KeySet::from_value(json!({"keys": [weak.clone()]})).unwrap_err();
    assert!(matches!(err, Error::EmptyJwks { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("legacy-1024") && text.contains("1024"),
        "{text}"
    );
    let err = Validator::builder()
        .jwks(JwksSource::inline(
            json!({"keys": [weak.clone()]}).to_string(),
        ))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("legacy-1024"), "{err}");

    // Beside a good key: the set loads, and a token naming the weak key is refused for
    // what it is, not as a bad signature.
    let good = SigningKey::generate(Algorithm::ES256).unwrap();
    let set = KeySet::from_value(json!({"keys": [weak, good.jwk(Some("good"))]})).unwrap();
    let v = Validator::builder()
        .jwks(JwksSource::key_set(set))
        .build()
        .unwrap();
    let header = json!({"alg": "RS256", "kid": "legacy-1024"}).to_string();
    let payload = json!({"exp": now() + 300}).to_string();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let token = format!("{input}.{}", b64(&openssl_rs256(&dir, &input)));
    let err = v.validate_now(&token).unwrap_err();
    assert!(
        matches!(&err, Error::WeakKey { kid, bits: 1024 } if kid == "legacy-1024"),
        "{err}"
    );
    assert_eq!(err.http_status(), 401);
    v.validate_now(
        &good
            .mint(&TokenSpec::new(Duration::from_secs(60)).kid("good"))
            .unwrap(),
    )
    .unwrap();
}

#[test]
fn a_cache_hit_still_runs_the_custom_checks() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let revoked = Arc::new(AtomicBool::new(false));
    let flag = revoked.clone();
    let v = validator(&key)
        .check("not revoked", move |_| {
            if flag.load(Ordering::SeqCst) {
                Err("the session was revoked".into())
            } else {
                Ok(())
            }
        })
        .build()
        .unwrap();
    let token = key.mint(&TokenSpec::new(Duration::from_secs(300))).unwrap();
    v.validate_now(&token).unwrap();
    v.validate_now(&token).unwrap();
    revoked.store(true, Ordering::SeqCst);
    let err = v.validate_now(&token).unwrap_err();
    assert!(
        matches!(&err, Error::ClaimCheckFailed { check, .. } if check == "not revoked"),
        "{err}"
    );
    revoked.store(false, Ordering::SeqCst);
    v.validate_now(&token).unwrap();
}

/// Two Envoy-parity rows (ENVOY-PARITY.md) where mtls-jwt is the stricter side: an
/// unknown `crit` parameter and trailing bytes after the signature are refused.
#[test]
fn unknown_crit_and_trailing_signature_bytes_are_refused() {
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let v = validator(&key).build().unwrap();
    let payload = json!({"exp": now() + 300}).to_string();
    let header = json!({"alg": "ES256", "kid": key.kid(), "crit": ["x-custom"], "x-custom": 1});
    let err = v
        .validate_now(&signed(
            &key,
            header.to_string().as_bytes(),
            payload.as_bytes(),
        ))
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedCritical { .. }), "{err}");

    let good = key.mint(&TokenSpec::new(Duration::from_secs(60))).unwrap();
    v.validate_now(&good).unwrap();
    let (input, sig) = good.rsplit_once('.').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(sig).unwrap();
    bytes.push(0);
    let err = v
        .validate_now(&format!("{input}.{}", b64(&bytes)))
        .unwrap_err();
    assert!(matches!(err, Error::BadSignature), "{err}");
}

/// A token with `kid`, RS256-signed by the openssl CLI with the key in `dir`.
fn openssl_token(dir: &tempfile::TempDir, kid: &str) -> String {
    let header = json!({"alg": "RS256", "kid": kid}).to_string();
    let payload = json!({"exp": now() + 300}).to_string();
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    format!("{input}.{}", b64(&openssl_rs256(dir, &input)))
}

#[test]
fn rsa_keys_outside_2048_to_8192_bits_are_refused_with_their_size() {
    let (dir512, rsa512) = openssl_rsa("rsa-512", 512);
    let (dir4096, rsa4096) = openssl_rsa("rsa-4096", 4096);
    let rsa2048 = SigningKey::generate(Algorithm::RS256).unwrap();
    // A 16384-bit modulus (top bit set, odd): only its size matters here, and making a
    // real one takes the openssl CLI minutes.
    let mut n = vec![0xc5u8; 2048];
    n[2047] |= 1;
    let rsa16384 =
        json!({"kty": "RSA", "kid": "rsa-16384", "alg": "RS256", "n": b64(&n), "e": "AQAB"});
    let set = KeySet::from_value(json!({"keys": [
        rsa512, rsa16384.clone(), rsa4096, rsa2048.jwk(Some("rsa-2048"))
    ]}))
    .unwrap();
    let v = Validator::builder()
        .jwks(JwksSource::key_set(set))
        .build()
        .unwrap();

    let err = v
        .validate_now(&openssl_token(&dir512, "rsa-512"))
        .unwrap_err();
    assert!(matches!(&err, Error::WeakKey { bits: 512, .. }), "{err}");
    assert!(
        err.to_string().contains("512 bits, expected 2048 to 8192"),
        "{err}"
    );
    // Any RS256 signature names the 16384-bit key's size, not "bad signature".
    let err = v
        .validate_now(&openssl_token(&dir512, "rsa-16384"))
        .unwrap_err();
    assert!(matches!(&err, Error::WeakKey { bits: 16384, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("16384 bits, expected 2048 to 8192"),
        "{err}"
    );

    v.validate_now(&openssl_token(&dir4096, "rsa-4096"))
        .unwrap();
    v.validate_now(
        &rsa2048
            .mint(&TokenSpec::new(Duration::from_secs(60)).kid("rsa-2048"))
            .unwrap(),
    )
    .unwrap();

    // Alone, the oversized key leaves no usable key: the error says why.
    let err = KeySet::from_value(json!({"keys": [rsa16384]})).unwrap_err();
    assert!(err.to_string().contains("16384 bits"), "{err}");
}

/// A `MakeWriter` into a shared buffer: the log lines a test emits.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[test]
fn junk_keys_are_one_summary_line_per_jwks() {
    let good = SigningKey::generate(Algorithm::ES256).unwrap();
    let mut keys: Vec<serde_json::Value> = (0..10_000)
        .map(|i| json!({"kty": "EC", "crv": "P-256", "kid": format!("junk-{i}"), "x": "AA", "y": "AA"}))
        .collect();
    keys.push(good.jwk(Some("good")));
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let set = tracing::subscriber::with_default(subscriber, || {
        KeySet::from_value(json!({ "keys": keys })).unwrap()
    });
    assert_eq!(set.key_ids(), ["good"]);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "one line for 10,000 junk keys: {}",
        &text[..text.len().min(2000)]
    );
    let line = lines[0];
    assert!(
        line.contains("WARN") && line.contains("JWKS keys skipped"),
        "{line}"
    );
    assert!(line.contains("10000 of 10001 keys"), "the count: {line}");
    assert!(
        line.contains("source=\"inline JWKS\""),
        "where from: {line}"
    );
    assert!(
        line.contains("junk-0") && line.contains("and 9996 more"),
        "the first reasons: {line}"
    );
}
