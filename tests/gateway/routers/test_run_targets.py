"""``GET /api/v1/migrations/{id}/targets``: every target of a compact run, in one state, page by
page, though the run itself keeps only a bounded part of them (in flight, failed, recent)."""

from __future__ import annotations

import asyncio
import base64
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
from models.run_state import RECENT_KEPT
from tests.conftest import TargetFactory, Tokens

pytestmark = pytest.mark.usefixtures("running_worker")

# More targets than the run's recent ring, so some finished ones are only "done" to the run.
COUNT = RECENT_KEPT + 30
FAILING = set(range(0, COUNT, 11))  # a conflicting table: V1 fails there
UP_TO_DATE = set(range(3, COUNT, 5)) - FAILING  # migrated by an earlier run


def _repository(catalog_pool: asyncpg.Pool, settings: Settings) -> DatabaseRepository:
    return DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )


async def _schema_targets(
    make_target: TargetFactory,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    count: int,
    conflicting: set[int] = frozenset(),  # type: ignore[assignment]
) -> tuple[str, list[str], dict[str, str]]:
    """``count`` schema targets in one database, labelled alike: the label, their ids in name
    order and their names by id."""
    target = await make_target()
    label = uuid.uuid4().hex[:10]
    conn = await target.connect()
    try:
        for i in range(count):
            await conn.execute(f"CREATE SCHEMA s{i}")
            if i in conflicting:
                await conn.execute(f"CREATE TABLE s{i}.t (id int)")
    finally:
        await conn.close()
    repository = _repository(catalog_pool, settings)
    ids: list[str] = []
    names: dict[str, str] = {}
    for i in range(count):
        body = target.create_body(name=f"rt-{label}-{i:04d}", schema=f"s{i}", labels={"rt": label})
        created = await repository.create(DatabaseCreate.model_validate(body))
        ids.append(str(created.id))
        names[str(created.id)] = created.name
    return label, ids, names


async def _register(api: httpx.AsyncClient, tokens: Tokens, label: str) -> str:
    set_name = f"rt-{label}"
    registered = await api.post(
        "/api/v1/migration-sets",
        json={"name": set_name, "files": {"V1__t.sql": "CREATE TABLE t (id int);"}},
        headers=tokens.headers("infra-operator"),
    )
    assert registered.status_code == 201, registered.text
    return set_name


async def _run(
    api: httpx.AsyncClient, tokens: Tokens, set_name: str, selector: dict[str, Any], **options: Any
) -> str:
    started = await api.post(
        "/api/v1/migrations",
        json={"set": set_name, "selector": selector, **options},
        headers=tokens.headers("infra-operator"),
    )
    assert started.status_code == 202, started.text
    url: str = started.json()["status_url"]
    return url


async def _until(
    api: httpx.AsyncClient, tokens: Tokens, url: str, statuses: set[str]
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for _ in range(1200):
        answer = await api.get(
            url, params={"targets": "none"}, headers=tokens.headers("infra-viewer")
        )
        state = answer.json()
        if answer.status_code == 200 and state["status"] in statuses:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"the run stayed {state}")


async def _walk(
    api: httpx.AsyncClient, tokens: Tokens, url: str, state: str, limit: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page of ``state``: all items, and the pages themselves."""
    items: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(200):
        params: dict[str, Any] = {"state": state, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        answer = await api.get(
            f"{url}/targets", params=params, headers=tokens.headers("infra-viewer")
        )
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= limit
        assert page["state"] == state
        pages.append(page)
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items, pages
    raise AssertionError("the pages never ended")


async def test_every_state_of_a_finished_compact_run_pages_exactly(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    label, ids, names = await _schema_targets(make_target, catalog_pool, settings, COUNT, FAILING)
    set_name = await _register(api, tokens, label)
    earlier = await _run(
        api, tokens, set_name, {"database_ids": [ids[i] for i in sorted(UP_TO_DATE)]}
    )
    assert (await _until(api, tokens, earlier, {"completed"}))["counts"]["succeeded"] == len(
        UP_TO_DATE
    )
    url = await _run(api, tokens, set_name, {"labels": {"rt": label}})
    final = await _until(api, tokens, url, {"completed"})
    failed_ids = {ids[i] for i in FAILING}
    up_to_date_ids = {ids[i] for i in UP_TO_DATE}
    succeeded_ids = set(ids) - failed_ids - up_to_date_ids
    assert final["counts"] | {"pending": 0} == {
        "pending": 0,
        "running": 0,
        "failed": len(failed_ids),
        "up_to_date": len(up_to_date_ids),
        "succeeded": len(succeeded_ids),
    }
    # The run's own progress holds only a bounded part.
    whole = (await api.get(url, headers=tokens.headers("infra-viewer"))).json()
    assert whole["targets_complete"] is False
    assert len(whole["targets"]) < COUNT

    failed, _ = await _walk(api, tokens, url, "failed", 100)
    assert {i["database_id"] for i in failed} == failed_ids
    assert all(i["state"] == "failed" and "already exists" in i["error"] for i in failed)
    assert all(i["name"] == names[i["database_id"]] for i in failed)

    done, pages = await _walk(api, tokens, url, "done", 7)
    done_ids = [i["database_id"] for i in done]
    assert len(done_ids) == len(set(done_ids))  # no duplicates
    assert set(done_ids) == succeeded_ids | up_to_date_ids
    assert done_ids == [key for key in ids if key in set(done_ids)]  # the selector's order
    assert all(len(p["items"]) == 7 for p in pages[:-1])
    assert {i["state"] for i in done} == {"done", "succeeded", "up_to_date"}
    assert all(p["complete"] and p["failed_not_listed"] == 0 for p in pages)

    everything, _ = await _walk(api, tokens, url, "all", 50)
    assert [i["database_id"] for i in everything] == ids
    assert {i["database_id"] for i in everything if i["state"] == "failed"} == failed_ids

    assert (await _walk(api, tokens, url, "pending", 10))[0] == []
    assert (await _walk(api, tokens, url, "running", 10))[0] == []

    # Told apart by the targets' ledgers (gateway.outcomes) where the run no longer knows.
    succeeded, _ = await _walk(api, tokens, url, "succeeded", 20)
    assert [i["database_id"] for i in succeeded] == [k for k in ids if k in succeeded_ids]
    assert {i["state"] for i in succeeded} == {"succeeded"}
    up_to_date, _ = await _walk(api, tokens, url, "up_to_date", 20)
    assert [i["database_id"] for i in up_to_date] == [k for k in ids if k in up_to_date_ids]


async def test_a_paused_run_lists_exactly_the_targets_not_started_as_pending(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    label, ids, _ = await _schema_targets(make_target, catalog_pool, settings, 20)
    set_name = await _register(api, tokens, label)
    url = await _run(
        api,
        tokens,
        set_name,
        {"labels": {"rt": label}},
        canary=4,
        canary_wait_for_resume=True,
        batch_size=2,
    )
    paused = await _until(api, tokens, url, {"paused"})
    progress = (await api.get(url, headers=tokens.headers("infra-viewer"))).json()
    started = {k for k, t in progress["targets"].items() if t["state"] != "pending"}
    assert len(started) == paused["counts"]["succeeded"] == 4
    pending, pages = await _walk(api, tokens, url, "pending", 5)
    assert [i["database_id"] for i in pending] == [k for k in ids if k not in started]
    assert {i["state"] for i in pending} == {"pending"}
    assert len(pages) == 4
    assert (await _walk(api, tokens, url, "running", 5))[0] == []
    done, _ = await _walk(api, tokens, url, "done", 3)
    assert {i["database_id"] for i in done} == started
    everything, _ = await _walk(api, tokens, url, "all", 6)
    assert [i["database_id"] for i in everything] == ids

    cancelled = await api.post(f"{url}/cancel", headers=tokens.headers("infra-operator"))
    assert cancelled.status_code in (200, 202), cancelled.text
    await _until(api, tokens, url, {"cancelled", "completed"})


async def test_targets_the_run_has_not_resolved_yet_are_pending_in_the_selectors_order(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    # The run resolves its selector 500 targets at a time: paused after a canary of 2, it has
    # queued 498, and the 20 after its position are not resolved yet.
    label, ids, _ = await _schema_targets(make_target, catalog_pool, settings, 520)
    set_name = await _register(api, tokens, label)
    url = await _run(
        api, tokens, set_name, {"labels": {"rt": label}}, canary=2, canary_wait_for_resume=True
    )
    await _until(api, tokens, url, {"paused"})
    progress = (await api.get(url, headers=tokens.headers("infra-viewer"))).json()
    assert (progress["total_known"], len(progress["queued"])) == (False, 498)
    assert progress["position"] is not None

    pending, _ = await _walk(api, tokens, url, "pending", 100)
    assert [i["database_id"] for i in pending] == ids[2:]
    everything, _ = await _walk(api, tokens, url, "all", 200)
    assert [i["database_id"] for i in everything] == ids
    assert [i["state"] for i in everything] == ["succeeded"] * 2 + ["pending"] * 518
    done, _ = await _walk(api, tokens, url, "done", 100)
    assert [i["database_id"] for i in done] == ids[:2]

    cancelled = await api.post(f"{url}/cancel", headers=tokens.headers("infra-operator"))
    assert cancelled.status_code == 202, cancelled.text
    await _until(api, tokens, url, {"cancelled"})


async def test_bad_cursor_unknown_run_and_who_may_read(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    label, ids, _ = await _schema_targets(make_target, catalog_pool, settings, 3)
    set_name = await _register(api, tokens, label)
    url = await _run(api, tokens, set_name, {"database_ids": ids})
    await _until(api, tokens, url, {"completed"})
    viewer = tokens.headers("infra-viewer")

    first = await api.get(f"{url}/targets", params={"state": "all", "limit": 2}, headers=viewer)
    assert first.status_code == 200, first.text
    assert [i["database_id"] for i in first.json()["items"]] == ids[:2]
    cursor = first.json()["next_cursor"]
    rest = await api.get(
        f"{url}/targets", params={"state": "all", "limit": 2, "cursor": cursor}, headers=viewer
    )
    assert [i["database_id"] for i in rest.json()["items"]] == ids[2:]
    assert rest.json()["next_cursor"] is None

    for bad in ("not-a-cursor!", "eyJ4IjoxfQ", cursor + "x"):
        answer = await api.get(
            f"{url}/targets", params={"state": "all", "cursor": bad}, headers=viewer
        )
        assert answer.status_code == 400, (bad, answer.text)
        assert answer.json()["error"]["type"] == "invalid_input"
    # Well-formed cursors of ours whose position is not one of the run's explicit ids.
    for position in ("x", "99"):
        raw = json.dumps({"s": "all", "a": position}, separators=(",", ":")).encode()
        crafted = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        answer = await api.get(
            f"{url}/targets", params={"state": "all", "cursor": crafted}, headers=viewer
        )
        assert answer.status_code == 400, (position, answer.text)
        assert answer.json()["error"]["message"] == "invalid cursor"
    # A cursor of another state's listing is refused too.
    other = await api.get(
        f"{url}/targets", params={"state": "done", "cursor": cursor}, headers=viewer
    )
    assert other.status_code == 400
    assert (
        await api.get(f"{url}/targets", params={"state": "nope"}, headers=viewer)
    ).status_code == 422
    assert (
        await api.get(f"{url}/targets", params={"limit": 501}, headers=viewer)
    ).status_code == 422

    unknown = await api.get("/api/v1/migrations/0123456789ab/targets", headers=viewer)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["type"] == "not_found"
    assert (await api.get(f"{url}/targets")).status_code == 401


async def test_a_paused_run_over_explicit_ids_pages_its_pending_targets_in_the_ids_order(
    api: httpx.AsyncClient,
    tokens: Tokens,
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    make_target: TargetFactory,
) -> None:
    label, ids, _ = await _schema_targets(make_target, catalog_pool, settings, 8)
    set_name = await _register(api, tokens, label)
    chosen = list(reversed(ids))  # the selector's own order, not the names'
    url = await _run(
        api,
        tokens,
        set_name,
        {"database_ids": chosen},
        canary=1,
        canary_wait_for_resume=True,
    )
    await _until(api, tokens, url, {"paused"})
    pending, pages = await _walk(api, tokens, url, "pending", 3)
    assert [i["database_id"] for i in pending] == chosen[1:]
    assert len(pages) == 3
    everything, _ = await _walk(api, tokens, url, "all", 3)
    assert [i["database_id"] for i in everything] == chosen
    cancelled = await api.post(f"{url}/cancel", headers=tokens.headers("infra-operator"))
    assert cancelled.status_code == 202, cancelled.text
    await _until(api, tokens, url, {"cancelled"})
