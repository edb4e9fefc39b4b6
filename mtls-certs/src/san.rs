//! Encoding the family's [`SubjectAltName`] (from mtls-identity) with rcgen.

pub use mtls_identity::SubjectAltName;

use crate::error::{Error, Result};

/// The SAN as rcgen encodes it; a DNS name that is not one, or a non-ASCII name, is refused.
pub(crate) fn to_rcgen(san: &SubjectAltName) -> Result<rcgen::SanType> {
    let ia5 = |s: &str| {
        rcgen::string::Ia5String::try_from(s).map_err(|_| Error::InvalidSan {
            expected: "an ASCII (IA5String) name".into(),
            presented: s.to_owned(),
        })
    };
    Ok(match san {
        SubjectAltName::Dns(s) => {
            if !is_dns_name(s) {
                return Err(Error::InvalidSan {
                    expected: "a DNS name of letters, digits, '-', '.' (optionally a leading '*.')"
                        .into(),
                    presented: s.clone(),
                });
            }
            rcgen::SanType::DnsName(ia5(s)?)
        }
        SubjectAltName::IpAddress(ip) => rcgen::SanType::IpAddress(*ip),
        SubjectAltName::Email(s) => rcgen::SanType::Rfc822Name(ia5(s)?),
        SubjectAltName::Uri(s) => rcgen::SanType::URI(ia5(s)?),
        other => {
            return Err(Error::InvalidSan {
                expected: "a DNS, IP, e-mail or URI name".into(),
                presented: other.to_string(),
            });
        }
    })
}

fn is_dns_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_dns_name_refused() {
        let err = to_rcgen(&SubjectAltName::Dns("bad name".into())).unwrap_err();
        assert!(matches!(err, Error::InvalidSan { .. }));
    }
}
