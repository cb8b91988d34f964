"""The realm's signing keys, fetched over HTTP, cached, and refetched when a new key id appears."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx
import jwt

from common.errors import DependencyUnavailable

log = logging.getLogger(__name__)


class UnknownSigningKey(Exception):
    """The token names a key id the realm does not publish (even after a refetch)."""


class JwksCache:
    """Caches the JWKS by key id.

    A token signed with an unknown ``kid`` triggers a refetch (Keycloak key rotation needs no
    restart), at most once per ``min_refresh_interval`` so that tokens with made-up key ids cannot
    turn the gateway into a load generator against Keycloak.
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float,
        min_refresh_interval: float,
        http: httpx.AsyncClient,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.min_refresh_interval = min_refresh_interval
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK:
        """The verification key for ``kid``."""
        stale = self._fetched_at is None or time.monotonic() - self._fetched_at > self.max_age
        if stale or kid not in self._keys:
            await self._refresh(force=stale)
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownSigningKey(kid) from None

    async def _refresh(self, *, force: bool) -> None:
        async with self._lock:
            now = time.monotonic()
            if (
                not force
                and self._fetched_at is not None
                and now - self._fetched_at < self.min_refresh_interval
            ):
                return
            try:
                response = await self._http.get(self.url)
                response.raise_for_status()
                document: dict[str, Any] = response.json()
            except (httpx.HTTPError, ValueError) as exc:
                if self._keys:
                    # Keep serving with the keys we have; Keycloak may be restarting.
                    log.warning("JWKS refresh failed", extra={"cause": type(exc).__name__})
                    return
                raise DependencyUnavailable(
                    "the identity provider's signing keys cannot be fetched",
                    details={"dependency": "keycloak", "cause": type(exc).__name__},
                ) from None
            keys: dict[str, jwt.PyJWK] = {}
            for entry in document.get("keys", []):
                if entry.get("use", "sig") != "sig" or "kid" not in entry:
                    continue
                try:
                    keys[entry["kid"]] = jwt.PyJWK(entry)
                except jwt.PyJWTError:
                    log.warning("ignoring unusable JWK", extra={"kid": entry.get("kid")})
            self._keys = keys
            self._fetched_at = now
            log.info("JWKS refreshed", extra={"key_ids": sorted(keys)})
