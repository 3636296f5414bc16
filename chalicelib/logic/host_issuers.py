"""The host website's token issuers, parsed from their configuration (a JSON secret).

    {"issuers": [
        {"issuer": "https://shop.example", "audience": "webim", "algorithm": "RS256",
         "jwks": {"keys": [...]}},                       # or "public_key_pem": "-----BEGIN ..."
        {"issuer": "shop-hs", "audience": "webim", "algorithm": "HS256", "secret": "..."}
     ],
     "leeway_seconds": 30}

Each issuer has exactly one algorithm, pinned: a token is verified only with that algorithm
and that issuer's keys, which is what refuses `alg: none` and RS256/HS256 confusion.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

ALGORITHMS = ("HS256", "RS256")
MIN_HS256_SECRET_BYTES = 32


@dataclass(frozen=True)
class HostIssuer:
    issuer: str
    audience: str
    algorithm: str
    secret: bytes | None = None
    rsa_keys: dict[str | None, Any] = field(default_factory=dict)  # kid -> public key
    subject_claim: str = "sub"

    def key_for(self, kid: str | None) -> Any:
        if self.algorithm == "HS256":
            return self.secret
        if kid in self.rsa_keys:
            return self.rsa_keys[kid]
        if kid is None and len(self.rsa_keys) == 1:
            return next(iter(self.rsa_keys.values()))
        return None


def parse_host_issuers(config: dict[str, Any]) -> tuple[dict[str, HostIssuer], int]:
    """Returns issuers by `iss` and the clock leeway; raises ValueError on a bad config."""
    issuers: dict[str, HostIssuer] = {}
    for entry in config.get("issuers", []):
        issuer = _parse_issuer(entry)
        if issuer.issuer in issuers:
            raise ValueError(f"issuer {issuer.issuer!r} is configured twice")
        issuers[issuer.issuer] = issuer
    leeway = int(config.get("leeway_seconds", 30))
    if not 0 <= leeway <= 300:
        raise ValueError("leeway_seconds must be within 0..300")
    return issuers, leeway


def _parse_issuer(entry: dict[str, Any]) -> HostIssuer:
    issuer, audience, algorithm = entry.get("issuer"), entry.get("audience"), entry.get("algorithm")
    if not isinstance(issuer, str) or not issuer or not isinstance(audience, str) or not audience:
        raise ValueError("each issuer needs a non-empty 'issuer' and 'audience'")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"issuer {issuer!r}: algorithm must be one of {ALGORITHMS}")
    subject_claim = entry.get("subject_claim", "sub")
    if algorithm == "HS256":
        secret = str(entry.get("secret", "")).encode()
        if len(secret) < MIN_HS256_SECRET_BYTES:
            raise ValueError(f"issuer {issuer!r}: an HS256 secret needs at least 32 bytes")
        return HostIssuer(issuer, audience, algorithm, secret=secret, subject_claim=subject_claim)
    keys: dict[str | None, Any] = {}
    if "public_key_pem" in entry:
        keys[entry.get("kid")] = _rsa_public_key(entry["public_key_pem"])
    for jwk in entry.get("jwks", {}).get("keys", []):
        if jwk.get("kty") == "RSA" and jwk.get("use", "sig") == "sig":
            keys[jwk.get("kid")] = RSAAlgorithm.from_jwk(jwk)
    if not keys:
        raise ValueError(f"issuer {issuer!r}: RS256 needs 'public_key_pem' or RSA keys in 'jwks'")
    return HostIssuer(issuer, audience, algorithm, rsa_keys=keys, subject_claim=subject_claim)


def _rsa_public_key(pem: str) -> RSAPublicKey:
    key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise ValueError("public_key_pem must be an RSA public key")
    return key
