//! Property tests: SPIFFE IDs display as they were parsed, and near misses are refused.
// Tests may panic: a failed assertion is the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mtls_certs::{Error, SpiffeId, TrustDomain};

/// The strict parse, with mtls-certs' error (what `LeafParams`/`CsrPolicy` report).
fn parse_spiffe_id(id: &str) -> Result<SpiffeId, Error> {
    SpiffeId::new(id).map_err(Error::from)
}
use proptest::prelude::*;

/// A trust domain name as the spec allows it: `[a-z0-9._-]`, up to 255 bytes.
fn trust_domain() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{1,64}"
}

/// Path segments `[a-zA-Z0-9._-]+`, never `.` or `..`.
fn segments() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        "[a-zA-Z0-9._-]{1,16}".prop_filter("dot segment", |s| s != "." && s != ".."),
        0..6,
    )
}

fn id_text(td: &str, segments: &[String]) -> String {
    let path: String = segments.iter().map(|s| format!("/{s}")).collect();
    format!("spiffe://{td}{path}")
}

proptest! {
    #[test]
    fn display_parse_round_trip(td in trust_domain(), segments in segments()) {
        let text = id_text(&td, &segments);
        let id = parse_spiffe_id(&text).unwrap();
        prop_assert_eq!(id.to_string(), text.clone());
        prop_assert_eq!(id.trust_domain().as_str(), td.as_str());
        prop_assert_eq!(parse_spiffe_id(&id.to_string()).unwrap(), id.clone());

        // The same ID built from its parts.
        let parts: Vec<&str> = segments.iter().map(String::as_str).collect();
        let built = SpiffeId::from_segments(TrustDomain::new(&td).unwrap(), &parts).unwrap();
        prop_assert_eq!(built, id);
    }

    #[test]
    fn near_misses_are_refused(
        td in trust_domain(),
        segments in segments(),
        at in any::<prop::sample::Index>(),
        upper in "[A-Z]",
        bad in prop::sample::select(vec!["/", "?", "#", "%41", ":443", "@", " ", "é", "//", "/."]),
    ) {
        let text = id_text(&td, &segments);
        let mut candidates = vec![
            // an uppercase letter in the trust domain
            {
                let i = at.index(td.len() + 1);
                format!("spiffe://{}{upper}{}{}", &td[..i], &td[i..], &text["spiffe://".len() + td.len()..])
            },
            text.replacen("spiffe", "SPIFFE", 1),
            format!("{text}/"),
            format!("{text}{bad}"),
        ];
        if !segments.is_empty() {
            candidates.push(format!("{text}/.."));
        }
        for candidate in candidates {
            prop_assert!(
                matches!(parse_spiffe_id(&candidate), Err(Error::InvalidSpiffeId { .. })),
                "accepted {:?}", candidate
            );
        }
    }
}
