"""The monitoring API's machinery: a single-flight snapshot cache shared by every viewer, and
a bounded rolling window of request latencies per route template (fed by
``gateway.metrics.RequestTimingMiddleware``).

Both are per gateway process: each replica computes its own snapshot (at most once per
``snapshot_seconds``) and measures its own requests. Prometheus metrics (``/metrics``) are the
fleet-wide view; these are what one dashboard call can show without a metrics stack."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

from models.monitoring import RouteLatency

Compute = Callable[[], Awaitable[bytes]]

# Requests matching no route share one entry, so a scan of random paths cannot grow the window.
UNMATCHED = "(unmatched)"


@dataclass
class _Entry:
    body: bytes | None = None
    at: float = -math.inf
    inflight: asyncio.Task[bytes] | None = None


@dataclass
class SnapshotCache:
    """Serialised snapshots by key, each computed at most once per ``max_age`` seconds.

    A viewer finding a fresh snapshot gets it as it is; otherwise every concurrent viewer of the
    key awaits one shared computation (single flight), so 20 viewers cost one computation and
    see the same bytes. A failed computation is not kept: its error reaches the viewers that
    waited for it, and the next viewer tries again."""

    max_age: float
    max_keys: int = 64
    clock: Callable[[], float] = time.monotonic
    computations: int = 0
    _entries: OrderedDict[Hashable, _Entry] = field(default_factory=OrderedDict)

    async def get(self, key: Hashable, compute: Compute) -> bytes:
        """The key's snapshot, computing it (once, for every waiting viewer) when stale."""
        entry = self._entry(key)
        if entry.body is not None and self.clock() - entry.at < self.max_age:
            return entry.body
        if entry.inflight is None or entry.inflight.done():
            entry.inflight = asyncio.create_task(self._compute(entry, compute))
        # Shielded: a viewer who disconnects does not cancel the others' computation.
        return await asyncio.shield(entry.inflight)

    async def _compute(self, entry: _Entry, compute: Compute) -> bytes:
        self.computations += 1
        body = await compute()
        entry.body, entry.at = body, self.clock()
        return body

    def _entry(self, key: Hashable) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            while len(self._entries) >= self.max_keys:
                self._entries.popitem(last=False)
            entry = self._entries[key] = _Entry()
        else:
            self._entries.move_to_end(key)
        return entry


def percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an ascending, non-empty list."""
    rank = max(math.ceil(fraction * len(ordered)), 1)
    return ordered[rank - 1]


@dataclass
class LatencyWindow:
    """The newest ``samples`` latencies per route template, none older than ``max_age``
    seconds: memory is bounded by the number of routes, whatever the traffic."""

    samples: int = 1000
    max_age: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _routes: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)

    def record(self, route: str, milliseconds: float) -> None:
        """One request of ``route`` took ``milliseconds`` to start its response."""
        window = self._routes.get(route)
        if window is None:
            window = self._routes[route] = deque(maxlen=self.samples)
        window.append((self.clock(), milliseconds))

    def summary(self) -> list[RouteLatency]:
        """Percentiles per route over the window, busiest first."""
        horizon = self.clock() - self.max_age
        routes: list[RouteLatency] = []
        for route, window in list(self._routes.items()):
            while window and window[0][0] < horizon:
                window.popleft()
            if not window:
                continue
            ordered = sorted(ms for _, ms in window)
            routes.append(
                RouteLatency(
                    route=route,
                    count=len(ordered),
                    p50_ms=round(percentile(ordered, 0.50), 3),
                    p95_ms=round(percentile(ordered, 0.95), 3),
                    p99_ms=round(percentile(ordered, 0.99), 3),
                    max_ms=round(ordered[-1], 3),
                )
            )
        return sorted(routes, key=lambda r: (-r.count, r.route))
