//! Library errors in words, for people (STYLE 13: no Rust `Debug` in messages).

use rustls_pki_types::pem::Error as Pem;

/// What a PEM decoding error means, in words: rustls-pki-types' own text prints a missing
/// end line as a byte array (`missing section end marker: [45, 45, …]`).
///
/// ```
/// use rustls_pki_types::{CertificateDer, pem::PemObject};
/// let err = CertificateDer::from_pem_slice(b"-----BEGIN CERTIFICATE-----\nMIIB").unwrap_err();
/// assert_eq!(
///     mtls_identity::pem_error_words(&err),
///     "a block with no end line (\"-----END CERTIFICATE-----\"): truncated input"
/// );
/// ```
pub fn pem_error_words(error: &Pem) -> String {
    match error {
        Pem::MissingSectionEnd { end_marker } => format!(
            "a block with no end line (\"-----END {}-----\"): truncated input",
            String::from_utf8_lossy(end_marker)
        ),
        // `{:?}` quotes and escapes the line: it is text from the input.
        Pem::IllegalSectionStart { line } => format!(
            "a malformed BEGIN line: {:?}",
            String::from_utf8_lossy(line)
        ),
        Pem::Base64Decode(reason) => format!("a block whose base64 does not decode ({reason})"),
        Pem::Io(e) => format!("unreadable input ({e})"),
        Pem::NoItemsFound => "no PEM block of that kind".to_owned(),
        other => other.to_string(),
    }
}

/// An error that only has `Debug` (webpki's `Display` is its `Debug`; the HPACK decoder has
/// no `Display`), in words: each type or variant name split at its capitals, names nested in
/// tuple variants joined with `": "`, everything from the first `{` on (field names and
/// values) left out, and the acronyms DER, CRL, EKU, CA in capitals.
///
/// ```
/// #[derive(Debug)]
/// enum Inner { TooManyOctets }
/// #[derive(Debug)]
/// enum Outer { IntegerDecodingError(Inner), BadDerTime, CaUsedAsEndEntity, Expired { at: u64 } }
///
/// use mtls_identity::debug_words;
/// assert_eq!(debug_words(&Outer::IntegerDecodingError(Inner::TooManyOctets)),
///            "integer decoding error: too many octets");
/// assert_eq!(debug_words(&Outer::BadDerTime), "bad DER time");
/// assert_eq!(debug_words(&Outer::CaUsedAsEndEntity), "CA used as end entity");
/// assert_eq!(debug_words(&Outer::Expired { at: 7 }), "expired");
/// ```
pub fn debug_words(error: &impl std::fmt::Debug) -> String {
    let debug = format!("{error:?}"); // Debug turned into words: the point of this function
    let mut parts = Vec::new();
    let names = debug.split('{').next().unwrap_or_default();
    for name in names
        .split(|c: char| !c.is_alphanumeric())
        .filter(|n| n.starts_with(|c: char| c.is_ascii_uppercase()))
    {
        let mut words = String::new();
        for (i, c) in name.char_indices() {
            if c.is_uppercase() && i > 0 {
                words.push(' ');
            }
            words.push(c.to_ascii_lowercase());
        }
        let words: Vec<String> = words
            .split(' ')
            .map(|word| match word {
                "der" | "crl" | "eku" | "ca" => word.to_ascii_uppercase(),
                _ => word.to_owned(),
            })
            .collect();
        parts.push(words.join(" "));
    }
    parts.join(": ")
}
