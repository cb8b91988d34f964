"""``GET /api/v1/migrations/{id}/stream``: a run's progress as Server-Sent Events.

Every ``progress`` event carries the whole state (not a delta) and an ``id`` naming that state
(``gateway.progress.event_id``: settled targets, then a digest). A client that reconnects
(``EventSource`` does it by itself, ``retry`` says after 1 s) sends the last id it saw as
``Last-Event-ID``; the stream then sends the current state at once when it differs from that
one, and from the next tick on when it does not. Since each event is the run's whole state,
read from the workflow (never from this gateway's memory), a client that reconnects to another
gateway, or to this one after a restart, misses no state change: its next event holds every
change made meanwhile. A run that has ended answers its final state and ``end``; a client that
already saw ``end`` (its id ends in ``.end``) gets 204, which tells ``EventSource`` to stop.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import Response
from sse_starlette.sse import EventSourceResponse
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from common.errors import DependencyUnavailable
from gateway.auth.deps import MigrationsRead
from gateway.deps import TemporalDep
from gateway.progress import Snapshot
from gateway.routers.migrations import (
    RUN_ERRORS,
    CacheDep,
    FleetHandle,
    _fetcher,
    _run_handle,
)

router = APIRouter(prefix="/api/v1/migrations", tags=["migrations"])

STREAM_INTERVAL_SECONDS = 1.0
# Milliseconds an EventSource waits before it reconnects (browsers default to about 3 s).
RECONNECT_MILLISECONDS = 1000
END_SUFFIX = ".end"


def sse_event(event: str, data: str, event_id: str) -> bytes:
    """One event, ``event`` and ``data`` first (every reader of this stream so far expects
    them in that order), then its ``id``."""
    lines = [f"event: {event}", *(f"data: {chunk}" for chunk in data.splitlines() or [""])]
    lines.append(f"id: {event_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@router.get(
    "/{run_id}/stream",
    summary="Progress as Server-Sent Events until the run ends (resumable: Last-Event-ID)",
    response_model=None,
    responses={**RUN_ERRORS, 204: {"description": "The client has already seen the end."}},
)
async def stream_run(
    run_id: str,
    principal: MigrationsRead,
    temporal: TemporalDep,
    cache: CacheDep,
    targets: Annotated[
        str,
        Query(
            pattern="^(all|none)$",
            description="none: counts only, no per-target map; all: the targets the progress "
            "holds (bounded for compact runs).",
        ),
    ] = "all",
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=128,
            description="The id of the last event received: the stream resumes after it.",
        ),
    ] = None,
) -> Response:
    """``event: progress`` with the progress JSON every second, and at once when the run ends;
    then ``event: end``. Each event has an ``id``; reconnect with ``Last-Event-ID`` to resume
    (see the module docstring). ``targets=none`` streams the light summary (what a dashboard
    watching a run of 100,000 targets wants). ``targets=all`` sends the targets the progress
    holds: for a compact run only the bounded known ones (in flight, failed kept, recent
    results); page the rest with ``GET /api/v1/migrations/{id}/targets``."""
    del principal
    light = targets == "none"
    handle = _run_handle(temporal, run_id)
    fetch = _fetcher(handle, run_id)
    first = await cache.get(run_id, fetch)  # 404 before the stream starts
    if first.final and last_event_id == first.event_id + END_SUFFIX:
        return Response(status_code=204)

    def progress(snapshot: Snapshot) -> bytes:
        data = (snapshot.summary if light else snapshot.body).decode()
        return sse_event("progress", data, snapshot.event_id)

    def end(snapshot: Snapshot, status: str) -> bytes:
        return sse_event("end", json.dumps({"status": status}), snapshot.event_id + END_SUFFIX)

    async def events() -> AsyncIterator[bytes]:
        yield f"retry: {RECONNECT_MILLISECONDS}\r\n\r\n".encode()
        snapshot = first
        # A resumed stream skips the state its client already has; every later tick is sent.
        seen = last_event_id
        ended = asyncio.create_task(_ended(handle))
        try:
            while not snapshot.final:
                if snapshot.event_id != seen:
                    yield progress(snapshot)
                seen = None
                done, _ = await asyncio.wait({ended}, timeout=STREAM_INTERVAL_SECONDS)
                try:
                    # When the run has just closed: its final state, not a cached one.
                    snapshot = await cache.get(run_id, fetch, fresh=bool(done))
                except DependencyUnavailable:
                    # No worker answered the query (one restarting, Temporal away): the
                    # stream goes on with what it last sent and asks again next tick.
                    if not done:
                        continue
                    yield end(snapshot, ended.result())
                    return
                if done and not snapshot.final:
                    # Terminated (or failed) from outside: it never reached a final state.
                    yield progress(snapshot)
                    yield end(snapshot, ended.result())
                    return
            if snapshot.event_id != seen:
                yield progress(snapshot)
            yield end(snapshot, snapshot.progress.status.value)
        finally:
            ended.cancel()

    return EventSourceResponse(events(), ping=15)


async def _ended(handle: FleetHandle) -> str:
    """Returns how the run closed, once it has (a long poll on Temporal that follows
    continue-as-new); retries while Temporal is unreachable."""
    while True:
        try:
            result = await handle.result()
        except WorkflowFailureError as exc:
            cause = exc.cause
            return type(cause).__name__.removesuffix("Error").lower() if cause else "failed"
        except RPCError:
            await asyncio.sleep(STREAM_INTERVAL_SECONDS)
            continue
        return result.status.value
