//! Random certificate serial numbers.

use crate::error::{Error, Result};

/// Length of generated serials in bytes (like cfssl: 160 bits, top bit cleared).
pub(crate) const SERIAL_LEN: usize = 20;

/// A fresh random serial: 20 bytes from the system CSPRNG (aws-lc-rs), top bit cleared so
/// the DER INTEGER is positive, and a non-zero first byte so the encoding is minimal and the
/// serial is at least 153 bits long (152 bits of entropy or more).
pub(crate) fn random_serial() -> Result<[u8; SERIAL_LEN]> {
    let mut bytes = [0u8; SERIAL_LEN];
    loop {
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::InvalidDer {
            what: "serial",
            reason: "system random number generator failed".into(),
        })?;
        bytes[0] &= 0x7f;
        if bytes[0] != 0 {
            return Ok(bytes);
        }
    }
}

pub(crate) fn rcgen_serial() -> Result<rcgen::SerialNumber> {
    Ok(rcgen::SerialNumber::from_slice(&random_serial()?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn serials_are_positive_minimal_and_fresh() {
        let a = super::random_serial().unwrap();
        let b = super::random_serial().unwrap();
        assert_eq!(a.len(), 20);
        assert!(a[0] & 0x80 == 0 && a[0] != 0, "{:02x}", a[0]);
        assert_ne!(a, b);
    }
}
