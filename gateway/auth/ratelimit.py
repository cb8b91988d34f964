"""Rate limits with the ``limits`` library: per caller and route, per IP on auth endpoints, per IP
for failed password logins (brute force), and per IP for bad bearer tokens. In memory by default;
``async+redis://`` shares the counters between gateway replicas.

The last two are separate counters on purpose: guessing passwords blocks password logins from the
address, while bad bearer tokens only slow further bad tokens. A valid token is always served,
so one client with a broken token cannot lock out everyone behind the same NAT."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from common.errors import RateLimited
from common.settings import RateLimitSettings


class RateLimiter:
    """The gateway's three limits; each ``check_*`` raises ``RateLimited`` when exceeded."""

    def __init__(self, settings: RateLimitSettings) -> None:
        self.enabled = settings.enabled
        url = settings.storage_url.get_secret_value()
        # The gateway is async: always use the library's asyncio storage of that scheme.
        storage = storage_from_string(url if url.startswith("async+") else f"async+{url}")
        self._limiter = MovingWindowRateLimiter(storage)
        self._per_subject = parse(settings.per_subject)
        self._auth_endpoints = parse(settings.auth_endpoints)
        self._failed_auth = parse(settings.failed_auth)

    async def _hit(self, item: RateLimitItem, *key: str) -> None:
        if not self.enabled:
            return
        if await self._limiter.hit(item, *key):
            return
        stats = await self._limiter.get_window_stats(item, *key)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            "too many requests; slow down",
            details={"retry_after_seconds": retry_after, "limit": str(item)},
        )

    async def check_subject(self, subject: str, route: str) -> None:
        """Count one call of ``subject`` on ``route``."""
        await self._hit(self._per_subject, "subject", subject, route)

    async def check_auth_endpoint(self, client_ip: str) -> None:
        """Count one call to an auth endpoint from ``client_ip``."""
        await self._hit(self._auth_endpoints, "auth", client_ip)

    async def check_not_blocked(self, client_ip: str) -> None:
        """Refuse a password login (or break-glass attempt) from ``client_ip`` while it is over
        the failed-login limit."""
        if not self.enabled:
            return
        if not await self._limiter.test(self._failed_auth, "failed-auth", client_ip):
            stats = await self._limiter.get_window_stats(
                self._failed_auth, "failed-auth", client_ip
            )
            raise RateLimited(
                "too many failed authentications from this address",
                details={
                    "retry_after_seconds": max(1, math.ceil(stats.reset_time - time.time())),
                    "limit": str(self._failed_auth),
                },
            )

    async def record_failed_auth(self, client_ip: str) -> None:
        """Count one failed password login (or break-glass attempt) from ``client_ip``."""
        if self.enabled:
            await self._limiter.hit(self._failed_auth, "failed-auth", client_ip)

    async def check_bad_token(self, client_ip: str) -> None:
        """Count one bad bearer token from ``client_ip``; past the limit, raise ``RateLimited``
        (the caller answers it instead of 401). Valid tokens never pass through here."""
        if not self.enabled:
            return
        if await self._limiter.hit(self._failed_auth, "bad-token", client_ip):
            return
        stats = await self._limiter.get_window_stats(self._failed_auth, "bad-token", client_ip)
        raise RateLimited(
            "too many invalid tokens from this address; valid tokens are still accepted",
            details={
                "retry_after_seconds": max(1, math.ceil(stats.reset_time - time.time())),
                "limit": str(self._failed_auth),
            },
        )
