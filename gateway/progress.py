"""A cache of fleet progress, so many viewers cost one workflow query and wait for none.

Each query goes gateway -> Temporal -> a worker and back: tens of milliseconds, hundreds under
load, more for a big run's payload. Viewers of a run share one snapshot, serialised once:

- younger than ``max_age`` (1 s): served as it is;
- older, but younger than ``max_stale`` (5 s), or older while a background query is still on
  its way: served as it is while that one query refreshes it (so a viewer never waits for
  Temporal while the run is being watched);
- older than that with no query on its way (the last one failed), or never read: the viewer
  waits for one query, shared by every concurrent viewer of the run;
- a finished run's snapshot never changes and is kept until evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from models.fleet import FleetProgress, FleetStatus

log = logging.getLogger(__name__)

FINAL = frozenset({FleetStatus.COMPLETED, FleetStatus.CANCELLED})
Fetch = Callable[[], Awaitable[FleetProgress]]


@dataclass(frozen=True)
class Snapshot:
    """One answer of the ``progress`` query, with its JSON ready to send, plain and gzipped
    (a 2,000-target run's progress is about 200 KB of JSON; every viewer gets the same)."""

    progress: FleetProgress
    body: bytes
    at: float
    gzipped: bytes = b""
    summary: bytes = b""

    @classmethod
    def of(cls, progress: FleetProgress, at: float) -> Snapshot:
        body = progress.model_dump_json().encode()
        # The light body: counts and status, no per-target map, no queued page of ids.
        summary = (
            progress.model_copy(update={"targets": {}, "queued": []}).model_dump_json().encode()
        )
        return cls(progress, body, at, gzip.compress(body, compresslevel=5), summary)

    @classmethod
    async def build(cls, progress: FleetProgress, at: float) -> Snapshot:
        """``of`` in a thread: compressing releases the GIL, so viewers are served meanwhile."""
        return await asyncio.to_thread(cls.of, progress, at)

    @property
    def final(self) -> bool:
        return self.progress.status in FINAL


@dataclass
class _Entry:
    snapshot: Snapshot | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refreshing: asyncio.Task[None] | None = None


class ProgressCache:
    """Per-run progress snapshots; see the module docstring."""

    def __init__(
        self,
        max_age: float = 1.0,
        max_stale: float = 5.0,
        max_runs: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.max_stale = max_stale
        self.max_runs = max_runs
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    async def get(self, run_id: str, fetch: Fetch, *, fresh: bool = False) -> Snapshot:
        """The run's snapshot; ``fresh`` waits for a new query whatever the cache holds."""
        entry = self._entry(run_id)
        snapshot = entry.snapshot
        if snapshot is not None and not fresh:
            age = self._clock() - snapshot.at
            if snapshot.final or age < self.max_age:
                return snapshot
            refreshing = entry.refreshing is not None and not entry.refreshing.done()
            if age < self.max_stale or refreshing:
                # A slow query (a busy worker at the start of a big run) keeps the old
                # snapshot in service; only a failed one makes the next viewer wait and see why.
                self._refresh_in_background(entry, fetch)
                return snapshot
        async with entry.lock:
            current = entry.snapshot
            if current is not None and current is not snapshot and not fresh:
                return current  # another viewer refreshed it while we waited
            return await self._refresh(entry, fetch)

    def seed(self, run_id: str, progress: FleetProgress) -> None:
        """A first snapshot for a run this gateway just started (kept only if none exists);
        it ages like any other and is refreshed from the workflow."""
        entry = self._entry(run_id)
        if entry.snapshot is None:
            entry.snapshot = Snapshot.of(progress, self._clock())

    def _entry(self, run_id: str) -> _Entry:
        entry = self._entries.get(run_id)
        if entry is None:
            while len(self._entries) >= self.max_runs:
                _, evicted = self._entries.popitem(last=False)
                if evicted.refreshing is not None:
                    evicted.refreshing.cancel()
            entry = self._entries[run_id] = _Entry()
        else:
            self._entries.move_to_end(run_id)
        return entry

    async def _refresh(self, entry: _Entry, fetch: Fetch) -> Snapshot:
        progress = await fetch()
        snapshot = await Snapshot.build(progress, self._clock())
        entry.snapshot = snapshot
        return snapshot

    def _refresh_in_background(self, entry: _Entry, fetch: Fetch) -> None:
        if entry.refreshing is not None and not entry.refreshing.done():
            return

        async def refresh() -> None:
            if entry.lock.locked():
                return  # a viewer is already waiting for a query
            async with entry.lock:
                with contextlib.suppress(asyncio.CancelledError):
                    try:
                        await self._refresh(entry, fetch)
                    except Exception as exc:
                        # The next viewer after max_stale waits for a query and sees the error.
                        log.warning("background progress refresh failed: %s", type(exc).__name__)

        entry.refreshing = asyncio.create_task(refresh())
