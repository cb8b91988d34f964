"""What watches a run while a fault hits it: a client polling its status every 100 ms, a client
reading its SSE stream (reconnecting with ``Last-Event-ID`` when it breaks), and the report
line each fault test prints and writes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.faults.stack import ROOT

POLL_INTERVAL = 0.1
# A request that takes longer than this is a hang, not an answer.
REQUEST_TIMEOUT = 15.0


@dataclass
class Sample:
    """One status request: when it started and ended, and what came back."""

    started: float
    ended: float
    outcome: str  # "ok", "503", another status code, or the exception's class


@dataclass
class Window:
    """A span of time (monotonic seconds); ``end`` is None while it is open."""

    start: float
    end: float | None = None

    def covers(self, sample: Sample) -> bool:
        """Whether ``sample`` was in flight at any moment of the window."""
        return sample.ended >= self.start and (self.end is None or sample.started <= self.end)


@dataclass
class StatusPoller:
    """``GET`` the run's status every 100 ms, one request at a time, until stopped."""

    http: httpx.AsyncClient
    url: str
    headers: dict[str, str]
    samples: list[Sample] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                response = await self.http.get(
                    self.url, headers=self.headers, timeout=REQUEST_TIMEOUT
                )
                outcome = "ok" if response.status_code == 200 else str(response.status_code)
                if response.status_code == 200:
                    self.last = response.json()
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            ended = time.monotonic()
            self.samples.append(Sample(started, ended, outcome))
            await asyncio.sleep(max(0.0, started + POLL_INTERVAL - ended))

    def first_ok_after(self, moment: float) -> float | None:
        after = (s.ended for s in self.samples if s.started > moment and s.outcome == "ok")
        return next(after, None)

    def summary(self, excluded: Window | None = None) -> str:
        """``requests=N ok=N (P%) 503=N other=N slowest=Ns``, leaving out requests that began
        in flight during ``excluded`` (the gateway's own restart), which are counted apart."""
        kept = [s for s in self.samples if excluded is None or not excluded.covers(s)]
        ok = sum(1 for s in kept if s.outcome == "ok")
        unavailable = sum(1 for s in kept if s.outcome == "503")
        slowest = max((s.ended - s.started for s in kept), default=0.0)
        others = sorted({s.outcome for s in kept} - {"ok", "503"})
        line = (
            f"status requests={len(kept)} ok={ok} ({self.rate(excluded):.2f}%) "
            f"503={unavailable} other={len(kept) - ok - unavailable}"
            + (f" ({','.join(others)})" if others else "")
            + f" slowest={slowest:.2f}s"
        )
        if excluded is not None and excluded.end is not None:
            inside = [s for s in self.samples if excluded.covers(s)]
            line += (
                f"; restart window {excluded.end - excluded.start:.1f}s: "
                f"requests={len(inside)} refused={sum(1 for s in inside if s.outcome != 'ok')}"
            )
        return line

    def rate(self, excluded: Window | None = None) -> float:
        kept = [s for s in self.samples if excluded is None or not excluded.covers(s)]
        return 100.0 * sum(1 for s in kept if s.outcome == "ok") / max(len(kept), 1)

    def outcomes(self, excluded: Window | None = None) -> set[str]:
        return {s.outcome for s in self.samples if excluded is None or not excluded.covers(s)}


@dataclass
class Event:
    kind: str
    id: str | None
    data: Any
    connection: int


@dataclass
class StreamReader:
    """Reads the run's SSE stream until ``end``; when the connection breaks it reconnects
    (every 0.5 s while refused) with ``Last-Event-ID``, as ``EventSource`` does."""

    http: httpx.AsyncClient
    url: str
    headers: dict[str, str]
    events: list[Event] = field(default_factory=list)
    # The Last-Event-ID sent with each connection that answered 200 (None the first time).
    resumed_from: list[str | None] = field(default_factory=list)
    breaks: list[str] = field(default_factory=list)
    ended: str | None = None
    last_id: str | None = None

    async def run(self) -> None:
        while self.ended is None:
            headers = dict(self.headers)
            if self.last_id is not None:
                headers["Last-Event-ID"] = self.last_id
            try:
                timeout = httpx.Timeout(REQUEST_TIMEOUT, read=60)
                async with self.http.stream(
                    "GET", self.url, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code == 204:
                        return
                    if response.status_code != 200:
                        self.breaks.append(str(response.status_code))
                    else:
                        self.resumed_from.append(self.last_id)
                        await self._read(response)
            except httpx.HTTPError as exc:
                self.breaks.append(type(exc).__name__)
            if self.ended is None:
                await asyncio.sleep(0.5)

    async def _read(self, response: httpx.Response) -> None:
        kind, data, event_id = "message", list[str](), None
        async for line in response.aiter_lines():
            if line == "":
                if event_id is not None:
                    self.last_id = event_id
                if data:
                    payload = json.loads("\n".join(data))
                    self.events.append(Event(kind, event_id, payload, len(self.resumed_from)))
                    if kind == "end":
                        self.ended = payload["status"]
                        return
                kind, data, event_id = "message", [], None
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value

    def progress(self) -> list[Event]:
        return [e for e in self.events if e.kind == "progress"]

    def check(self) -> str:
        """Assert the stream's states never went back (settled targets, the id's prefix,
        across reconnects too) and return ``sse events=N reconnects=N``."""
        settled = [int(str(e.id).split("-")[0]) for e in self.progress()]
        assert settled == sorted(settled), f"the stream went back: {settled}"
        for event in self.progress():
            counts = event.data["counts"]
            done = counts["succeeded"] + counts["failed"] + counts["up_to_date"]
            assert str(event.id).startswith(f"{done}-"), (event.id, counts)
        return f"sse events={len(self.events)} reconnects={len(self.resumed_from) - 1}"


async def stop_task(task: asyncio.Task[None], within: float = 30.0) -> None:
    """Wait for ``task`` to finish by itself, cancel it past ``within``."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), within)
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def report(fault: str, line: str) -> str:
    """Print the fault's line (captured output) and keep it in the results file
    (``$TENANTFLOW_FAULT_REPORT``, else ``.tenantflow/faults.txt``), one line per fault."""
    text = f"fault={fault} {line}"
    sys.stdout.write(text + "\n")
    path = Path(os.environ.get("TENANTFLOW_FAULT_REPORT") or ROOT / ".tenantflow" / "faults.txt")
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = []
    if path.exists():
        kept = [x for x in path.read_text().splitlines() if not x.startswith(f"fault={fault} ")]
    path.write_text("\n".join([*kept, text]) + "\n")
    return text
