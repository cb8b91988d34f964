"""The run's SSE stream (``gateway.routers.run_stream``): event ids, ``Last-Event-ID`` resume
and 204 once the client has seen the end; and the status's ``Age``. Real worker, Temporal and
PostgreSQL; the finished run's stream is read whole."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx

from gateway.routers.run_stream import END_SUFFIX, sse_event
from tests.conftest import TargetFactory, Tokens

FILES = {"V1__a.sql": "CREATE TABLE a (id int);", "V2__b.sql": "CREATE TABLE b (id int);"}


def _events(text: str) -> list[dict[str, str]]:
    """The stream's blocks as field -> value (comments and retry-only blocks kept too)."""
    blocks = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        blocks.append(fields)
    return blocks


async def _finished_run(api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory) -> str:
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    set_name = f"stream-{label}"
    answer = await api.post(
        "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=operator
    )
    assert answer.status_code == 201, answer.text
    for _ in range(2):
        target = await make_target()
        body = target.create_body(name=f"s-{uuid.uuid4().hex[:8]}", labels={"stream": label})
        assert (await api.post("/api/v1/databases", json=body, headers=operator)).status_code == 201
    started = await api.post(
        "/api/v1/migrations",
        json={"set": set_name, "selector": {"labels": {"stream": label}}},
        headers=operator,
    )
    assert started.status_code == 202, started.text
    url: str = started.json()["status_url"]
    for _ in range(600):
        state: dict[str, Any] = (await api.get(url, headers=operator)).json()
        if state.get("status") == "completed":
            return url
        await asyncio.sleep(0.1)
    raise AssertionError(f"the run did not finish: {state}")


def test_an_event_is_event_then_data_then_id() -> None:
    assert sse_event("progress", '{"a": 1}', "3-abc") == (
        b'event: progress\r\ndata: {"a": 1}\r\nid: 3-abc\r\n\r\n'
    )
    assert sse_event("end", "x\ny", "1") == b"event: end\r\ndata: x\r\ndata: y\r\nid: 1\r\n\r\n"


async def test_the_stream_has_ids_and_resumes_from_last_event_id(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    url = await _finished_run(api, tokens, make_target)
    viewer = tokens.headers("infra-viewer")

    whole = await api.get(f"{url}/stream", headers=viewer)
    assert whole.status_code == 200
    blocks = _events(whole.text)
    assert blocks[0] == {"retry": "1000"}  # an EventSource comes back after 1 s
    progress, end = [b for b in blocks if "event" in b]
    assert progress["event"] == "progress" and end["event"] == "end"
    assert json.loads(end["data"]) == {"status": "completed"}
    state = json.loads(progress["data"])
    assert progress["id"].startswith(f"{state['counts']['succeeded']}-")
    assert end["id"] == progress["id"] + END_SUFFIX

    # A client that saw the final state gets only the end; one that saw an older state gets
    # the final state first; one that saw the end is told to stop (204).
    resumed = _events(
        (await api.get(f"{url}/stream", headers=viewer | {"Last-Event-ID": progress["id"]})).text
    )
    assert [b.get("event") for b in resumed if "event" in b] == ["end"]
    older = _events(
        (await api.get(f"{url}/stream", headers=viewer | {"Last-Event-ID": "0-0"})).text
    )
    assert [b.get("event") for b in older if "event" in b] == ["progress", "end"]
    done = await api.get(f"{url}/stream", headers=viewer | {"Last-Event-ID": end["id"]})
    assert done.status_code == 204

    too_long = await api.get(f"{url}/stream", headers=viewer | {"Last-Event-ID": "x" * 200})
    assert too_long.status_code == 422


async def test_the_status_says_how_old_it_is(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory
) -> None:
    url = await _finished_run(api, tokens, make_target)
    answer = await api.get(url, headers=tokens.headers("infra-viewer"))
    assert answer.status_code == 200
    assert int(answer.headers["age"]) >= 0
