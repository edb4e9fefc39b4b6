//! SPIFFE ID and trust-domain parsing, checked against go-spiffe's rules.

use mtls_core::{SpiffeId, TrustDomain};

use crate::reference;

/// Parses `data` as a SPIFFE ID and as a trust domain with every parser we ship, and checks
/// each verdict against [`reference::spiffe_id`] / [`reference::trust_domain_name`].
///
/// - `mtls_certs::SpiffeId::new` (the strict parser) agrees with the reference exactly,
///   and what it accepts displays as the input, byte for byte;
/// - `mtls_core::SpiffeId::new` (the parser configuration and certificates go through) agrees
///   with the reference except for the specification's length limits (trust domain 255 bytes,
///   ID 2048 bytes), displays what it accepts byte for byte and round-trips;
/// - `mtls_core::TrustDomain::new` agrees with the reference on bare names (an input with a
///   scheme is parsed as an ID, as go-spiffe does) and keeps a canonical name as is.
pub fn spiffe_id(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let expected = reference::spiffe_id(input);

    let strict = mtls_certs::SpiffeId::new(input);
    match (&strict, &expected) {
        (Ok(id), Ok((td, path))) => {
            assert_eq!(id.to_string(), input, "display of an accepted ID");
            assert_eq!(id.trust_domain().as_str(), *td);
            assert_eq!(id.path(), *path);
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(why)) => panic!("SpiffeId::new accepted {input:?}; go-spiffe: {why}"),
        (Err(e), Ok(_)) => panic!("SpiffeId::new refused {input:?} ({e}); go-spiffe accepts it"),
    }

    match SpiffeId::new(input) {
        Ok(id) => {
            let shown = id.to_string();
            assert!(
                expected.is_ok(),
                "SpiffeId::new accepted {input:?}; go-spiffe refuses it"
            );
            assert_eq!(shown, input, "display of an accepted ID");
            let again = SpiffeId::new(&shown).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            assert_eq!(again, id, "display/parse round trip");
        }
        // Stricter than go-spiffe only where the specification sets lengths (SPIFFE-ID
        // §2.1: trust domain <= 255 bytes, §2.3: ID <= 2048 bytes).
        Err(e) => assert!(
            match &expected {
                Err(_) => true,
                Ok((td, _)) => input.len() > 2048 || td.len() > 255,
            },
            "SpiffeId::new refused {input:?} ({e}); go-spiffe accepts it"
        ),
    }

    let name_ok = reference::trust_domain_name(input);
    match TrustDomain::new(input) {
        Ok(td) => {
            let shown = td.to_string();
            assert!(
                reference::trust_domain_name(&shown).is_ok(),
                "TrustDomain::new({input:?}) displays as {shown:?}"
            );
            assert_eq!(td.id_string(), format!("spiffe://{shown}"));
            if !input.contains(":/") {
                assert!(
                    name_ok.is_ok(),
                    "TrustDomain::new accepted {input:?}; go-spiffe refuses it"
                );
                assert_eq!(shown, input, "a canonical name is kept as is");
            }
        }
        Err(e) => assert!(
            name_ok.is_err() || input.len() > 255,
            "TrustDomain::new refused {input:?} ({e}); go-spiffe accepts it"
        ),
    }
}
