"""Identity: who is calling. The one place where a credential becomes an Identity.

Credentials are JWTs. Three issuers are accepted:
- this system, for visitors (`aud` webim:visitor): minted for an anonymous browser, which
  keeps the token; presenting it again is being the same visitor;
- this system, for development logins (`aud` webim:dev), accepted only when the local stack
  enables them, never on Lambda;
- the host website, for its logged-in users, verified with its configured keys.

Each verification pins the algorithm and checks issuer, audience and expiry; anything else
is refused and never silently becomes another identity.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.types import Options

from chalicelib.errors import (
    DevLoginDisabledError,
    ExpiredCredentialError,
    InvalidCredentialError,
    InvalidFieldError,
    MissingCredentialError,
    NotOperatorError,
)
from chalicelib.logic.host_issuers import HostIssuer
from chalicelib.principal import Identity, valid_id

ISSUER = "webim"
VISITOR_AUDIENCE = "webim:visitor"
DEV_AUDIENCE = "webim:dev"
ALGORITHM = "HS256"
VISITOR_TOKEN_SECONDS = 365 * 24 * 3600
DEV_TOKEN_SECONDS = 7 * 24 * 3600
# A long-poll wait token names one connection's queue and nothing else (protocol.md §2b): its
# own audience, so no route that asks who is calling accepts it, and no wait accepts another.
WAIT_AUDIENCE = "webim:lp-wait"
WAIT_TOKEN_SECONDS = 3600
# An operator (docs/operator.md, identity.md) is a host-site user whose token carries this claim
# as JSON `true` (a dev login's too, locally); nothing else, and never a visitor, is one.
OPERATOR_CLAIM = "webim_operator"
# Times are checked against the injected clock (PyJWT only knows the system clock).
_OPTIONS: Options = {"require": ["iss", "aud", "sub", "exp", "iat"], "verify_exp": False,
                     "verify_iat": False, "verify_nbf": False}


@dataclass(frozen=True)
class IssuedToken:
    token: str
    identity: Identity
    expires_at: int

    def to_json(self) -> dict[str, Any]:
        return {"token": self.token, "identity": self.identity.to_json(), "expires_at": self.expires_at}


class Authenticator:
    def __init__(
        self,
        signing_secret: bytes,
        host_issuers: dict[str, HostIssuer],
        leeway_seconds: int = 30,
        dev_login: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if len(signing_secret) < 32:
            raise ValueError("the signing secret needs at least 32 bytes")
        self._secret = signing_secret
        self._host_issuers = host_issuers
        self._leeway = leeway_seconds
        self._dev_login = dev_login
        self._clock = clock

    # -- minting ---------------------------------------------------------------------------
    def new_visitor(self) -> IssuedToken:
        return self._issue(Identity("visitor", "v-" + secrets.token_urlsafe(16)), VISITOR_AUDIENCE,
                           VISITOR_TOKEN_SECONDS)

    def renew_visitor(self, identity: Identity) -> IssuedToken:
        """A fresh expiry for a visitor who proved who they are: returning visitors stay."""
        if identity.kind != "visitor":
            raise InvalidCredentialError("only a visitor credential can be renewed")
        return self._issue(identity, VISITOR_AUDIENCE, VISITOR_TOKEN_SECONDS)

    def dev_login(self, name: object, operator: bool = False) -> IssuedToken:
        """A development user's token (the local stack only); `operator`: with the operator
        claim, so a developer can try the operator tools locally."""
        if not self._dev_login:
            raise DevLoginDisabledError("development login is disabled in this deployment")
        if not valid_id(name):
            raise InvalidFieldError("'name' must be a printable string of 1 to 128 characters")
        assert isinstance(name, str)
        return self._issue(Identity("user", name), DEV_AUDIENCE, DEV_TOKEN_SECONDS,
                           {OPERATOR_CLAIM: True} if operator else None)

    def _issue(self, identity: Identity, audience: str, lifetime: int,
               extra: dict[str, Any] | None = None) -> IssuedToken:
        now = int(self._clock())
        claims = {**(extra or {}), "iss": ISSUER, "aud": audience, "sub": identity.id, "iat": now,
                  "exp": now + lifetime}
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return IssuedToken(token, identity, now + lifetime)

    def wait_token(self, connection_id: str) -> str:
        """The credential of one long-poll connection's wait (the wait API's authorizer reads
        the connection id from it; the client never names a queue)."""
        now = int(self._clock())
        claims = {"iss": ISSUER, "aud": WAIT_AUDIENCE, "sub": connection_id, "iat": now,
                  "exp": now + WAIT_TOKEN_SECONDS}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def waiting_connection(self, token: str | None) -> str | None:
        """The connection a wait token was made for; None for anything else (a missing,
        forged, expired or other kind of credential)."""
        if not token:
            return None
        try:
            claims = self._check_times(jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                                  audience=WAIT_AUDIENCE, options=_OPTIONS))
        except (jwt.InvalidTokenError, InvalidCredentialError, ExpiredCredentialError):
            return None
        subject = claims["sub"]
        return subject if valid_id(subject) else None

    # -- verifying -------------------------------------------------------------------------
    def authenticate(self, token: str | None) -> Identity:
        """The identity a credential proves; raises an UnauthorizedError otherwise."""
        return self._verify(token)[0]

    def authenticate_operator(self, token: str | None) -> Identity:
        """The operator a credential proves: a user whose verified token carries the operator
        claim as `true`. An invalid credential is refused as by `authenticate` (401); a valid one
        without the claim (a visitor's, a plain user's) raises NotOperatorError (403)."""
        identity, claims = self._verify(token)
        if identity.kind != "user" or claims.get(OPERATOR_CLAIM) is not True:
            raise NotOperatorError("this credential carries no operator claim")
        return identity

    def _verify(self, token: str | None) -> tuple[Identity, dict[str, Any]]:
        if not token:
            raise MissingCredentialError("a credential is required")
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
            if issuer == ISSUER:
                return self._ours(token)
            host = self._host_issuers.get(issuer) if isinstance(issuer, str) else None
            if host is None:
                raise InvalidCredentialError("the credential's issuer is not accepted")
            return self._host(token, host)
        except jwt.ExpiredSignatureError:
            raise ExpiredCredentialError("the credential has expired") from None
        except jwt.InvalidTokenError:
            raise InvalidCredentialError("the credential is not valid") from None

    def _ours(self, token: str) -> tuple[Identity, dict[str, Any]]:
        audiences = [VISITOR_AUDIENCE, DEV_AUDIENCE] if self._dev_login else [VISITOR_AUDIENCE]
        claims = self._check_times(jwt.decode(token, self._secret, algorithms=[ALGORITHM], issuer=ISSUER,
                                              audience=audiences, options=_OPTIONS))
        kind = "visitor" if claims["aud"] == VISITOR_AUDIENCE else "user"
        return _identity(kind, claims["sub"]), claims

    def _host(self, token: str, host: HostIssuer) -> tuple[Identity, dict[str, Any]]:
        key = host.key_for(jwt.get_unverified_header(token).get("kid"))
        if key is None:
            raise InvalidCredentialError("no key of this issuer matches the credential")
        claims = self._check_times(jwt.decode(token, key, algorithms=[host.algorithm], issuer=host.issuer,
                                              audience=host.audience, options=_OPTIONS))
        return _identity("user", claims.get(host.subject_claim)), claims

    def _check_times(self, claims: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        times = {name: claims.get(name) for name in ("exp", "iat", "nbf")}
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, int | float)) for v in times.values()):
            raise InvalidCredentialError("the credential's times are not numbers")
        if times["exp"] is not None and now > times["exp"] + self._leeway:
            raise ExpiredCredentialError("the credential has expired")
        for name in ("iat", "nbf"):
            value = times[name]
            if value is not None and value > now + self._leeway:
                raise InvalidCredentialError(f"the credential's {name} is in the future")
        return claims


def _identity(kind: str, subject: object) -> Identity:
    if not valid_id(subject):
        raise InvalidCredentialError("the credential's subject is not a valid id")
    assert isinstance(subject, str)
    return Identity(kind, subject)  # type: ignore[arg-type]
