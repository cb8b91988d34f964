"""A cache of fleet progress, so many viewers cost one workflow query and wait for none.

Each query goes gateway -> Temporal -> a worker and back: tens of milliseconds, hundreds under
load, more for a big run's payload. Viewers of a run share one snapshot, serialised once:

- younger than ``max_age`` (1 s): served as it is;
- older, but younger than ``max_stale`` (5 s), or older while a background query is still on
  its way: served as it is while that one query refreshes it (so a viewer never waits for
  Temporal while the run is being watched);
- older, but the last query failed (no worker answers, Temporal restarting) and younger than
  ``max_outage`` (120 s): served as it is while one query at a time (at most one a
  ``max_age``) tries again: a watched run's status keeps answering through a worker or Temporal
  restart, and its ``Age`` header says how old it is;
- older than that with no query on its way, or never read: the viewer waits for one query,
  shared by every concurrent viewer of the run, and sees its error;
- a finished run's snapshot never changes and is kept until evicted.

Each snapshot carries an ``event_id`` for the SSE stream (``gateway.routers.run_stream``): the
number of settled targets and a digest of the state (status, counts, targets' states), so two
snapshots of the same state share it, whichever gateway read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from models.fleet import FleetCounts, FleetProgress, FleetRunInput, FleetState, FleetStatus

log = logging.getLogger(__name__)

FINAL = frozenset({FleetStatus.COMPLETED, FleetStatus.CANCELLED})
Fetch = Callable[[], Awaitable[FleetProgress]]
# What changes with the clock alone, not with the run's state: left out of the event id.
_VOLATILE = frozenset({"updated_at", "throughput_per_minute", "eta_seconds"})


def event_id(progress: FleetProgress) -> str:
    """``<settled>-<digest>``: settled targets (succeeded, failed, up to date) never go down
    during a run, so the prefix orders a run's states; the digest tells equal states apart from
    changed ones."""
    counts = progress.counts
    settled = counts.succeeded + counts.failed + counts.up_to_date
    state = progress.model_dump(mode="json", exclude=set(_VOLATILE))
    digest = hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
    return f"{settled}-{digest}"


def accepted_progress(params: FleetRunInput) -> FleetProgress:
    """What the run's ``progress`` query answers before it has resolved its selector: the
    workflow's own answer (``FleetProgress.of``) over the empty compact state it starts from,
    so a dry run says so, and the per-target map is known to be partial, from the first
    request on."""
    now = datetime.now(UTC)
    state = FleetState(
        started_at=now, concurrency=params.concurrency, compact=True, counts=FleetCounts()
    )
    return FleetProgress.of(params, state, FleetCounts(), FleetStatus.RUNNING, now)


@dataclass(frozen=True)
class Snapshot:
    """One answer of the ``progress`` query, with its JSON ready to send, plain and gzipped
    (a 2,000-target run's progress is about 200 KB of JSON; every viewer gets the same)."""

    progress: FleetProgress
    body: bytes
    at: float
    gzipped: bytes = b""
    summary: bytes = b""
    event_id: str = ""

    @classmethod
    def of(cls, progress: FleetProgress, at: float) -> Snapshot:
        body = progress.model_dump_json().encode()
        # The light body: counts and status, no per-target map, no queued page of ids.
        summary = (
            progress.model_copy(update={"targets": {}, "queued": []}).model_dump_json().encode()
        )
        return cls(
            progress, body, at, gzip.compress(body, compresslevel=5), summary, event_id(progress)
        )

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
    # The last query failed (at ``attempted``); a success clears it.
    failing: bool = False
    attempted: float = 0.0


class ProgressCache:
    """Per-run progress snapshots; see the module docstring."""

    def __init__(
        self,
        max_age: float = 1.0,
        max_stale: float = 5.0,
        max_runs: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        max_outage: float = 120.0,
    ) -> None:
        self.max_age = max_age
        self.max_stale = max_stale
        self.max_outage = max_outage
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
            outage = entry.failing and age < self.max_outage
            if age < self.max_stale or refreshing or outage:
                # A slow query (a busy worker at the start of a big run) keeps the old
                # snapshot in service, and so does a failed one for a while (a worker or
                # Temporal restarting); past max_outage the next viewer waits and sees why.
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

    def age(self, snapshot: Snapshot) -> float:
        """Seconds since ``snapshot`` was read from the run."""
        return max(self._clock() - snapshot.at, 0.0)

    async def _refresh(self, entry: _Entry, fetch: Fetch) -> Snapshot:
        entry.attempted = self._clock()
        try:
            progress = await fetch()
        except Exception:
            entry.failing = True
            raise
        snapshot = await Snapshot.build(progress, self._clock())
        entry.snapshot, entry.failing = snapshot, False
        return snapshot

    def _refresh_in_background(self, entry: _Entry, fetch: Fetch) -> None:
        if entry.refreshing is not None and not entry.refreshing.done():
            return
        if entry.failing and self._clock() - entry.attempted < self.max_age:
            return  # a query failed a moment ago: not one per viewer while it is away

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
