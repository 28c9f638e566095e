"""Minimal RS256 JWTs for the local Entra ID and Managed HSM stand-ins
(`cryptography` does the RSA; the JSON Web Token framing is RFC 7519/7515)."""

from __future__ import annotations

import base64
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def int_b64(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def sign(claims: dict, key: rsa.RSAPrivateKey, kid: str) -> str:
    header = b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}, separators=(",", ":")).encode())
    payload = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = key.sign(f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{b64url(sig)}"


def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict:
    pub = key.public_key().public_numbers()
    return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": int_b64(pub.n), "e": int_b64(pub.e)}


class InvalidToken(Exception):
    pass


def verify(token: str, keys: dict[str, rsa.RSAPublicKey]) -> dict:
    """Checks the signature against `keys` (by kid) and returns the claims;
    the caller checks aud/iss/exp/nbf."""
    try:
        h, p, s = token.split(".")
        header = json.loads(b64url_decode(h))
        claims = json.loads(b64url_decode(p))
        sig = b64url_decode(s)
    except Exception as e:  # malformed in any way
        raise InvalidToken(f"malformed token: {e}") from None
    if header.get("alg") != "RS256":
        raise InvalidToken("only RS256 tokens are accepted")
    key = keys.get(header.get("kid"))
    if key is None:
        raise InvalidToken("unknown signing key")
    try:
        key.verify(sig, f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        raise InvalidToken("bad signature") from None
    return claims
