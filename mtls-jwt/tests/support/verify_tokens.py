"""Verifies tokens minted by mtls with PyJWT against a JWKS made by mtls.

argv: JWKS_FILE ISS AUD TOKEN... ; prints one JSON line of claims per token; exits 1 on failure.
"""
import json
import sys

import jwt

jwks_file, iss, aud, *tokens = sys.argv[1:]
jwks = jwt.PyJWKSet.from_dict(json.load(open(jwks_file)))
for token in tokens:
    kid = jwt.get_unverified_header(token).get("kid")
    key = jwks[kid]
    claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=aud, issuer=iss,
                        options={"require": ["exp", "iss", "aud"]})
    print(json.dumps(claims))
