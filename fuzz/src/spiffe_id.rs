//! SPIFFE ID and trust-domain parsing, checked against go-spiffe's rules.

use mtls_core::{SpiffeId, TrustDomain};

use crate::reference;

/// Parses `data` as a SPIFFE ID and as a trust domain with every parser we ship, and checks
/// each verdict against [`reference::spiffe_id`] / [`reference::trust_domain_name`].
///
/// - `mtls_certs::parse_spiffe_id` (the strict parser) agrees with the reference exactly,
///   and what it accepts displays as the input, byte for byte;
/// - the re-exported, more lenient `spiffe` types (`SpiffeId::new`, `TrustDomain::new`)
///   accept everything the reference accepts, and whatever they accept they display in a
///   canonical form the reference accepts.
pub fn spiffe_id(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let expected = reference::spiffe_id(input);

    let strict = mtls_certs::parse_spiffe_id(input);
    match (&strict, &expected) {
        (Ok(id), Ok((td, path))) => {
            assert_eq!(id.to_string(), input, "display of an accepted ID");
            assert_eq!(id.trust_domain().as_str(), *td);
            assert_eq!(id.path(), *path);
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(why)) => panic!("parse_spiffe_id accepted {input:?}; go-spiffe: {why}"),
        (Err(e), Ok(_)) => panic!("parse_spiffe_id refused {input:?} ({e}); go-spiffe accepts it"),
    }

    match SpiffeId::new(input) {
        Ok(id) => {
            let shown = id.to_string();
            assert!(
                reference::spiffe_id(&shown).is_ok(),
                "SpiffeId::new({input:?}) displays as {shown:?}, not a canonical ID"
            );
            let again = SpiffeId::new(&shown).unwrap_or_else(|e| panic!("{shown:?}: {e}"));
            assert_eq!(again, id, "display/parse round trip");
        }
        Err(e) => assert!(
            expected.is_err(),
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
            if name_ok.is_ok() {
                assert_eq!(shown, input, "a canonical name is kept as is");
            }
        }
        Err(e) => assert!(
            name_ok.is_err(),
            "TrustDomain::new refused {input:?} ({e}); go-spiffe accepts it"
        ),
    }
}
