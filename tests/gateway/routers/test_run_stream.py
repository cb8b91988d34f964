"""A live run's SSE stream (``gateway.routers.run_stream``) over real HTTP (uvicorn): a resumed
stream skips the state its client has, and a run terminated from outside ends the stream with
``terminated``. Real worker, Temporal and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.client import Client

from cli.stack import free_port
from common.settings import Settings
from gateway.app import create_app
from gateway.routers.migrations import workflow_id_for
from tests.conftest import TargetFactory, ThreadedServer, Tokens
from tests.gateway.routers.test_migrations_stream import _events
from tests.gateway.routers.test_run_control import paused_run

pytestmark = pytest.mark.usefixtures("running_worker")


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway on a real port: an endless stream cannot go through the in-process transport."""
    port = free_port()
    server = ThreadedServer(create_app(settings), port, lifespan="on")
    server.start()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    server.stop()


async def _first_event(http: httpx.AsyncClient, url: str, headers: dict[str, str]) -> str:
    """The id of the stream's first progress event (the stream is then left)."""
    async with http.stream("GET", url, headers=headers) as answer:
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if line.startswith("id: "):
                return line.removeprefix("id: ")
    raise AssertionError("no event")


async def test_a_resumed_stream_skips_what_its_client_has_and_ends_when_terminated(
    http: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory, temporal_client: Client
) -> None:
    run = await paused_run(http, tokens, make_target)
    stream_url = f"{run['status_url']}/stream?targets=none"
    viewer = tokens.headers("infra-viewer")
    seen = await _first_event(http, stream_url, viewer)

    lines: list[str] = []
    first_event_after: list[float] = []

    async def read() -> None:
        opened = time.monotonic()
        headers = {**viewer, "Last-Event-ID": seen}
        async with http.stream("GET", stream_url, headers=headers) as answer:
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                if line.startswith("event: ") and not first_event_after:
                    first_event_after.append(time.monotonic() - opened)
                lines.append(line)

    reader = asyncio.create_task(read())
    for _ in range(100):  # the state it already has is not sent again: the next tick is
        if first_event_after:
            break
        await asyncio.sleep(0.05)
    assert first_event_after and first_event_after[0] >= 0.9
    await temporal_client.get_workflow_handle(workflow_id_for(run["run_id"])).terminate(
        reason="test"
    )
    await asyncio.wait_for(reader, timeout=30)

    events = [b for b in _events("\n".join(lines)) if "event" in b]
    *progress, end = events
    assert progress and {e["event"] for e in progress} == {"progress"}
    assert end["event"] == "end"
    assert json.loads(end["data"]) == {"status": "terminated"}
    assert end["id"].endswith(".end")
    # targets=none: the light summary, counts without the per-target map.
    last = json.loads(progress[-1]["data"])
    assert "targets" not in last or not last["targets"]
    assert last["counts"]["succeeded"] == 1
