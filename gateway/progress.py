"""A short-lived cache of fleet progress, so many viewers cost one workflow query.

Each query goes gateway -> Temporal -> a worker and back (tens to hundreds of milliseconds under
load). Viewers of the same run within ``max_age`` share one answer, and concurrent requests for a
stale entry wait for a single query instead of sending one each.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from models.fleet import FleetProgress


@dataclass
class _Entry:
    value: FleetProgress | None = None
    at: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class ProgressCache:
    """Per-run progress, at most ``max_age`` seconds old."""

    def __init__(self, max_age: float = 0.5, max_runs: int = 1000) -> None:
        self.max_age = max_age
        self.max_runs = max_runs
        self._entries: dict[str, _Entry] = {}

    async def get(
        self, run_id: str, fetch: Callable[[], Awaitable[FleetProgress]]
    ) -> FleetProgress:
        """The cached progress of ``run_id``, refreshed with ``fetch`` when stale."""
        entry = self._entries.get(run_id)
        if entry is None:
            if len(self._entries) >= self.max_runs:
                self._entries.pop(next(iter(self._entries)))
            entry = self._entries[run_id] = _Entry()
        if entry.value is not None and time.monotonic() - entry.at < self.max_age:
            return entry.value
        async with entry.lock:
            if entry.value is not None and time.monotonic() - entry.at < self.max_age:
                return entry.value
            entry.value = await fetch()
            entry.at = time.monotonic()
            return entry.value
