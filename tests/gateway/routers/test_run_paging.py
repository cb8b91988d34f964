"""``GET /api/v1/migrations/{id}?limit=&cursor=``: a run's targets page by page (with names), as
the dashboard shows runs of 100,000 targets; ``/stream?targets=none`` streams counts only."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from common.catalog.databases import DatabaseRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.databases import DatabaseCreate
from tests.conftest import TargetFactory, Tokens

pytestmark = pytest.mark.usefixtures("running_worker")

SCHEMAS = ["a1", "a2", "a3", "a4", "a5"]
CONFLICTING = ["a2", "a4"]


async def _finished_run(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> tuple[str, dict[str, str]]:
    """A finished run over five schema targets, two of which fail; its url and names by id."""
    target = await make_target()
    conn = await target.connect()
    try:
        for schema in SCHEMAS:
            await conn.execute(f"CREATE SCHEMA {schema}")
        for schema in CONFLICTING:
            await conn.execute(f"CREATE TABLE {schema}.t (id int)")
    finally:
        await conn.close()
    label = uuid.uuid4().hex[:10]
    repository = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    names: dict[str, str] = {}
    for schema in SCHEMAS:
        body = target.create_body(name=f"p-{label}-{schema}", schema=schema, labels={"p": label})
        created = await repository.create(DatabaseCreate.model_validate(body))
        names[str(created.id)] = created.name
    operator = tokens.headers("infra-operator")
    registered = await api.post(
        "/api/v1/migration-sets",
        json={"name": f"paging-{label}", "files": {"V1__t.sql": "CREATE TABLE t (id int);"}},
        headers=operator,
    )
    assert registered.status_code == 201, registered.text
    started = await api.post(
        "/api/v1/migrations",
        json={"set": f"paging-{label}", "selector": {"labels": {"p": label}}},
        headers=operator,
    )
    assert started.status_code == 202, started.text
    url: str = started.json()["status_url"]
    for _ in range(600):
        state = (await api.get(url, params={"targets": "none"}, headers=operator)).json()
        if state["status"] == "completed":
            break
        await asyncio.sleep(0.1)
    assert state["status"] == "completed"
    return url, names


async def test_targets_page_by_page_with_names_and_a_state_filter(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    url, names = await _finished_run(api, tokens, catalog_pool, settings, make_target)
    viewer = tokens.headers("infra-viewer")

    async def page(**params: Any) -> dict[str, Any]:
        answer = await api.get(url, params=params, headers=viewer)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    seen: list[str] = []
    cursor = None
    for expected in (2, 2, 1):
        body = await page(limit=2, **({"cursor": cursor} if cursor else {}))
        assert len(body["targets"]) == expected
        assert body["target_names"] == {key: names[key] for key in body["targets"]}
        assert (body["total"], body["counts"]["failed"]) == (5, 2)
        seen += list(body["targets"])
        cursor = body["next_cursor"]
    assert cursor is None
    assert seen == sorted(names)

    failed = await page(targets="failed", limit=10)
    assert sorted(failed["target_names"].values()) == sorted(
        name for name in names.values() if name.rsplit("-", 1)[1] in CONFLICTING
    )
    assert all("already exists" in t["error"] for t in failed["targets"].values())
    assert failed["next_cursor"] is None
    none = await page(targets="none", limit=10)
    assert (none["targets"], none["next_cursor"]) == ({}, None)

    # Without limit, the answer is what it always was: every target, no paging fields.
    whole = await page()
    assert sorted(whole["targets"]) == sorted(names)
    assert "next_cursor" not in whole and "target_names" not in whole
    refused: list[dict[str, str | int]] = [
        {"limit": 0},
        {"limit": 1001},
        {"cursor": "x" * 65, "limit": 1},
    ]
    for bad in refused:
        assert (await api.get(url, params=bad, headers=viewer)).status_code == 422

    # The light stream: counts and status, no per-target map.
    stream = await api.get(f"{url}/stream", params={"targets": "none"}, headers=viewer)
    events = [
        (block.split("\n")[0].removeprefix("event: "), block.split("\n")[1].removeprefix("data: "))
        for block in stream.text.replace("\r\n", "\n").strip().split("\n\n")
        if block.startswith("event:")
    ]
    assert [kind for kind, _ in events] == ["progress", "end"]
    progress = json.loads(events[0][1])
    assert (progress["targets"], progress["total"]) == ({}, 5)
    assert (
        await api.get(f"{url}/stream", params={"targets": "failed"}, headers=viewer)
    ).status_code == 422
