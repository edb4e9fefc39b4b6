//! The SAN-matcher loader: Envoy's `match_typed_subject_alt_names` as JSON or YAML, and the
//! command-line form `TYPE:MATCHER:VALUE`.

use std::net::IpAddr;

use mtls_core::{SanMatcher, SanType, SubjectAltName};
use serde_json::Value;

/// `data` = one format byte, then a policy, then (after a NUL byte) values to match.
///
/// Format byte (mod 3): 0 JSON list, 1 YAML list, 2 one CLI-form matcher per line. Every
/// matcher that loads must survive a serde round trip (serialize, load again) with the same
/// display and the same verdicts, and for `exact`/`prefix`/`suffix`/`contains` on URI,
/// EMAIL and IP SANs its verdict must be Envoy's `StringMatcher` rule, recomputed here.
pub fn san_matcher(data: &[u8]) {
    let Some((&format, rest)) = data.split_first() else {
        return;
    };
    let (policy, values) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let matchers: Vec<SanMatcher> = match format % 3 {
        0 => match serde_json::from_slice(policy) {
            Ok(m) => m,
            Err(_) => return,
        },
        1 => match serde_yaml_ng::from_slice(policy) {
            Ok(m) => m,
            Err(_) => return,
        },
        _ => {
            let Ok(text) = std::str::from_utf8(policy) else {
                return;
            };
            text.lines().filter_map(|l| l.parse().ok()).collect()
        }
    };

    let values = String::from_utf8_lossy(values);
    let mut sans = Vec::new();
    for v in values.split('\n') {
        sans.push(SubjectAltName::Dns(v.to_owned()));
        sans.push(SubjectAltName::Uri(v.to_owned()));
        sans.push(SubjectAltName::Email(v.to_owned()));
        if let Ok(ip) = v.parse::<IpAddr>() {
            sans.push(SubjectAltName::IpAddress(ip));
        }
    }

    let json = serde_json::to_string(&matchers).expect("loaded matchers serialize");
    let again: Vec<SanMatcher> = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("serialized matchers do not load again: {e}\n{json}"));
    assert_eq!(again.len(), matchers.len());
    for (m, m2) in matchers.iter().zip(&again) {
        assert_eq!(
            m.to_string(),
            m2.to_string(),
            "display after a serde round trip"
        );
        assert_eq!(m.san_type(), m2.san_type());
        let raw = serde_json::to_value(m.matcher()).expect("a matcher serializes");
        for san in &sans {
            let verdict = m.matches(san);
            assert_eq!(verdict, m2.matches(san), "{m} on {san} after a round trip");
            if san.san_type() != m.san_type() {
                assert!(!verdict, "{m} matched a SAN of another type: {san}");
            } else if m.san_type() != SanType::Dns
                && let Some(expected) = envoy_string_match(&raw, &san.value())
            {
                assert_eq!(verdict, expected, "{m} on {san}");
            }
        }
        assert_eq!(
            SanMatcher::matches_any(std::slice::from_ref(m), &sans),
            sans.iter().any(|s| m.matches(s))
        );
    }
}

/// Envoy's `StringMatcher` for the non-regex patterns, from the serialized form.
fn envoy_string_match(raw: &Value, value: &str) -> Option<bool> {
    let ic = raw
        .get("ignore_case")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let fold = |s: &str| {
        if ic {
            s.to_ascii_lowercase()
        } else {
            s.to_owned()
        }
    };
    let text = |k: &str| raw.get(k).and_then(Value::as_str).map(fold);
    let value = fold(value);
    if let Some(p) = text("exact") {
        Some(value == p)
    } else if let Some(p) = text("prefix") {
        Some(value.starts_with(&p))
    } else if let Some(p) = text("suffix") {
        Some(value.ends_with(&p))
    } else {
        text("contains").map(|p| value.contains(&p))
    }
}
