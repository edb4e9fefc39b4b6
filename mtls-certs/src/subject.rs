//! Subject distinguished names.

use std::fmt;

use rcgen::DnType;

/// One attribute of a distinguished name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SubjectAttribute {
    /// `CN`.
    CommonName,
    /// `O`.
    Organization,
    /// `OU`.
    OrganizationalUnit,
    /// `C` (two-letter country code).
    Country,
    /// `ST`.
    State,
    /// `L`.
    Locality,
}

impl SubjectAttribute {
    fn dn_type(self) -> DnType {
        match self {
            Self::CommonName => DnType::CommonName,
            Self::Organization => DnType::OrganizationName,
            Self::OrganizationalUnit => DnType::OrganizationalUnitName,
            Self::Country => DnType::CountryName,
            Self::State => DnType::StateOrProvinceName,
            Self::Locality => DnType::LocalityName,
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::CommonName => "CN",
            Self::Organization => "O",
            Self::OrganizationalUnit => "OU",
            Self::Country => "C",
            Self::State => "ST",
            Self::Locality => "L",
        }
    }

    pub(crate) fn from_oid(oid: &str) -> Option<Self> {
        Some(match oid {
            "2.5.4.3" => Self::CommonName,
            "2.5.4.10" => Self::Organization,
            "2.5.4.11" => Self::OrganizationalUnit,
            "2.5.4.6" => Self::Country,
            "2.5.4.8" => Self::State,
            "2.5.4.7" => Self::Locality,
            _ => return None,
        })
    }
}

/// A subject distinguished name: an ordered list of attributes.
///
/// ```
/// use mtls_certs::{Subject, SubjectAttribute};
///
/// let subject = Subject::common_name("app-ca")
///     .with(SubjectAttribute::Organization, "app-ca")
///     .with(SubjectAttribute::Country, "JP");
/// assert_eq!(subject.to_string(), "CN=app-ca, O=app-ca, C=JP");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    attributes: Vec<(SubjectAttribute, String)>,
}

impl Subject {
    /// An empty subject (allowed for leaves whose identity is in the SANs).
    pub fn empty() -> Self {
        Self::default()
    }

    /// A subject with just a common name.
    pub fn common_name(cn: impl Into<String>) -> Self {
        Self::empty().with(SubjectAttribute::CommonName, cn)
    }

    /// The same subject with one more attribute appended.
    pub fn with(mut self, attribute: SubjectAttribute, value: impl Into<String>) -> Self {
        self.push(attribute, value);
        self
    }

    /// Appends an attribute.
    pub fn push(&mut self, attribute: SubjectAttribute, value: impl Into<String>) {
        self.attributes.push((attribute, value.into()));
    }

    /// The first common name, if any.
    pub fn cn(&self) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(a, _)| *a == SubjectAttribute::CommonName)
            .map(|(_, v)| v.as_str())
    }

    /// Whether there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.attributes.is_empty()
    }

    /// The attributes in order.
    pub fn attributes(&self) -> &[(SubjectAttribute, String)] {
        &self.attributes
    }

    pub(crate) fn to_rcgen(&self) -> rcgen::DistinguishedName {
        let mut dn = rcgen::DistinguishedName::new();
        for (attr, value) in &self.attributes {
            let value = if *attr == SubjectAttribute::Country {
                match rcgen::string::PrintableString::try_from(value.as_str()) {
                    Ok(p) => rcgen::DnValue::PrintableString(p),
                    Err(_) => rcgen::DnValue::Utf8String(value.clone()),
                }
            } else {
                rcgen::DnValue::Utf8String(value.clone())
            };
            dn.push(attr.dn_type(), value);
        }
        dn
    }

    pub(crate) fn from_x509(name: &x509_parser::x509::X509Name<'_>) -> Self {
        let mut subject = Self::empty();
        for attr in name.iter_attributes() {
            if let (Some(kind), Ok(value)) = (
                SubjectAttribute::from_oid(&attr.attr_type().to_id_string()),
                attr.as_str(),
            ) {
                subject.push(kind, value);
            }
        }
        subject
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (attr, value)) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}={value}", attr.short())?;
        }
        Ok(())
    }
}
