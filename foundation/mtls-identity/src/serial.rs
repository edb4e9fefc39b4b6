//! Certificate serial numbers, shown one way.

use std::fmt;

/// A certificate serial number: the big-endian bytes of the DER INTEGER, shown as
/// colon-separated lowercase hex pairs (`0a:1b:2c`), as `openssl x509 -text` prints it.
/// Every mtls crate shows serials this way (issued certificates, inspection, our identity,
/// the peer's, logs).
///
/// ```
/// use mtls_identity::Serial;
/// let serial = Serial::from(&[0x00, 0x7f, 0x10][..]);
/// assert_eq!(serial.to_string(), "00:7f:10");
/// assert_eq!(serial.as_bytes(), [0x00, 0x7f, 0x10]);
/// assert_eq!(format!("{serial:?}"), "Serial(00:7f:10)");
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// The serial's bytes (big-endian, as encoded in the certificate).
    ///
    /// ```
    /// assert_eq!(mtls_identity::Serial::from(vec![1, 2]).as_bytes(), [1, 2]);
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, owned.
    ///
    /// ```
    /// assert_eq!(mtls_identity::Serial::from(vec![1, 2]).into_bytes(), vec![1, 2]);
    /// ```
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl From<Vec<u8>> for Serial {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for Serial {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl AsRef<[u8]> for Serial {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_reads_back_as_the_bytes() {
        for bytes in [vec![0u8], vec![0x0a, 0xff], (0..=20u8).collect::<Vec<_>>()] {
            let text = Serial::from(bytes.clone()).to_string();
            assert_eq!(text.len(), bytes.len() * 3 - 1, "{text}");
            assert!(
                text.bytes()
                    .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b':')),
                "{text}"
            );
            let back: Vec<u8> = text
                .split(':')
                .map(|h| u8::from_str_radix(h, 16).unwrap())
                .collect();
            assert_eq!(back, bytes);
        }
        assert_eq!(Serial::default().to_string(), "");
    }
}
