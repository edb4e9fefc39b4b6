//! Issue 13 item 3: SPIFFE IDs and trust domains in configuration are parsed as strictly as
//! in certificates. The reference is go-spiffe v2's own test vectors (spiffeid/id_test.go
//! `TestFromString`, trustdomain_test.go `TestTrustDomainFromString`), replayed here against
//! `mtls_core::SpiffeId` / `TrustDomain` — the types every configuration entry point takes
//! (`Authorize::exact`, `member_of`, `TrustBundle::add_domain_*`, ...).
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mtls_core::{Authorize, Authorizer, SpiffeId, TrustBundle, TrustDomain};
// the parser's own error: the types live in mtls-identity, the family's foundation
use mtls_identity::Error;

fn td_char(c: char) -> bool {
    matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')
}

fn path_char(c: char) -> bool {
    td_char(c) || c.is_ascii_uppercase()
}

#[track_caller]
fn id_ok(s: &str, td: &str, path: &str) {
    let id = SpiffeId::new(s).unwrap_or_else(|e| panic!("{s:?} refused: {e}"));
    assert_eq!((id.trust_domain().as_str(), id.path()), (td, path), "{s:?}");
    assert_eq!(id.to_string(), s, "nothing is rewritten");
}

#[track_caller]
fn id_err(s: &str, why: &str) {
    match SpiffeId::new(s) {
        Err(Error::InvalidSpiffeId { presented, reason }) => {
            assert_eq!(presented, s);
            assert!(reason.contains(why), "{s:?}: {reason:?} should say {why:?}");
        }
        other => panic!("{s:?} should be refused ({why}), got {other:?}"),
    }
}

#[track_caller]
fn td_ok(s: &str, expected: &str) {
    let td = TrustDomain::new(s).unwrap_or_else(|e| panic!("{s:?} refused: {e}"));
    assert_eq!(td.as_str(), expected, "{s:?}");
}

#[track_caller]
fn td_err(s: &str, why: &str) {
    match TrustDomain::new(s) {
        Err(Error::InvalidSpiffeId { reason, .. }) => {
            assert!(reason.contains(why), "{s:?}: {reason:?} should say {why:?}");
        }
        other => panic!("{s:?} should be refused ({why}), got {other:?}"),
    }
}

const BAD_TD: &str = "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores";
const BAD_PATH: &str =
    "path segment characters are limited to letters, numbers, dots, dashes, and underscores";

#[test]
fn go_spiffe_from_string_vectors() {
    id_err("", "cannot be empty");
    id_ok("spiffe://trustdomain", "trustdomain", "");
    // Every code point up to 255 (UTF-8 encoded for those above 127), as go-spiffe does.
    for i in 0u32..256 {
        let c = char::from_u32(i).unwrap();
        if c == '/' {
            continue;
        }
        let with_td = format!("spiffe://trustdomain{c}/path");
        if td_char(c) {
            id_ok(&with_td, &format!("trustdomain{c}"), "/path");
        } else {
            id_err(&with_td, BAD_TD);
        }
        let with_path = format!("spiffe://trustdomain/path{c}");
        if path_char(c) {
            id_ok(&with_path, "trustdomain", &format!("/path{c}"));
        } else {
            id_err(&with_path, BAD_PATH);
        }
    }
    for bad_scheme in [
        "s",
        "spiffe:/",
        "Spiffe://",
        "SPIFFE://trustdomain/path",
        "https://trustdomain/path",
    ] {
        id_err(bad_scheme, "scheme");
    }
    id_err("spiffe://", "trust domain is missing");
    id_err("spiffe:///", "trust domain is missing");
    id_err("spiffe://trustdomain/", "trailing slash");
    id_err("spiffe://trustdomain//", "empty segments");
    id_err("spiffe://trustdomain//path", "empty segments");
    id_err("spiffe://trustdomain/path/", "trailing slash");
    for dots in [
        "spiffe://trustdomain/.",
        "spiffe://trustdomain/./path",
        "spiffe://trustdomain/path/./other",
        "spiffe://trustdomain/path/..",
        "spiffe://trustdomain/..",
        "spiffe://trustdomain/../path",
        "spiffe://trustdomain/path/../other",
    ] {
        id_err(dots, "dot segments");
    }
    id_ok("spiffe://trustdomain/.path", "trustdomain", "/.path");
    id_ok("spiffe://trustdomain/..path", "trustdomain", "/..path");
    id_ok("spiffe://trustdomain/...", "trustdomain", "/...");
    id_err("spiffe://%F0%9F%A4%AF/path", BAD_TD);
    id_err("spiffe://trustdomain/%F0%9F%A4%AF", BAD_PATH);
    id_err("spiffe://%62%61%64/path", BAD_TD);
    id_err("spiffe://trustdomain/%62%61%64", BAD_PATH);
    // Beyond go-spiffe, from the spec: port, user info, query, fragment, lengths.
    id_err("spiffe://trustdomain:8443/path", "no port");
    id_err("spiffe://user@trustdomain/path", "no user info");
    id_err("spiffe://trustdomain/path?x=1", "no query");
    id_err("spiffe://trustdomain/path#x", "no fragment");
    id_err(&format!("spiffe://{}/a", "a".repeat(256)), "at most 255");
    id_err(&format!("spiffe://td/{}", "a".repeat(2048)), "at most 2048");
}

#[test]
fn go_spiffe_trust_domain_from_string_vectors() {
    td_err("", "trust domain is missing");
    td_ok("spiffe://trustdomain", "trustdomain");
    td_ok("spiffe://trustdomain/path", "trustdomain");
    td_err("spiffe:/trustdomain/path", "scheme");
    td_err("spiffe://", "trust domain is missing");
    td_err("spiffe:///path", "trust domain is missing");
    td_err("spiffe://trustdomain/", "trailing slash");
    td_err("spiffe://trustdomain/path/", "trailing slash");
    td_err("spiffe://%F0%9F%A4%AF/path", BAD_TD);
    td_err("spiffe://trustdomain/%F0%9F%A4%AF", BAD_PATH);
    for i in 0u32..256 {
        let c = char::from_u32(i).unwrap();
        let name = format!("trustdomain{c}");
        if td_char(c) {
            td_ok(&name, &name);
            td_ok(&format!("spiffe://{name}"), &name);
        } else {
            td_err(&name, BAD_TD);
        }
    }
    // FromURI: the scheme is case-sensitive too.
    td_err("SPIFFE://trustdomain", "scheme");
    td_err("spiffe://trust$domain", BAD_TD);
    td_err("spiffe://trustdomain/path$", BAD_PATH);
}

/// The configuration entry points take these types, so what `.parse()` refuses never
/// reaches them — where the `spiffe` crate's types used to lower-case or ignore it.
#[test]
fn configuration_entry_points_refuse_what_go_spiffe_refuses() {
    let e = "spiffe://Example.org/ns/a".parse::<SpiffeId>().unwrap_err();
    assert!(e.to_string().contains("lower case"), "{e}");
    let e = "SPIFFE://example.org/ns/a".parse::<SpiffeId>().unwrap_err();
    assert!(e.to_string().contains("scheme"), "{e}");
    let e = "Example.org".parse::<TrustDomain>().unwrap_err();
    assert!(e.to_string().contains("lower case"), "{e}");
    let e = "spiffe://example.org/ns/"
        .parse::<TrustDomain>()
        .unwrap_err();
    assert!(e.to_string().contains("trailing slash"), "{e}");

    // What is accepted means exactly what it says.
    let exact = Authorize::exact("spiffe://example.org/ns/a".parse().unwrap());
    assert!(exact.authorize(&"spiffe://example.org/ns/a".parse().unwrap()));
    let member = Authorize::member_of("spiffe://example.org/ns/a".parse().unwrap());
    assert!(member.authorize(&"spiffe://example.org/x".parse().unwrap()));
    let ca = mtls_certs::CertificateAuthority::new_root(&mtls_certs::CaParams::new("R")).unwrap();
    let set = TrustBundle::spiffe()
        .add_domain_pem("example.org".parse().unwrap(), ca.cert_pem())
        .unwrap();
    assert_eq!(set.trust_domains().next().unwrap().as_str(), "example.org");

    // Interop with the spiffe crate's types: strict both ways.
    let lenient = spiffe::SpiffeId::new("spiffe://EXAMPLE.org/a").unwrap();
    let strict = SpiffeId::try_from(&lenient).unwrap();
    assert_eq!(strict.to_string(), "spiffe://example.org/a");
    assert_eq!(spiffe::SpiffeId::from(strict.clone()), lenient);
}
