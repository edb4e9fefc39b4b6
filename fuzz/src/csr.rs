//! PKCS#10 certificate signing requests, and signing them under a policy.

use std::sync::OnceLock;

use mtls_certs::{
    CaParams, CertificateAuthority, CertificateSigningRequest, CertificateSummary, CsrPolicy,
    Profile,
};

fn ca() -> &'static CertificateAuthority {
    static CA: OnceLock<CertificateAuthority> = OnceLock::new();
    CA.get_or_init(|| CertificateAuthority::new_root(&CaParams::new("Fuzz Root")).expect("CA"))
}

/// `data` = a mode byte, then a DER CSR (mode even) or PEM text (mode odd). A CSR that
/// parses (its self-signature holds) re-encodes to the same DER, and a CA signing it under
/// the SVID policy for `example.org` or the server profile issues only what the CSR asked
/// for and the policy allows: a non-CA leaf, its SANs among the CSR's, SVIDs in the domain.
pub fn csr(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let parsed = if mode % 2 == 0 {
        CertificateSigningRequest::from_der(rest)
    } else {
        match std::str::from_utf8(rest) {
            Ok(text) => CertificateSigningRequest::from_pem(text),
            Err(_) => return,
        }
    };
    let Ok(csr) = parsed else {
        return;
    };
    if mode % 2 == 0 {
        assert_eq!(csr.der(), rest);
    }
    let again = CertificateSigningRequest::from_pem(&csr.pem()).expect("PEM round trip");
    assert_eq!(again.der(), csr.der());
    assert_eq!(again.sans(), csr.sans());

    let svid = CsrPolicy::svid_in("example.org".parse().expect("trust domain"));
    for (policy, is_svid) in [(svid, true), (CsrPolicy::new(Profile::Server), false)] {
        let Ok(issued) = ca().sign_csr(&csr, &policy) else {
            continue;
        };
        let summary = CertificateSummary::from_der(issued.der()).expect("we read what we issue");
        assert!(!summary.is_ca, "a CSR got a CA certificate");
        for san in &summary.sans {
            assert!(
                csr.sans().contains(san),
                "issued SAN {san:?} was not requested"
            );
        }
        if is_svid {
            let id = summary.spiffe_id.expect("an SVID has a SPIFFE ID");
            assert!(
                id.starts_with("spiffe://example.org/"),
                "SVID {id} outside the domain"
            );
            assert_eq!(summary.sans.len(), 1, "an SVID carries exactly one SAN");
        }
    }
}
