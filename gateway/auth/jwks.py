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
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last attempt, successful or not
        self._lock = asyncio.Lock()

    def _stale(self, now: float) -> bool:
        return self._fetched_at is None or now - self._fetched_at > self.max_age

    async def get(self, kid: str) -> jwt.PyJWK:
        """The verification key for ``kid``."""
        if self._stale(time.monotonic()) or kid not in self._keys:
            await self._refresh(kid)
        try:
            return self._keys[kid]
        except KeyError:
            raise UnknownSigningKey(kid) from None

    async def _refresh(self, kid: str) -> None:
        async with self._lock:
            now = time.monotonic()
            # Decided again under the lock: a burst of requests waiting here needs one fetch.
            if not self._stale(now) and kid in self._keys:
                return
            recently = (
                self._attempted_at is not None
                and now - self._attempted_at < self.min_refresh_interval
            )
            last_attempt_failed = self._attempted_at != self._fetched_at
            # Expiry after a good fetch refreshes at once. Unknown key ids, and retries while
            # the provider is down, wait min_refresh_interval; with no keys at all we always try.
            expired_after_success = self._stale(now) and not last_attempt_failed
            if recently and self._keys and not expired_after_success:
                return
            self._attempted_at = now
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
            # Counted from when the keys arrived, not when we asked: a slow answer must not
            # arrive already stale. Equal timestamps mean "the last attempt succeeded".
            self._fetched_at = self._attempted_at = time.monotonic()
            log.info("JWKS refreshed", extra={"key_ids": sorted(keys)})
