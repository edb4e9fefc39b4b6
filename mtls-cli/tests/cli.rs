//! The `mtls` command end to end: the quick start, checked with the real `openssl` CLI.
// Tests may panic: a panic is a failed assertion here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{cfssl_fixtures, mtls_err, mtls_ok, openssl, words, words_and};

#[test]
fn quick_start_chain_verifies_with_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    mtls_ok(d, &words_and("ca init --out root --cn", &["Mesh Root"]));
    mtls_ok(
        d,
        &words_and(
            "ca intermediate --ca root --out int --cn",
            &["Mesh Intermediate"],
        ),
    );
    mtls_ok(
        d,
        &words(
            "cert issue --ca int --out certs --name server --profile server --san bookstore.local --san 127.0.0.1",
        ),
    );
    mtls_ok(
        d,
        &words(
            "cert issue --ca int --out certs --name client --profile client --san app-internal-api",
        ),
    );
    mtls_ok(
        d,
        &words(
            "cert issue --ca int --out certs --name bookstore --profile svid --spiffe-id spiffe://mesh.internal/ns/shop/sa/bookstore --ttl 1h",
        ),
    );
    mtls_ok(
        d,
        &words(
            "cert issue --ca int --out certs --name peer --profile peer --san peer.local --key-alg rsa2048",
        ),
    );

    for name in ["server", "client", "bookstore", "peer"] {
        let leaf = format!("certs/{name}.pem");
        let (ok, out) = openssl(
            d,
            &words_and("verify -CAfile root/ca.pem -untrusted int/ca.pem", &[&leaf]),
        );
        assert!(ok, "{out}");
        // NAME.pem holds leaf then intermediate, so it is its own -untrusted bundle
        let (ok, out) = openssl(
            d,
            &words_and("verify -CAfile root/ca.pem -untrusted", &[&leaf, &leaf]),
        );
        assert!(ok, "{out}");
        let (ok, text) = openssl(d, &words_and("x509 -text -noout -in", &[&leaf]));
        assert!(ok);
        assert!(text.contains("CA:FALSE"), "{text}");
        assert!(text.contains("X509v3 Authority Key Identifier"));
        assert!(text.contains("X509v3 Subject Key Identifier"));
        mtls_ok(d, &words_and("cert verify --ca root/ca.pem", &[&leaf]));
    }
    let (_, root) = openssl(d, &words("x509 -text -noout -in root/ca.pem"));
    assert!(root.contains("CA:TRUE, pathlen:1"));
    let (_, int) = openssl(d, &words("x509 -text -noout -in int/ca.pem"));
    assert!(int.contains("CA:TRUE, pathlen:0"));
    let (_, svid) = openssl(d, &words("x509 -text -noout -in certs/bookstore.pem"));
    assert!(svid.contains("URI:spiffe://mesh.internal/ns/shop/sa/bookstore"));
    assert!(svid.contains("TLS Web Server Authentication, TLS Web Client Authentication"));
    let (_, peer) = openssl(d, &words("x509 -text -noout -in certs/peer.pem"));
    assert!(peer.contains("Digital Signature, Key Encipherment"));

    #[cfg(unix)]
    for key in [
        "root/ca-key.pem",
        "int/ca-key.pem",
        "certs/server-key.pem",
        "certs/bookstore-key.pem",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }

    // inspect --json
    let json: serde_json::Value = serde_json::from_str(&mtls_ok(
        d,
        &words("cert inspect --json certs/bookstore.pem"),
    ))
    .unwrap();
    let leaf = &json[0];
    assert_eq!(
        leaf["spiffe_id"],
        "spiffe://mesh.internal/ns/shop/sa/bookstore"
    );
    assert_eq!(leaf["is_ca"], false);
    assert_eq!(leaf["sans"][0]["type"], "uri");
    assert_eq!(json[1]["path_len"], 0);
    let text = mtls_ok(d, &["cert", "inspect", "root/ca.pem"]);
    assert!(text.contains("CA:             TRUE, pathlen 1"), "{text}");

    // renew-check
    let out = mtls_ok(d, &["cert", "renew-check", "certs/bookstore.pem"]);
    assert!(out.contains("not due"), "{out}");
    let out = mtls_ok(
        d,
        &words("cert renew-check --json --fraction 0.5 certs/server.pem"),
    );
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["due"], false);
}

#[test]
fn sign_csr_made_by_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    mtls_ok(d, &words("ca init --out ca"));
    let (ok, out) = openssl(
        d,
        &words(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout w.key -out w.csr -subj /CN=worker -addext subjectAltName=URI:spiffe://example.org/worker",
        ),
    );
    assert!(ok, "{out}");
    mtls_ok(
        d,
        &words("cert sign-csr --ca ca --profile svid --trust-domain example.org --out w.pem w.csr"),
    );
    let (ok, out) = openssl(d, &words("verify -CAfile ca/ca.pem w.pem"));
    assert!(ok, "{out}");
    let err = mtls_err(
        d,
        &words("cert sign-csr --ca ca --trust-domain other.org w.csr"),
    );
    assert!(
        err.contains("expected only SPIFFE IDs in trust domain other.org"),
        "{err}"
    );

    let (ok, out) = openssl(
        d,
        &words(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca2.key -out ca2.csr -subj /CN=wannabe -addext basicConstraints=critical,CA:TRUE -addext subjectAltName=DNS:x.local",
        ),
    );
    assert!(ok, "{out}");
    let err = mtls_err(d, &words("cert sign-csr --ca ca ca2.csr"));
    assert!(err.contains("CA:TRUE"), "{err}");
    let chain = mtls_ok(d, &words("cert sign-csr --ca ca --strip-ca ca2.csr"));
    std::fs::write(d.join("stripped.pem"), chain).unwrap();
    let (_, text) = openssl(d, &words("x509 -text -noout -in stripped.pem"));
    assert!(text.contains("CA:FALSE"), "{text}");
}

#[test]
fn cfssl_fixtures_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let fx = cfssl_fixtures();
    let f = |n: &str| fx.join(n).to_str().unwrap().to_owned();
    mtls_ok(d, &["cfssl", "initca", &f("ca-csr.json"), "--out", "out"]);
    mtls_ok(
        d,
        &words_and(
            "cfssl gencert --ca out/ca.pem --ca-key out/ca-key.pem --config",
            &[&f("server-config.json"), &f("server.json"), "--out", "out"],
        ),
    );
    mtls_ok(
        d,
        &words_and(
            "cfssl gencert --ca out/ca.pem --ca-key out/ca-key.pem --config",
            &[
                &f("client-config.json"),
                &f("client.json"),
                "--out",
                "out",
                "--bare",
                "client",
            ],
        ),
    );
    for file in mtls_test_support::cfssl_files::bare(&["ca", "server", "client"]) {
        assert!(d.join("out").join(&file).is_file(), "{file}");
    }
    let (ok, out) = openssl(
        d,
        &words("verify -CAfile out/ca.pem out/server.pem out/client.pem"),
    );
    assert!(ok, "{out}");
    let (_, client) = openssl(d, &words("x509 -text -noout -in out/client.pem"));
    assert!(client.contains("DNS:app-internal-api"), "{client}");
    assert!(client.contains("TLS Web Client Authentication"));
    assert!(client.contains("Digital Signature, Key Encipherment"));
    let (_, server) = openssl(d, &words("x509 -text -noout -in out/server.pem"));
    assert!(server.contains("TLS Web Server Authentication"));

    // our CLI commands work on the cfssl output directory too
    mtls_ok(
        d,
        &words("cert issue --ca out --out out --name extra --profile peer --san extra.local"),
    );
}

#[test]
fn errors_name_expected_and_found() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    mtls_ok(d, &words("ca init --out ca"));

    // never overwrite a key without --force
    let err = mtls_err(d, &words("ca init --out ca"));
    assert!(
        err.contains("refusing to overwrite") && err.contains("ca-key.pem"),
        "{err}"
    );
    mtls_ok(d, &words("ca init --out ca --force"));
    mtls_ok(
        d,
        &words("cert issue --ca ca --out o --name a --profile server --san a.local"),
    );
    let err = mtls_err(
        d,
        &words("cert issue --ca ca --out o --name a --profile server --san a.local"),
    );
    assert!(err.contains("--force"), "{err}");

    // a leaf is not a CA
    std::fs::create_dir(d.join("fake")).unwrap();
    std::fs::copy(d.join("o/a.pem"), d.join("fake/ca.pem")).unwrap();
    std::fs::copy(d.join("o/a-key.pem"), d.join("fake/ca-key.pem")).unwrap();
    let err = mtls_err(
        d,
        &words("cert issue --ca fake --out o --name b --profile client"),
    );
    assert!(
        err.contains("expected basicConstraints CA:TRUE, presented CA:FALSE"),
        "{err}"
    );

    // invalid SPIFFE ID, RSA 1024, unknown profile, bad duration
    let err = mtls_err(
        d,
        &words(
            "cert issue --ca ca --out o --name s --profile svid --spiffe-id spiffe://Example.org/x",
        ),
    );
    assert!(err.contains("invalid SPIFFE ID"), "{err}");
    let err = mtls_err(d, &words("ca init --out rsa --key-alg rsa1024"));
    assert!(
        err.contains("expected 2048, 3072 or 4096 bits, presented 1024"),
        "{err}"
    );
    let err = mtls_err(d, &words("ca init --out x --ttl soon"));
    assert!(err.contains("expected e.g. 24h"), "{err}");

    // verification against the wrong CA
    mtls_ok(d, &words("ca init --out other"));
    let err = mtls_err(d, &words("cert verify --ca other/ca.pem o/a.pem"));
    assert!(err.contains("chain verification failed"), "{err}");

    // garbage input
    std::fs::write(d.join("junk.pem"), "not a certificate").unwrap();
    let err = mtls_err(d, &["cert", "inspect", "junk.pem"]);
    assert!(err.contains("expected CERTIFICATE"), "{err}");

    // unknown cfssl usage
    std::fs::write(
        d.join("bad-config.json"),
        r#"{"signing":{"default":{"usages":["server auht"]}}}"#,
    )
    .unwrap();
    let fx = cfssl_fixtures().join("server.json");
    let err = mtls_err(
        d,
        &words_and(
            "cfssl gencert --ca ca/ca.pem --ca-key ca/ca-key.pem --config bad-config.json",
            &[fx.to_str().unwrap(), "--out", "c"],
        ),
    );
    assert!(err.contains("unknown cfssl usage \"server auht\""), "{err}");
}

/// Issue 13 item 3: `--spiffe-id` and `--trust-domain` go through mtls-core's strict
/// parser — refused with the reason, never lower-cased or trimmed.
#[test]
fn spiffe_flags_are_parsed_strictly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    mtls_ok(d, &words("ca init --out ca"));
    for (bad, why) in [
        ("spiffe://Example.org/web", "lower case"),
        ("SPIFFE://example.org/web", "scheme"),
        ("spiffe://example.org/web/", "trailing slash"),
    ] {
        let err = mtls_err(
            d,
            &words_and(
                "cert issue --ca ca --out certs --name w --profile svid --spiffe-id",
                &[bad],
            ),
        );
        assert!(
            err.contains("--spiffe-id") && err.contains(why),
            "{bad}: {err}"
        );
    }
    let (ok, out) = openssl(
        d,
        &words(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout w-key.pem -subj /CN=w -addext subjectAltName=URI:spiffe://example.org/w -out w.csr",
        ),
    );
    assert!(ok, "{out}");
    for (bad, why) in [
        ("Example.org", "lower case"),
        ("spiffe://example.org/", "trailing slash"),
    ] {
        let err = mtls_err(
            d,
            &words_and("cert sign-csr --ca ca --trust-domain", &[bad, "w.csr"]),
        );
        assert!(
            err.contains("--trust-domain") && err.contains(why),
            "{bad}: {err}"
        );
    }
}
