//! Reference rules written from the specifications, independent of the code under test.

/// go-spiffe v2's `spiffeid.FromString`, plus the 255-byte trust-domain limit of the SPIFFE
/// spec (§2.1) that the `spiffe` crate enforces: `Ok((trust_domain, path))` or why not.
///
/// ```
/// use mtls_fuzz::reference::spiffe_id;
/// assert_eq!(spiffe_id("spiffe://example.org/a/b"), Ok(("example.org", "/a/b")));
/// assert!(spiffe_id("spiffe://Example.org/a").is_err());
/// assert!(spiffe_id("spiffe://example.org/a/").is_err());
/// ```
pub fn spiffe_id(id: &str) -> Result<(&str, &str), &'static str> {
    let rest = id
        .strip_prefix("spiffe://")
        .ok_or("scheme is not spiffe://")?;
    let td_end = rest.find('/').unwrap_or(rest.len());
    let (td, path) = rest.split_at(td_end);
    trust_domain_name(td)?;
    validate_path(path)?;
    Ok((td, path))
}

/// go-spiffe's trust-domain name rule (`[a-z0-9._-]+`), at most 255 bytes.
///
/// ```
/// assert!(mtls_fuzz::reference::trust_domain_name("example.org").is_ok());
/// assert!(mtls_fuzz::reference::trust_domain_name("example.org/x").is_err());
/// ```
pub fn trust_domain_name(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("trust domain is missing");
    }
    if td.len() > 255 {
        return Err("trust domain longer than 255 bytes");
    }
    if !td
        .bytes()
        .all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
    {
        return Err("trust domain characters are limited to [a-z0-9._-]");
    }
    Ok(())
}

/// go-spiffe's `ValidatePath`: empty, or `/`-separated segments of `[a-zA-Z0-9._-]+` that
/// are not `.` or `..`, without a trailing `/`.
///
/// ```
/// assert!(mtls_fuzz::reference::validate_path("").is_ok());
/// assert!(mtls_fuzz::reference::validate_path("/a/./b").is_err());
/// ```
pub fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("path must start with /");
    };
    for segment in rest.split('/') {
        match segment {
            "" => return Err("empty path segment (or trailing /)"),
            "." | ".." => return Err("dot segment"),
            s if !s
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-')) =>
            {
                return Err("path characters are limited to [a-zA-Z0-9._-]");
            }
            _ => {}
        }
    }
    Ok(())
}
