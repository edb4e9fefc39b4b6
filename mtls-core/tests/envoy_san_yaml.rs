//! `match_typed_subject_alt_names` copied from an Envoy listener config (YAML) loads
//! unchanged, and matching agrees with Envoy's semantics on a table of cases
//! (source/common/tls/cert_validator/san_matcher.cc and Utility::dnsNameMatch in Envoy).
// Tests may panic: a failed setup step should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use mtls_core::{SanMatcher, SubjectAltName};

/// A DownstreamTlsContext as written for Envoy 1.40; only the SAN block is ours to read.
const ENVOY_LISTENER_TLS: &str = r#"
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
    require_client_certificate: true
    common_tls_context:
      alpn_protocols: ["h2", "http/1.1"]
      tls_certificates:
      - certificate_chain: { filename: /etc/envoy/certs/server.pem }
        private_key: { filename: /etc/envoy/certs/server-key.pem }
      validation_context:
        trusted_ca: { filename: /etc/envoy/certs/ca.pem }
        match_typed_subject_alt_names:
        - san_type: URI
          matcher:
            prefix: "spiffe://example.org/ns/prod/"
        - san_type: DNS
          matcher:
            exact: "api.example.com"
        - san_type: DNS
          matcher:
            suffix: ".internal.example.com"
            ignore_case: true
        - san_type: EMAIL
          matcher:
            safe_regex:
              google_re2: {}
              regex: "[a-z]+@ops\\.example\\.com"
        - san_type: IP_ADDRESS
          matcher:
            exact: "10.0.0.7"
        - san_type: URI
          matcher:
            contains: "/sa/billing"
            ignore_case: true
"#;

fn load() -> Vec<SanMatcher> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(ENVOY_LISTENER_TLS).unwrap();
    let block = &doc["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
        ["match_typed_subject_alt_names"];
    serde_yaml_ng::from_value(block.clone()).unwrap()
}

fn dns(s: &str) -> SubjectAltName {
    SubjectAltName::Dns(s.into())
}
fn uri(s: &str) -> SubjectAltName {
    SubjectAltName::Uri(s.into())
}
fn email(s: &str) -> SubjectAltName {
    SubjectAltName::Email(s.into())
}
fn ip(s: &str) -> SubjectAltName {
    SubjectAltName::IpAddress(s.parse::<IpAddr>().unwrap())
}

#[test]
fn envoy_block_loads_and_matches_like_envoy() {
    let policy = load();
    assert_eq!(policy.len(), 6);

    // (certificate SANs, Envoy's verdict, why)
    let cases: Vec<(Vec<SubjectAltName>, bool, &str)> = vec![
        (
            vec![uri("spiffe://example.org/ns/prod/sa/web")],
            true,
            "URI prefix",
        ),
        (
            vec![uri("spiffe://example.org/ns/production/sa/web")],
            false,
            "string prefix is literal: /ns/prod/ needs the slash",
        ),
        (
            vec![uri("SPIFFE://EXAMPLE.ORG/ns/prod/sa/web")],
            false,
            "prefix without ignore_case is case-sensitive",
        ),
        (
            vec![dns("spiffe://example.org/ns/prod/sa/web")],
            false,
            "the SAN type must match: a DNS SAN never meets a URI matcher",
        ),
        (vec![dns("api.example.com")], true, "DNS exact"),
        (
            vec![dns("API.Example.COM")],
            true,
            "DNS exact uses DNS matching: case-insensitive",
        ),
        (
            vec![dns("*.example.com")],
            true,
            "DNS exact: a wildcard SAN covers one label (api.)",
        ),
        (
            vec![dns("*.com")],
            false,
            "a wildcard covers exactly one label, not api.example",
        ),
        (
            vec![dns("api.example.com.evil")],
            false,
            "DNS exact is not a prefix",
        ),
        (
            vec![dns("db.INTERNAL.example.com")],
            true,
            "suffix with ignore_case",
        ),
        (
            vec![dns("internal.example.com")],
            false,
            "suffix includes the leading dot",
        ),
        (vec![email("alice@ops.example.com")], true, "safe_regex"),
        (
            vec![email("alice@ops.example.com.evil")],
            false,
            "safe_regex is a full match",
        ),
        (
            vec![email("Alice@ops.example.com")],
            false,
            "safe_regex is case-sensitive",
        ),
        (
            vec![uri("alice@ops.example.com")],
            false,
            "EMAIL matcher ignores URI SANs",
        ),
        (
            vec![ip("10.0.0.7")],
            true,
            "IP_ADDRESS exact on the textual address",
        ),
        (vec![ip("10.0.0.70")], false, "IP exact is not a prefix"),
        (
            vec![dns("10.0.0.7")],
            false,
            "a DNS SAN spelled like the IP is not an IP SAN",
        ),
        (
            vec![uri("spiffe://other.org/ns/dev/SA/Billing")],
            true,
            "contains with ignore_case",
        ),
        (vec![], false, "no SANs at all"),
        (
            vec![dns("nope.example.net"), uri("urn:x"), ip("10.0.0.7")],
            true,
            "any matcher matching any SAN accepts",
        ),
        (
            vec![
                dns("nope.example.net"),
                uri("urn:x"),
                email("bob@example.com"),
            ],
            false,
            "none matches",
        ),
    ];
    for (sans, expected, why) in cases {
        assert_eq!(
            SanMatcher::matches_any(&policy, &sans),
            expected,
            "{why}: {sans:?}"
        );
    }
}

#[test]
fn envoy_shape_errors_are_specific() {
    let two_patterns = "- san_type: URI\n  matcher: { exact: a, prefix: b }\n";
    let err = serde_yaml_ng::from_str::<Vec<SanMatcher>>(two_patterns).unwrap_err();
    assert!(
        err.to_string().contains("exactly one of exact, prefix"),
        "{err}"
    );

    let unspecified = "- san_type: SAN_TYPE_UNSPECIFIED\n  matcher: { exact: a }\n";
    let err = serde_yaml_ng::from_str::<Vec<SanMatcher>>(unspecified).unwrap_err();
    assert!(err.to_string().contains("SAN_TYPE_UNSPECIFIED"), "{err}");

    let bad_regex = "- san_type: URI\n  matcher: { safe_regex: { regex: '(' } }\n";
    let err = serde_yaml_ng::from_str::<Vec<SanMatcher>>(bad_regex).unwrap_err();
    assert!(err.to_string().contains("does not compile"), "{err}");

    let empty_prefix = "- san_type: DNS\n  matcher: { prefix: '' }\n";
    let err = serde_yaml_ng::from_str::<Vec<SanMatcher>>(empty_prefix).unwrap_err();
    assert!(
        err.to_string().contains("prefix must not be empty"),
        "{err}"
    );

    // Envoy's JSON form (camelCase from protobuf JSON) loads too.
    let json =
        r#"[{"sanType": "DNS", "matcher": {"exact": "api.example.com", "ignoreCase": true}}]"#;
    let policy: Vec<SanMatcher> = serde_json::from_str(json).unwrap();
    assert!(SanMatcher::matches_any(&policy, &[dns("api.example.com")]));
}
