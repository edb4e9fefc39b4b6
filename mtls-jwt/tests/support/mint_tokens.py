"""Independent tokens for mtls-jwt's tests, minted with PyJWT and keys from `cryptography`.

Prints {"jwks": {...}, "tokens": {name: token}, "now": N}. Every key is generated here.
"""
import base64
import hashlib
import hmac
import json
import time

import jwt
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISS, AUD = "https://issuer.test", "bookstore"
now = int(time.time())

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
keys = {
    "RS256": (rsa_key, RSAAlgorithm),
    "PS256": (rsa_key, RSAAlgorithm),
    "ES256": (ec.generate_private_key(ec.SECP256R1()), ECAlgorithm),
    "ES384": (ec.generate_private_key(ec.SECP384R1()), ECAlgorithm),
    "EdDSA": (ed25519.Ed25519PrivateKey.generate(), OKPAlgorithm),
}


def jwk(key_alg, kid, extra=None):
    key, cls = keys[key_alg]
    d = json.loads(cls.to_jwk(key.public_key()))
    d.update({"kid": kid, "alg": key_alg, "use": "sig"})
    d.update(extra or {})
    return d


jwks = {"keys": [jwk(alg, f"k-{alg}") for alg in keys]}
# A key whose JWK is for PS256 only, and one for encryption.
jwks["keys"].append(jwk("RS256", "k-ps-only", {"alg": "PS256"}))
jwks["keys"].append(jwk("RS256", "k-enc", {"use": "enc", "alg": "RSA-OAEP"}))
# Two P-256 keys sharing one kid (Envoy tries each): tokens are signed by the second.
shared = [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]
for k in shared:
    d = json.loads(ECAlgorithm.to_jwk(k.public_key()))
    d.update({"kid": "k-shared", "alg": "ES256", "use": "sig"})
    jwks["keys"].append(d)
# A key the library cannot parse (must be skipped with a warning, not fail the set).
jwks["keys"].append({"kty": "EC", "crv": "P-256", "kid": "broken", "x": "AA", "y": "AA"})


def claims(**over):
    c = {"iss": ISS, "aud": AUD, "sub": "spiffe://example.org/client", "iat": now, "nbf": now, "exp": now + 300}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def mint(alg, kid=None, **over):
    kid = kid or f"k-{alg}"
    return jwt.encode(claims(**over), keys[alg][0], algorithm=alg, headers={"kid": kid})


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


tokens = {f"valid-{alg}": mint(alg) for alg in keys}
tokens["valid-multi-aud"] = mint("ES256", aud=["other", AUD])
good = tokens["valid-ES256"]
h, p, s = good.split(".")
tampered = json.loads(base64.urlsafe_b64decode(p + "=="))
tampered["sub"] = "spiffe://example.org/admin"
tokens["tampered"] = ".".join([h, b64(json.dumps(tampered).encode()), s])
tokens["expired"] = mint("ES256", iat=now - 3600, nbf=now - 3600, exp=now - 600)
tokens["nbf-future"] = mint("ES256", nbf=now + 600, exp=now + 900)
tokens["wrong-aud"] = mint("ES256", aud="elsewhere")
tokens["no-aud"] = mint("ES256", aud=None)
tokens["wrong-iss"] = mint("ES256", iss="https://evil.test")
tokens["no-exp"] = mint("ES256", exp=None)
tokens["alg-none"] = ".".join([b64(b'{"alg":"none","typ":"JWT"}'), b64(json.dumps(claims()).encode()), ""])
# Algorithm confusion: HS256 "signed" with the RSA public key PEM as the HMAC secret.
pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
hs_input = b64(b'{"alg":"HS256","typ":"JWT","kid":"k-RS256"}') + "." + b64(json.dumps(claims()).encode())
tokens["hs256-confusion"] = hs_input + "." + b64(hmac.new(pem, hs_input.encode(), hashlib.sha256).digest())
tokens["shared-kid-second"] = jwt.encode(claims(), shared[1], algorithm="ES256", headers={"kid": "k-shared"})
tokens["unknown-kid"] = mint("ES256", kid="k-nobody")
tokens["kid-other-alg"] = mint("RS256", kid="k-ps-only")
tokens["kid-enc"] = mint("RS256", kid="k-enc")
tokens["oversize"] = mint("ES256", blob="x" * 9000)
tokens["two-segments"] = h + "." + p
tokens["four-segments"] = good + ".extra"
tokens["no-kid-ES384"] = jwt.encode(claims(), keys["ES384"][0], algorithm="ES384")
tokens["typ-other"] = jwt.encode(claims(), keys["ES256"][0], algorithm="ES256", headers={"kid": "k-ES256", "typ": "dpop+jwt"})

print(json.dumps({"jwks": jwks, "tokens": tokens, "now": now}))
