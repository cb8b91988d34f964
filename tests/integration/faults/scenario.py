"""One fault test's course: register the fleet, start the rollout, watch it (status every
100 ms, the SSE stream), strike when a slow target is mid-version, wait for the run to finish,
then check the fleet, the watchers and write the report line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from cli.stack import EmbeddedPostgres
from tests.conftest import TargetDatabase, Tokens
from tests.integration.faults.fleet import register, start_run, wait_mid_version
from tests.integration.faults.observe import StatusPoller, StreamReader, Window, stop_task
from tests.integration.faults.stack import FaultStack

FINISHED = ("completed", "cancelled")


@dataclass
class Rollout:
    """A run under watch: its ids, the two watchers and what the fault reported."""

    stack: FaultStack
    tokens: Tokens
    label: str
    set_name: str
    run: dict[str, Any]
    poller: StatusPoller
    stream: StreamReader
    started: float = field(default_factory=time.monotonic)
    final: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def operator(self) -> dict[str, str]:
        return self.tokens.headers("infra-operator")

    async def settled(self, at_least: int, within: float = 120.0) -> None:
        """Until the poller has seen ``at_least`` targets finish."""
        deadline = time.monotonic() + within
        while True:
            counts = self.poller.last.get("counts") or {}
            if sum(counts.get(k, 0) for k in ("succeeded", "failed", "up_to_date")) >= at_least:
                return
            assert time.monotonic() < deadline, (
                f"the run did not get going: {self.poller.last}\n"
                f"worker running: {self.stack.worker is not None and self.stack.worker.running()}"
                f"\n{self.stack.log_tail('worker')}"
            )
            await asyncio.sleep(0.1)

    async def finished(self, within: float = 240.0) -> dict[str, Any]:
        """The run's last status once it has finished (as the poller saw it)."""
        deadline = time.monotonic() + within
        while self.poller.last.get("status") not in FINISHED:
            assert time.monotonic() < deadline, f"the run never finished: {self.poller.last}"
            await asyncio.sleep(0.2)
        return self.poller.last


Fault = Callable[[Rollout], Awaitable[Window | None]]


@asynccontextmanager
async def client(stack: FaultStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        yield http


async def rollout_under_fault(
    stack: FaultStack,
    tokens: Tokens,
    targets: Sequence[TargetDatabase],
    fault: Fault,
    *,
    mid_version_on: EmbeddedPostgres,
    settled_before: int = 10,
    concurrency: int = 4,
) -> tuple[Rollout, Window | None]:
    """Roll the set out to ``targets`` and strike with ``fault`` once ``settled_before``
    targets have finished and a slow target of ``mid_version_on`` is inside version 2; returns
    once the run has finished and both watchers have stopped (the stream by itself, at
    ``end``)."""
    operator, viewer = tokens.headers("infra-operator"), tokens.headers("infra-viewer")
    async with client(stack) as http, client(stack) as polling, client(stack) as streaming:
        label, set_name = await register(http, operator, targets)
        run = await start_run(http, operator, set_name, label, concurrency)
        rollout = Rollout(
            stack,
            tokens,
            label,
            set_name,
            run,
            StatusPoller(polling, run["status_url"], viewer),
            StreamReader(streaming, run["stream_url"], viewer),
        )
        polled = asyncio.create_task(rollout.poller.run())
        streamed = asyncio.create_task(rollout.stream.run())
        try:
            await rollout.settled(settled_before)
            await wait_mid_version(mid_version_on, run["run_id"])
            window = await fault(rollout)
            rollout.final = await rollout.finished()
            rollout.seconds = time.monotonic() - rollout.started
        finally:
            rollout.poller.stop.set()
            await stop_task(polled, 30)
            await stop_task(streamed, 60)
    return rollout, window


def check_watchers(rollout: Rollout, window: Window | None = None) -> str:
    """The status poller got an answer to >= 99.9% of its requests (outside ``window``, the
    gateway's own restart) and anything else was a clear 503, never a 500 or a hang; the
    stream ended with the run, never went back, and its last state is the run's final one.
    Returns the report line's body."""
    poller, stream, final = rollout.poller, rollout.stream, rollout.final
    assert poller.rate(window) >= 99.9, poller.summary(window)
    assert poller.outcomes(window) <= {"ok", "503"}, poller.summary(window)
    assert stream.ended == final["status"], (stream.ended, stream.breaks)
    if window is None:  # only the gateway's own restart may break the stream
        assert stream.breaks == [] and len(stream.resumed_from) == 1, stream.breaks
    sse = stream.check()
    last = stream.progress()[-1].data
    assert (last["status"], last["counts"]) == (final["status"], final["counts"])
    counts = final["counts"]
    assert counts["pending"] == counts["running"] == 0, counts
    run = (
        f"targets={final['total']} run={rollout.seconds:.1f}s succeeded={counts['succeeded']} "
        f"up_to_date={counts['up_to_date']} failed={counts['failed']}"
    )
    parts = [run, poller.summary(window), sse]
    return " | ".join(parts + rollout.notes)
