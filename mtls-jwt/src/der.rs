//! The few DER shapes we read and write: SubjectPublicKeyInfo and RSAPublicKey.

/// DER OID contents.
pub(crate) const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
pub(crate) const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
pub(crate) const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
pub(crate) const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// Reads one TLV: `(tag, contents, rest)`. Lengths must be DER (minimal): short form below
/// 128, long form without leading zero bytes.
pub(crate) fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n || rest[0] == 0 {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return None;
        }
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A parsed SubjectPublicKeyInfo: algorithm OID, parameters OID (curve) if any, key bits.
pub(crate) struct Spki<'a> {
    pub(crate) algorithm: &'a [u8],
    pub(crate) parameter: Option<&'a [u8]>,
    pub(crate) key: &'a [u8],
}

/// Parses a DER SubjectPublicKeyInfo: exactly one, nothing after it (see [`trailing`]).
pub(crate) fn spki(der: &[u8]) -> Option<Spki<'_>> {
    let (0x30, body, []) = tlv(der)? else {
        return None;
    };
    let (0x30, alg_id, rest) = tlv(body)? else {
        return None;
    };
    let (0x06, algorithm, params) = tlv(alg_id)? else {
        return None;
    };
    // AlgorithmIdentifier parameters: absent, NULL, or a curve OID — and nothing else.
    let parameter = match params {
        [] | [0x05, 0x00] => None,
        _ => match tlv(params)? {
            (0x06, oid, []) => Some(oid),
            _ => return None,
        },
    };
    let (0x03, bits, []) = tlv(rest)? else {
        return None;
    };
    let (0, key) = bits.split_first()? else {
        return None;
    };
    Some(Spki {
        algorithm,
        parameter,
        key,
    })
}

/// How many bytes follow the first TLV of `der` (`None` if there is no complete TLV).
pub(crate) fn trailing(der: &[u8]) -> Option<usize> {
    tlv(der).map(|(_, _, rest)| rest.len())
}

/// Parses an RSAPublicKey `SEQUENCE { n INTEGER, e INTEGER }` into unsigned big-endian bytes.
pub(crate) fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, body, []) = tlv(der)? else {
        return None;
    };
    let (0x02, n, rest) = tlv(body)? else {
        return None;
    };
    let (0x02, e, []) = tlv(rest)? else {
        return None;
    };
    Some((strip_zeros(n), strip_zeros(e)))
}

/// Encodes an RSAPublicKey from unsigned big-endian `n` and `e`.
pub(crate) fn encode_rsa_public_key(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut body = integer(n);
    body.extend(integer(e));
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend(body);
    out
}

fn integer(value: &[u8]) -> Vec<u8> {
    let value = strip_zeros(value);
    let pad = value.first().is_none_or(|b| b & 0x80 != 0);
    let mut out = vec![0x02];
    push_len(&mut out, value.len() + usize::from(pad));
    if pad {
        out.push(0);
    }
    out.extend_from_slice(value);
    out
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Unsigned big-endian without leading zero bytes.
pub(crate) fn strip_zeros(mut v: &[u8]) -> &[u8] {
    while let [0, rest @ ..] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_public_key_round_trips() {
        let n = [0x80u8; 300];
        let der = encode_rsa_public_key(&n, &[1, 0, 1]);
        let (n2, e2) = rsa_public_key(&der).unwrap();
        assert_eq!(n2, &n[..]);
        assert_eq!(e2, &[1, 0, 1]);
    }

    #[test]
    fn lengths_must_be_minimal() {
        assert!(tlv(&[0x04, 0x81, 0x01, 0xaa]).is_none());
        assert!(tlv(&[0x04, 0x82, 0x00, 0x80]).is_none());
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend([0u8; 0x80]);
        assert_eq!(tlv(&long).map(|(_, v, _)| v.len()), Some(0x80));
    }

    #[test]
    fn truncated_input_is_refused() {
        assert!(tlv(&[0x30, 0x05, 0x01]).is_none());
        assert!(tlv(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_none());
        assert!(spki(&[0x30, 0x00]).is_none());
    }
}
