//! SPIFFE ID helpers over the `spiffe` crate's parser.

use mtls_identity::SpiffeId;

use crate::error::{Error, Result};

/// Parses a SPIFFE ID strictly ([`SpiffeId::new`], go-spiffe's rules), mapping failures to
/// [`Error::InvalidSpiffeId`].
///
/// The `spiffe` crate's own parser lowercases an uppercase trust domain; the SPIFFE spec (and
/// SPIRE's Go library) allow only lowercase, so an ID that is not already in canonical form
/// is refused, saying so.
pub(crate) fn parse_spiffe_id(id: &str) -> Result<SpiffeId> {
    SpiffeId::new(id).map_err(Error::from)
}

/// An SVID's ID must name a workload: a non-empty path.
pub(crate) fn require_workload_path(id: &SpiffeId) -> Result<()> {
    if id.path().is_empty() {
        return Err(Error::InvalidSpiffeId {
            presented: id.to_string(),
            reason: "expected a workload path after the trust domain, presented an empty path"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod strict_parse_tests {
    use super::*;

    #[test]
    fn strict_parse_maps_refusals_to_invalid_spiffe_id() {
        assert!(parse_spiffe_id("spiffe://example.org/ns/prod/sa/api").is_ok());
        for bad in [
            "spiffe://Example.org/api",
            "spiffe://example.org/a/../b",
            "spiffe://example.org/api?x=1",
            "spiffe://example.org:8443/api",
        ] {
            assert!(
                matches!(parse_spiffe_id(bad), Err(Error::InvalidSpiffeId { .. })),
                "{bad}"
            );
        }
    }
}
