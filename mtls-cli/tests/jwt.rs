//! `mtls jwt keygen|jwks|mint|verify` end to end, with PyJWT verifying our tokens against our
//! JWKS (the independent check Envoy's jwt_authn gets in the bookstore example).
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{mtls_err, mtls_ok, words, words_and};

#[test]
fn keygen_jwks_mint_verify_round_trip_and_pyjwt_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut pubs = Vec::new();
    for (alg, name) in [("ES256", "es"), ("RS256", "rs"), ("EdDSA", "ed")] {
        let out = mtls_ok(
            d,
            &[
                "jwt", "keygen", "--alg", alg, "--out", "keys", "--name", name,
            ],
        );
        assert!(out.contains(&format!("keys/{name}-key.pem")), "{out}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.join(format!("keys/{name}-key.pem")))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        pubs.push(format!("keys/{name}.pub.pem"));
    }
    // Refuses to overwrite a key without --force.
    let err = mtls_err(d, &words("jwt keygen --alg ES256 --out keys --name es"));
    assert!(err.contains("es-key.pem"), "{err}");
    mtls_ok(
        d,
        &words("jwt keygen --alg ES256 --out keys --name es2 --force"),
    );

    let mut args = vec!["jwt", "jwks"];
    args.extend(pubs.iter().map(String::as_str));
    let jwks = mtls_ok(d, &args);
    std::fs::write(d.join("jwks.json"), &jwks).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 3);

    let mut tokens = Vec::new();
    for name in ["es", "rs", "ed"] {
        let key = format!("keys/{name}-key.pem");
        let token = mtls_ok(
            d,
            &[
                "jwt",
                "mint",
                "--key",
                &key,
                "--iss",
                "https://issuer.test",
                "--aud",
                "bookstore",
                "--sub",
                "spiffe://example.org/client",
                "--ttl",
                "5m",
                "--claim",
                "scope=read write",
                "--claim",
                "level=3",
            ],
        );
        tokens.push(token.trim().to_owned());
    }
    for token in &tokens {
        let out = mtls_ok(
            d,
            &words_and(
                "jwt verify --jwks jwks.json --iss https://issuer.test --aud bookstore",
                &[token],
            ),
        );
        let claims: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(claims["sub"], "spiffe://example.org/client");
        assert_eq!(claims["scope"], "read write");
        assert_eq!(claims["level"], 3);
    }

    // The default kid of `mint` is the thumbprint `jwks` gives, so an independent verifier
    // finds the key by kid.
    let out = mtls_test_support::pyjwt::verify(
        &d.join("jwks.json"),
        "https://issuer.test",
        "bookstore",
        &tokens,
    );
    assert_eq!(out.lines().count(), 3);

    // Named failures, non-zero exit.
    let expired = mtls_ok(
        d,
        &words(
            "jwt mint --key keys/es-key.pem --iss https://issuer.test --aud bookstore --sub s --ttl 1s --claim exp=1000",
        ),
    );
    let refused = |iss: &str, aud: &str, token: &str| {
        let mut args = words("jwt verify --jwks jwks.json --iss");
        args.extend([iss, "--aud", aud, token]);
        mtls_err(d, &args)
    };
    let err = refused("https://issuer.test", "other", &tokens[0]);
    assert!(err.contains("Audiences in Jwt are not allowed"), "{err}");
    let err = refused("https://evil.test", "bookstore", &tokens[0]);
    assert!(err.contains("Jwt issuer is not configured"), "{err}");
    let err = refused("https://issuer.test", "bookstore", expired.trim());
    assert!(err.contains("Jwt is expired"), "{err}");
    let err = refused("i", "a", "a.b");
    assert!(
        err.contains("Jwt is not in the form of Header.Payload.Signature"),
        "{err}"
    );
}

#[test]
fn jwks_kids_and_mint_kid_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mtls_ok(d, &words("jwt keygen --alg RS256 --out . --name k"));
    let jwks = mtls_ok(d, &words("jwt jwks k.pub.pem --kid my-key --alg PS256"));
    let doc: serde_json::Value = serde_json::from_str(&jwks).unwrap();
    assert_eq!(doc["keys"][0]["kid"], "my-key");
    assert_eq!(doc["keys"][0]["alg"], "PS256");
    std::fs::write(d.join("jwks.json"), &jwks).unwrap();
    let token = mtls_ok(
        d,
        &words(
            "jwt mint --key k-key.pem --alg PS256 --kid my-key --iss i --aud a --sub s --ttl 1m",
        ),
    );
    mtls_ok(
        d,
        &words_and(
            "jwt verify --jwks jwks.json --iss i --aud a",
            &[token.trim()],
        ),
    );
    // RS256 token against the PS256-only JWK: the kid's alg does not match.
    let rs = mtls_ok(
        d,
        &words("jwt mint --key k-key.pem --kid my-key --iss i --aud a --sub s --ttl 1m"),
    );
    let err = mtls_err(
        d,
        &words_and("jwt verify --jwks jwks.json --iss i --aud a", &[rs.trim()]),
    );
    assert!(
        err.contains("Jwks doesn't have key to match kid or alg from Jwt"),
        "{err}"
    );
    // No kid: matched by algorithm.
    let nokid = mtls_ok(
        d,
        &words("jwt mint --key k-key.pem --alg PS256 --no-kid --iss i --aud a --sub s --ttl 1m"),
    );
    mtls_ok(
        d,
        &words_and(
            "jwt verify --jwks jwks.json --iss i --aud a",
            &[nokid.trim()],
        ),
    );
    let err = mtls_err(d, &["jwt", "jwks", "missing.pem"]);
    assert!(err.contains("missing.pem"), "{err}");
}

/// A loopback HTTP server answering every request with `response`, in a thread; stopped
/// (and joined) when dropped.
struct Answer {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Answer {
    fn start(response: String) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut tcp, _)) => {
                        tcp.set_nonblocking(false).unwrap();
                        tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                            .unwrap();
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 4096];
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tcp.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        let _ = tcp.write_all(response.as_bytes());
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn redirect_to(location: &str) -> String {
    format!(
        "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// Issue 13 item 6 / issue 25 in the CLI: `jwt verify --jwks URL` follows no redirect (as
/// Envoy): a 3xx fails, naming where it pointed, even to a URL the policy would allow.
#[test]
fn verify_refuses_a_jwks_redirect_to_a_refused_url() {
    use mtls_jwt::{Algorithm, SigningKey, TokenSpec};
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(Algorithm::ES256).unwrap();
    let body = mtls_jwt::jwks_json([key.jwk(None)]);
    let keys = Answer::start(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ));
    let token = key
        .mint(
            &TokenSpec::new(std::time::Duration::from_secs(300))
                .issuer("iss")
                .audience("aud"),
        )
        .unwrap();
    let verify = |jwks: &str| {
        vec![
            "jwt".to_owned(),
            "verify".into(),
            "--jwks".into(),
            jwks.into(),
            "--iss".into(),
            "iss".into(),
            "--aud".into(),
            "aud".into(),
            token.clone(),
        ]
    };

    let port = keys.addr.port();
    let mut args = verify(&format!("http://127.0.0.1:{port}/keys"));
    mtls_ok(dir.path(), &as_strs(&args));
    // The token may be given as an `authorization` value (the one bearer parser).
    if let Some(last) = args.last_mut() {
        *last = format!("Bearer {last}");
    }
    mtls_ok(dir.path(), &as_strs(&args));
    let allowed_hop = format!("http://127.0.0.1:{port}/keys");
    let allowed = Answer::start(redirect_to(&allowed_hop));
    let err = mtls_err(
        dir.path(),
        &as_strs(&verify(&format!("http://{}/jwks", allowed.addr))),
    );
    assert!(
        err.contains("302") && err.contains(&allowed_hop) && err.contains("not allowed"),
        "names the status and the Location: {err}"
    );

    let refused = Answer::start(redirect_to(&format!("http://jwks.test:{port}/keys")));
    let args = verify(&format!("http://{}/jwks", refused.addr));
    let err = mtls_err(dir.path(), &as_strs(&args));
    assert!(
        err.contains("jwks.test") && err.contains("not allowed"),
        "names the refused hop and why: {err}"
    );
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Issue 16 item 5: `jwt verify` takes the token from stdin (`-`) or `--token-file`, so it
/// need not be an argument visible in `ps`; a missing file, an empty stdin and a token given
/// twice are refused with a message naming what was expected.
#[test]
fn verify_reads_the_token_from_stdin_or_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mtls_ok(d, &words("jwt keygen --alg ES256 --out . --name k"));
    std::fs::write(
        d.join("jwks.json"),
        mtls_ok(d, &["jwt", "jwks", "k.pub.pem"]),
    )
    .unwrap();
    let token = mtls_ok(
        d,
        &words("jwt mint --key k-key.pem --iss https://i.test --aud a --sub piped --ttl 5m"),
    );
    let token = token.trim();
    let verify = [
        "jwt",
        "verify",
        "--jwks",
        "jwks.json",
        "--iss",
        "https://i.test",
        "--aud",
        "a",
    ];
    fn joined<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    let with = |extra: &[&'static str]| joined(&verify, extra);
    let sub = |out: &std::process::Output| -> String {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        claims["sub"].as_str().unwrap().to_owned()
    };

    // stdin, bare with a trailing newline (`mint | verify -`) and as a Bearer header value.
    let out = support::mtls_with_stdin(d, &with(&["-"]), &format!("{token}\n"));
    assert_eq!(sub(&out), "piped");
    let out = support::mtls_with_stdin(d, &with(&["-"]), &format!("Bearer {token}"));
    assert_eq!(sub(&out), "piped");

    // --token-file, surrounding whitespace ignored.
    std::fs::write(d.join("token"), format!("\n  {token}\n\n")).unwrap();
    let out = support::mtls(d, &with(&["--token-file", "token"]));
    assert_eq!(sub(&out), "piped");

    // A tampered token read from the file is still refused (the file's token is checked).
    let mut tampered = token.to_owned();
    tampered.push('A');
    std::fs::write(d.join("bad"), &tampered).unwrap();
    let err = mtls_err(d, &with(&["--token-file", "bad"]));
    assert!(err.contains("Jwt"), "{err}");

    let err = mtls_err(d, &with(&["--token-file", "missing.jwt"]));
    assert!(
        err.contains("--token-file") && err.contains("missing.jwt"),
        "{err}"
    );
    let out = support::mtls_with_stdin(d, &with(&["-"]), " \n");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the token is empty") && err.contains("header.payload.signature"),
        "{err}"
    );
    // One token source only.
    let out = support::mtls(d, &joined(&verify, &[token, "--token-file", "token"]));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--token-file") && err.contains("cannot be used with"),
        "{err}"
    );
    // None at all.
    let out = support::mtls(d, &verify);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file"), "{err}");
}
