"""Validation of bearer tokens: RS256 only, signature by the realm's keys, iss/aud/exp/nbf."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jwt

from common.errors import AuthenticationRequired
from common.settings import DEV_KEY_ID_PREFIX, AuthSettings
from gateway.auth.jwks import JwksCache, UnknownSigningKey
from models.auth import Permission, Principal

ALLOWED_ALGORITHMS = ("RS256",)
VERIFIED_TTL_SECONDS = 60.0
VERIFIED_MAX_ENTRIES = 10_000


class InvalidToken(AuthenticationRequired):
    """A bearer token was presented but cannot be trusted; the message says why, briefly."""

    error_type = "invalid_token"


class ExpiredToken(InvalidToken):
    """A genuine token past its expiry: a client that forgot to refresh, not an attack."""


def roles_from_claims(claims: Mapping[str, Any], client_id: str) -> list[str]:
    """Keycloak's realm roles plus the roles of ``client_id`` (``resource_access``)."""
    roles: list[str] = []
    realm = claims.get("realm_access")
    if isinstance(realm, Mapping):
        roles += [r for r in realm.get("roles", []) if isinstance(r, str)]
    resources = claims.get("resource_access")
    if isinstance(resources, Mapping):
        client = resources.get(client_id)
        if isinstance(client, Mapping):
            roles += [r for r in client.get("roles", []) if isinstance(r, str)]
    return sorted(set(roles))


def permissions_for(
    roles: Sequence[str], mapping: Mapping[str, Sequence[Permission]]
) -> list[Permission]:
    """The union of the permissions of ``roles`` under ``mapping``."""
    found: set[Permission] = set()
    for role in roles:
        found.update(mapping.get(role, ()))
    return sorted(found)


class TokenValidator:
    """Turns a bearer token into a ``Principal`` or raises ``InvalidToken``."""

    def __init__(
        self,
        settings: AuthSettings,
        jwks: JwksCache,
        *,
        refuse_dev_keys: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.jwks = jwks
        self.refuse_dev_keys = refuse_dev_keys
        self._clock = clock
        # sha256(token) -> (principal, until): a dashboard polling every second sends the same
        # token each time; verifying it once per VERIFIED_TTL_SECONDS saves the RSA check and
        # the claim parsing. The TTL bounds how long a key removed from the JWKS still admits
        # a token it signed; a token's own expiry always wins.
        self._verified: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()

    async def validate(self, token: str) -> Principal:
        """Verify ``token`` and map its roles to permissions (remembered for a minute at most,
        never past the token's expiry)."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        remembered = self._verified.get(digest)
        if remembered is not None:
            if now < remembered[1]:
                self._verified.move_to_end(digest)
                return remembered[0].model_copy()
            del self._verified[digest]
        principal, expires_at = await self._verify(token)
        self._verified[digest] = (principal, min(expires_at, now + VERIFIED_TTL_SECONDS))
        while len(self._verified) > VERIFIED_MAX_ENTRIES:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in ALLOWED_ALGORITHMS:
            # Never echo the header's value: it is attacker-controlled and ends up in a header.
            raise InvalidToken("token algorithm is not accepted (RS256 only)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        if self.refuse_dev_keys and kid.startswith(DEV_KEY_ID_PREFIX):
            raise InvalidToken("tokens of the development issuer are not accepted here")
        try:
            key = await self.jwks.get(kid)
        except UnknownSigningKey:
            raise InvalidToken("token is signed by an unknown key") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=list(ALLOWED_ALGORITHMS),
                issuer=self.settings.issuer_url,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "sub"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise ExpiredToken("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("token is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("token was issued by an untrusted issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("token signature does not verify") from None
        except jwt.PyJWTError:
            raise InvalidToken("token is invalid") from None
        self._check_audience(claims)
        # Keycloak marks access tokens typ=Bearer; an ID or refresh token must not open the API.
        token_type = claims.get("typ")
        if token_type is not None and str(token_type).lower() != "bearer":
            raise InvalidToken("only access tokens are accepted")
        roles = roles_from_claims(claims, self.settings.client_id)
        principal = Principal(
            subject=str(claims["sub"]),
            username=claims.get("preferred_username"),
            client_id=claims.get("azp") or claims.get("client_id"),
            roles=roles,
            permissions=permissions_for(roles, self.settings.role_permissions),
        )
        # No leeway here: a remembered token stops at its exact expiry.
        return principal, float(claims["exp"])

    def _check_audience(self, claims: Mapping[str, Any]) -> None:
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else list(audience or [])
        if self.settings.audience in audiences or claims.get("azp") == self.settings.audience:
            return
        raise InvalidToken("token is not meant for this API (audience)")
