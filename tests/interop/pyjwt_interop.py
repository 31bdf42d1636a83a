#!/usr/bin/env python3
"""Interop with PyJWT, an independent JWT implementation, for portcullis.

Driven by tests/tests/jwt_interop.rs; needs PyJWT with the `cryptography`
backend (python3 -m pip install 'pyjwt[crypto]').

  pyjwt_interop.py mint ISS AUD
      Generates one key per algorithm (RS256, PS256, ES256, EdDSA, HS256),
      mints an access token with each (typ at+jwt, kid, iss, aud, sub, iat,
      exp, jti) and one for another audience, and prints one JSON object:
      the public keys as a JWKS (RS256, PS256, ES256), the Ed25519 public
      key as PEM, the HMAC secret (base64url), and the tokens.

  pyjwt_interop.py verify
      Reads {"cases": [...]} on stdin; each case names an algorithm, a token,
      the expected iss and aud, and either a JWKS URL (fetched with
      PyJWKClient) or an HMAC secret. Verifies each with PyJWT, requiring
      exp, iat, iss, aud, sub and jti and checking typ at+jwt, and prints
      {"results": [{"name", "ok", "sub" or "error"}]}.
"""

import base64
import json
import secrets
import sys
import time

try:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
except ImportError as e:  # the Rust test turns this into a clear failure
    sys.stderr.write(f"PyJWT with cryptography is required: {e}\n")
    sys.exit(3)

ALGS = ["RS256", "PS256", "ES256", "EdDSA", "HS256"]
OTHER_AUDIENCE = "another-api"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(alg: str, kid: str, public_key) -> dict:
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk = json.loads(algorithm.to_jwk(public_key))
    jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return jwk


def mint(iss: str, aud: str) -> dict:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pss_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    secret = secrets.token_bytes(32)
    signing = {
        "RS256": rsa_key,
        "PS256": pss_key,
        "ES256": ec_key,
        "EdDSA": ed_key,
        "HS256": secret,
    }
    now = int(time.time())
    tokens = {}
    for alg in ALGS:
        kid = f"py-{alg.lower()}"
        headers = {"typ": "at+jwt", "kid": kid}
        minted = {}
        for name, audience in (("ok", aud), ("wrong_aud", OTHER_AUDIENCE)):
            claims = {
                "iss": iss,
                "aud": audience,
                "sub": f"py-user-{alg.lower()}",
                "iat": now,
                "exp": now + 300,
                "jti": b64url(secrets.token_bytes(16)),
            }
            minted[name] = jwt.encode(claims, signing[alg], algorithm=alg, headers=headers)
        tokens[alg] = minted
    jwks = {
        "keys": [
            public_jwk("RS256", "py-rs256", rsa_key.public_key()),
            public_jwk("PS256", "py-ps256", pss_key.public_key()),
            public_jwk("ES256", "py-es256", ec_key.public_key()),
        ]
    }
    eddsa_pem = (
        ed_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "pyjwt": jwt.__version__,
        "jwks": jwks,
        "eddsa_kid": "py-eddsa",
        "eddsa_pem": eddsa_pem,
        "hmac_kid": "py-hs256",
        "hmac_secret": b64url(secret),
        "tokens": tokens,
    }


def verify_one(case: dict) -> dict:
    token = case["token"]
    try:
        header = jwt.get_unverified_header(token)
        if header.get("typ") != "at+jwt":
            return {"ok": False, "error": f"typ is {header.get('typ')!r}"}
        if "secret" in case:
            key = b64url_decode(case["secret"])
        else:
            key = jwt.PyJWKClient(case["jwks_url"], cache_jwk_set=False).get_signing_key_from_jwt(token).key
        claims = jwt.decode(
            token,
            key,
            algorithms=[case["alg"]],
            audience=case["aud"],
            issuer=case["iss"],
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
        return {"ok": True, "sub": claims["sub"]}
    except jwt.PyJWTError as e:
        return {"ok": False, "error": type(e).__name__}


def verify(request: dict) -> dict:
    return {"results": [dict(verify_one(c), name=c["name"]) for c in request["cases"]]}


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "mint":
        out = mint(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 2 and sys.argv[1] == "verify":
        out = verify(json.load(sys.stdin))
    else:
        sys.stderr.write(__doc__)
        return 2
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
