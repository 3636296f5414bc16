"""Credentials: visitor tokens, host-site JWTs, development login, and every way to fake one."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from chalicelib.errors import (
    DevLoginDisabledError,
    ExpiredCredentialError,
    InvalidCredentialError,
    InvalidFieldError,
    MissingCredentialError,
    UnauthorizedError,
)
from chalicelib.logic.host_issuers import parse_host_issuers
from chalicelib.logic.identity import Authenticator
from chalicelib.principal import Identity

SECRET = b"s" * 32
HOST_HS_SECRET = "h" * 40
NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = RSA_KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
).decode()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def host_config() -> dict[str, Any]:
    jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    return {
        "issuers": [
            {"issuer": "https://shop.example", "audience": "webim", "algorithm": "RS256",
             "jwks": {"keys": [{**jwk, "kid": "k1", "use": "sig"}]}},
            {"issuer": "shop-pem", "audience": "webim", "algorithm": "RS256", "public_key_pem": PUBLIC_PEM},
            {"issuer": "shop-hs", "audience": "webim", "algorithm": "HS256", "secret": HOST_HS_SECRET},
        ]
    }


def authenticator(clock: Clock | None = None, dev_login: bool = False) -> Authenticator:
    issuers, leeway = parse_host_issuers(host_config())
    return Authenticator(SECRET, issuers, leeway_seconds=leeway, dev_login=dev_login, clock=clock or Clock())


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": "https://shop.example", "aud": "webim", "sub": "seller-7", "iat": int(NOW), "exp": int(NOW) + 600}
    return {**base, **overrides}


def rs_token(payload: dict[str, Any], kid: str | None = "k1") -> str:
    return jwt.encode(payload, RSA_KEY, algorithm="RS256", headers={"kid": kid} if kid else None)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hand_made(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    signature = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


# -- visitors ----------------------------------------------------------------------------------


def test_a_new_visitor_is_recognised_when_they_return() -> None:
    clock = Clock()
    auth = authenticator(clock)
    issued = auth.new_visitor()
    assert issued.identity.kind == "visitor"
    clock.now += 200 * 24 * 3600  # months later, same browser, same token
    assert auth.authenticate(issued.token) == issued.identity


def test_two_new_visitors_are_different_people() -> None:
    auth = authenticator()
    assert auth.new_visitor().identity != auth.new_visitor().identity


def test_renewing_keeps_the_visitor_and_extends_the_expiry() -> None:
    clock = Clock()
    auth = authenticator(clock)
    first = auth.new_visitor()
    clock.now += 100
    renewed = auth.renew_visitor(auth.authenticate(first.token))
    assert renewed.identity == first.identity and renewed.expires_at == first.expires_at + 100


def test_expired_visitor_token_is_refused() -> None:
    clock = Clock()
    auth = authenticator(clock)
    issued = auth.new_visitor()
    clock.now = issued.expires_at + 31  # past the 30 s leeway
    with pytest.raises(ExpiredCredentialError):
        auth.authenticate(issued.token)


def test_every_single_bit_flip_is_refused() -> None:
    auth = authenticator()
    token = auth.new_visitor().token
    segments = token.split(".")
    for index, segment in enumerate(segments):
        raw = bytearray(unb64(segment))
        for position in range(len(raw)):
            flipped = bytearray(raw)
            flipped[position] ^= 1 << (position % 8)
            altered = list(segments)
            altered[index] = b64(bytes(flipped))
            with pytest.raises(UnauthorizedError):
                auth.authenticate(".".join(altered))


def test_swapped_ids_are_refused() -> None:
    auth = authenticator()
    alice, bob = auth.new_visitor(), auth.new_visitor()
    header, payload, signature = alice.token.split(".")
    claims_ = json.loads(unb64(payload))
    claims_["sub"] = bob.identity.id
    with pytest.raises(InvalidCredentialError):
        auth.authenticate(".".join([header, b64(json.dumps(claims_).encode()), signature]))
    # bob's claims with alice's signature
    with pytest.raises(InvalidCredentialError):
        auth.authenticate(".".join(bob.token.split(".")[:2] + [signature]))


def test_a_token_from_another_deployment_is_refused() -> None:
    foreign = Authenticator(b"f" * 32, {}).new_visitor()
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(foreign.token)


@pytest.mark.parametrize("token", ["", None])
def test_missing_credential(token: str | None) -> None:
    with pytest.raises(MissingCredentialError):
        authenticator().authenticate(token)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "a.b", "...", "eyJ9.eyJ9.x" * 3])
def test_garbage_is_an_invalid_credential(token: str) -> None:
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(token)


def test_alg_none_is_refused_for_our_tokens_and_host_tokens() -> None:
    auth = authenticator()
    visitor = json.loads(unb64(auth.new_visitor().token.split(".")[1]))
    for payload in (visitor, claims()):
        with pytest.raises(InvalidCredentialError):
            auth.authenticate(hand_made({"alg": "none", "typ": "JWT"}, payload, None))


# -- host-site users ---------------------------------------------------------------------------


def test_host_rs256_token_from_jwks_is_a_user() -> None:
    assert authenticator().authenticate(rs_token(claims())) == Identity("user", "seller-7")


def test_host_rs256_token_from_a_pem_key_is_a_user() -> None:
    token = rs_token(claims(iss="shop-pem"), kid=None)
    assert authenticator().authenticate(token) == Identity("user", "seller-7")


def test_host_hs256_token_is_a_user() -> None:
    token = jwt.encode(claims(iss="shop-hs"), HOST_HS_SECRET, algorithm="HS256")
    assert authenticator().authenticate(token) == Identity("user", "seller-7")


def test_rs256_issuer_refuses_an_hs256_token_keyed_with_its_public_key() -> None:
    """Algorithm confusion: the public key is public, so HMAC with it would be a forgery."""
    for issuer in ("https://shop.example", "shop-pem"):
        forged = hand_made({"alg": "HS256", "typ": "JWT", "kid": "k1"}, claims(iss=issuer), PUBLIC_PEM.encode())
        with pytest.raises(InvalidCredentialError):
            authenticator().authenticate(forged)


def test_hs256_issuer_refuses_an_rs256_token() -> None:
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(rs_token(claims(iss="shop-hs")))


@pytest.mark.parametrize(
    "payload",
    [
        claims(aud="someone-else"),
        claims(iss="https://evil.example"),
        claims(sub=""),
        claims(sub=12345),
        claims(sub="x" * 129),
        {k: v for k, v in claims().items() if k != "exp"},
        {k: v for k, v in claims().items() if k != "aud"},
        {k: v for k, v in claims().items() if k != "iss"},
    ],
)
def test_host_token_with_wrong_or_missing_claims_is_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(rs_token(payload))


def test_host_token_signed_with_the_wrong_key_is_refused() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(token)


def test_host_token_with_an_unknown_kid_is_refused() -> None:
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(rs_token(claims(), kid="k2"))


def test_expired_host_token_is_refused() -> None:
    with pytest.raises(ExpiredCredentialError):
        authenticator().authenticate(rs_token(claims(exp=int(NOW) - 31)))


def test_a_visitor_token_never_authenticates_as_a_user() -> None:
    auth = authenticator(dev_login=True)
    visitor = auth.new_visitor()
    assert auth.authenticate(visitor.token).kind == "visitor"
    # re-labelled as a dev (user) token, it no longer verifies
    header, payload, _ = visitor.token.split(".")
    relabelled = {**json.loads(unb64(payload)), "aud": "webim:dev"}
    with pytest.raises(InvalidCredentialError):
        auth.authenticate(".".join([header, b64(json.dumps(relabelled).encode()), visitor.token.split(".")[2]]))


@pytest.mark.parametrize(
    "config",
    [
        {"issuers": [{"issuer": "a", "audience": "b", "algorithm": "none"}]},
        {"issuers": [{"issuer": "a", "audience": "b", "algorithm": "HS256", "secret": "short"}]},
        {"issuers": [{"issuer": "a", "audience": "b", "algorithm": "RS256"}]},
        {"issuers": [{"issuer": "", "audience": "b", "algorithm": "HS256", "secret": "x" * 40}]},
        {"issuers": [{"issuer": "a", "audience": "b", "algorithm": "HS256", "secret": "x" * 40}] * 2},
    ],
)
def test_bad_host_configuration_is_refused_at_start(config: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_host_issuers(config)


# -- development login --------------------------------------------------------------------------


def test_dev_login_names_a_user_when_enabled() -> None:
    auth = authenticator(dev_login=True)
    issued = auth.dev_login("alice")
    assert auth.authenticate(issued.token) == Identity("user", "alice")


def test_dev_login_is_refused_when_disabled_and_its_tokens_too() -> None:
    enabled = authenticator(dev_login=True).dev_login("alice")
    with pytest.raises(DevLoginDisabledError):
        authenticator().dev_login("alice")
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(enabled.token)


@pytest.mark.parametrize("name", ["", "  ", 5, None, "x" * 129, "bad\nname"])
def test_dev_login_refuses_bad_names(name: object) -> None:
    with pytest.raises(InvalidFieldError):
        authenticator(dev_login=True).dev_login(name)


@pytest.mark.parametrize("payload", [claims(iat=int(NOW) + 3600), claims(nbf=int(NOW) + 3600),
                                     claims(exp="tomorrow"), claims(exp=True)])
def test_host_token_from_the_future_or_with_odd_times_is_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidCredentialError):
        authenticator().authenticate(rs_token(payload))
