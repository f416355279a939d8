"""From a call's credentials to a principal: a bearer token (static or a signed JWT) or a client certificate.

A bearer token, when present, decides: a bad one is refused even over a valid client
certificate, since it names the user and the certificate only the machine. Without one, a
client certificate (verified by the TLS layer against ``--client-ca``) names the principal
through the config's ``certificates`` map, by its common name or any subject alternative name.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jwt

from grid_scheduler.service.auth.config import AuthConfig
from grid_scheduler.service.auth.principal import Principal

BEARER = "bearer "
MAX_TOKEN_BYTES = 16 * 1024
# Verified JWTs are remembered (by digest, until they expire) so that a client sending the same
# token on every call pays for one signature check, not one per call. Bounded: cleared when full.
VERIFIED_CACHE_SIZE = 10_000


class Unauthenticated(Exception):
    """No credentials, or credentials that do not check out. The message never repeats the token."""


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self._tokens = {t.digest: t.principal for t in config.tokens}
        self._verified: dict[str, tuple[str, float]] = {}  # token digest -> (principal, expiry)
        self._jwks: jwt.PyJWKSet | None = None
        if config.jwt is not None:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(config.jwt.jwks_file.read_text()))

    def authenticate(
        self, metadata: Sequence[tuple[str, str | bytes]], auth_context: Mapping[str, Sequence[bytes]]
    ) -> Principal:
        token = _bearer(metadata)
        name = self._from_token(token) if token is not None else self._from_certificate(auth_context)
        principal = self.config.principal(name)
        if principal is None:
            raise Unauthenticated(f"principal {name[:64]!r} is not in the auth config")
        return principal

    def _from_token(self, token: str) -> str:
        digest = hashlib.sha256(token.encode()).hexdigest()
        for known, name in self._tokens.items():
            if hmac.compare_digest(known, digest):
                return name
        if self._jwks is None or self.config.jwt is None or token.count(".") != 2:
            raise Unauthenticated("unknown bearer token")
        cached = self._verified.get(digest)
        if cached is not None and time.time() < cached[1]:
            return cached[0]
        name, expires_at = self._verify_jwt(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[digest] = (name, expires_at)
        return name

    def _verify_jwt(self, token: str) -> tuple[str, float]:
        assert self._jwks is not None and self.config.jwt is not None
        settings = self.config.jwt
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
            if not keys:
                raise Unauthenticated("JWT signed by an unknown key")
            claims: dict[str, Any] = jwt.decode(
                token, keys[0], algorithms=settings.algorithms, audience=settings.audience, issuer=settings.issuer,
                leeway=settings.leeway_s, options={"require": ["exp", "iss", "aud", settings.principal_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("JWT expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("JWT audience is not this service") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("JWT issuer is not trusted") from None
        except jwt.PyJWTError as e:
            raise Unauthenticated(f"JWT rejected: {type(e).__name__}") from None
        name = claims[settings.principal_claim]
        if not isinstance(name, str) or not name:
            raise Unauthenticated(f"JWT claim {settings.principal_claim} is not a name")
        # Remembered until it expires, without the leeway decode allowed.
        return name, float(claims["exp"])

    def _from_certificate(self, auth_context: Mapping[str, Sequence[bytes]]) -> str:
        names = [*auth_context.get("x509_common_name", ()), *auth_context.get("x509_subject_alternative_name", ())]
        if not names:
            raise Unauthenticated("no credentials: send 'authorization: Bearer <token>' or a client certificate")
        for raw in names:
            name = self.config.certificates.get(raw.decode(errors="replace"))
            if name is not None:
                return name
        raise Unauthenticated("client certificate maps to no principal")


def _bearer(metadata: Sequence[tuple[str, str | bytes]]) -> str | None:
    for key, value in metadata:
        if key != "authorization":
            continue
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if len(text) > MAX_TOKEN_BYTES or not text.lower().startswith(BEARER):
            raise Unauthenticated("authorization metadata is not 'Bearer <token>'")
        return text[len(BEARER):].strip()
    return None
