"""Independent parsers for our SPIFFE bundles (mtls-core tests/spiffe_bundle.rs).

usage: bundle_peer.py x5c BUNDLE.json OUT.pem      -> every x509-svid x5c loaded by
           `cryptography` (a CA, its JWK members equal to the certificate's key), written as PEM
       bundle_peer.py jwt BUNDLE.json AUD TOKEN...  -> PyJWKSet loads the keys; each token
           verified with the key its kid names; prints one `sub` per token
       bundle_peer.py pem TRUST_DOMAIN BUNDLE.pem  -> py-spiffe X509Bundle.parse; prints the
           trust domain and the authorities' subjects
"""
import base64
import json
import sys

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def b64url_int(n, length=None):
    if length is None:
        length = (n.bit_length() + 7) // 8
    return base64.urlsafe_b64encode(n.to_bytes(length, "big")).rstrip(b"=").decode()


def x5c(bundle_path, out_path):
    doc = json.load(open(bundle_path))
    pems = []
    for key in doc["keys"]:
        if key.get("use") != "x509-svid":
            continue
        (der_b64,) = key["x5c"]
        cert = x509.load_der_x509_certificate(base64.b64decode(der_b64, validate=True))
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert bc.ca, f"not a CA: {cert.subject.rfc4514_string()}"
        public = cert.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            nums = public.public_numbers()
            size = (public.curve.key_size + 7) // 8
            assert key["kty"] == "EC", key
            assert key["x"] == b64url_int(nums.x, size), "x differs from the certificate"
            assert key["y"] == b64url_int(nums.y, size), "y differs from the certificate"
        elif isinstance(public, rsa.RSAPublicKey):
            nums = public.public_numbers()
            assert key["kty"] == "RSA", key
            assert key["n"] == b64url_int(nums.n), "n differs from the certificate"
            assert key["e"] == b64url_int(nums.e), "e differs from the certificate"
        pems.append(cert.public_bytes(serialization.Encoding.PEM).decode())
        print(cert.subject.rfc4514_string())
    open(out_path, "w").write("".join(pems))


def jwt_check(bundle_path, audience, tokens):
    import jwt

    jwks = jwt.PyJWKSet.from_json(open(bundle_path).read())
    by_kid = {k.key_id: k for k in jwks.keys}
    for token in tokens:
        header = jwt.get_unverified_header(token)
        key = by_kid[header["kid"]]
        claims = jwt.decode(token, key.key, algorithms=[header["alg"]], audience=audience)
        print(claims["sub"])


def pem(trust_domain, path):
    from spiffe import TrustDomain, X509Bundle

    bundle = X509Bundle.parse(TrustDomain(trust_domain), open(path, "rb").read())
    print(bundle.trust_domain)
    for cert in sorted(bundle.x509_authorities, key=lambda c: c.subject.rfc4514_string()):
        print(cert.subject.rfc4514_string())


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "x5c":
        x5c(sys.argv[2], sys.argv[3])
    elif cmd == "jwt":
        jwt_check(sys.argv[2], sys.argv[3], sys.argv[4:])
    elif cmd == "pem":
        pem(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown command {cmd}")
