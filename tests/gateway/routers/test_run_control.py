"""A fleet run's controls (``gateway.routers.run_control``) on a run held paused after its
canary: concurrency changes, a rollback refused while it runs, controls refused once it has
been terminated from outside. Real worker, Temporal and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from common.errors import Conflict, DependencyUnavailable
from gateway.routers.migrations import workflow_id_for
from gateway.routers.run_control import _closed_meanwhile, touched_targets
from models.fleet import FleetCounts, FleetProgress, FleetStatus
from models.run_state import TargetProgress, TargetState
from tests.conftest import TargetFactory, Tokens

FILES = {"V1__a.sql": "CREATE TABLE a (id int);", "U1__a.sql": "DROP TABLE a;"}


async def paused_run(
    api: httpx.AsyncClient, tokens: Tokens, make_target: TargetFactory, count: int = 3
) -> dict[str, Any]:
    """A run over ``count`` fresh targets, paused after a canary of one: the accepted run."""
    operator = tokens.headers("infra-operator")
    label = uuid.uuid4().hex[:8]
    set_name = f"ctl-{label}"
    answer = await api.post(
        "/api/v1/migration-sets", json={"name": set_name, "files": FILES}, headers=operator
    )
    assert answer.status_code == 201, answer.text
    for _ in range(count):
        target = await make_target()
        body = target.create_body(name=f"c-{uuid.uuid4().hex[:8]}", labels={"ctl": label})
        assert (await api.post("/api/v1/databases", json=body, headers=operator)).status_code == 201
    started = await api.post(
        "/api/v1/migrations",
        json={
            "set": set_name,
            "selector": {"labels": {"ctl": label}},
            "canary": 1,
            "canary_wait_for_resume": True,
        },
        headers=operator,
    )
    assert started.status_code == 202, started.text
    run: dict[str, Any] = started.json() | {"set": set_name}
    await until_status(api, tokens, run["status_url"], {"paused"})
    return run


async def until_status(
    api: httpx.AsyncClient, tokens: Tokens, url: str, statuses: set[str]
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for _ in range(600):
        answer = await api.get(url, params={"targets": "none"}, headers=tokens.headers())
        state = answer.json()
        if answer.status_code == 200 and state["status"] in statuses:
            return state
        await asyncio.sleep(0.1)
    raise AssertionError(f"the run stayed {state}")


def test_a_refused_signal_is_409_when_the_run_is_gone_else_503() -> None:
    gone = _closed_meanwhile(RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b""), "r1")
    assert isinstance(gone, Conflict)
    assert (gone.message, gone.details) == ("run r1 has finished", {"run_id": "r1"})
    away = _closed_meanwhile(RPCError("x" * 400, RPCStatusCode.UNAVAILABLE, b""), "r1")
    assert isinstance(away, DependencyUnavailable)
    assert away.details == {"dependency": "temporal", "cause": "x" * 300}


@pytest.mark.usefixtures("running_worker")
async def test_controls_of_a_paused_run_and_of_one_terminated_from_outside(
    api: httpx.AsyncClient,
    tokens: Tokens,
    make_target: TargetFactory,
    temporal_client: Client,
) -> None:
    run = await paused_run(api, tokens, make_target)
    url = run["status_url"]
    operator = tokens.headers("infra-operator")

    plain = await api.get(url, headers={**operator, "Accept-Encoding": "identity"})
    assert plain.status_code == 200
    assert "Content-Encoding" not in plain.headers
    assert plain.json()["status"] == "paused"
    zipped = await api.get(url, headers={**operator, "Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.json() == plain.json() | {"updated_at": zipped.json()["updated_at"]}

    changed = await api.patch(url, json={"concurrency": 7}, headers=operator)
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"concurrency": 7}
    viewer = await api.patch(url, json={"concurrency": 2}, headers=tokens.headers("infra-viewer"))
    assert viewer.status_code == 403
    assert viewer.json()["error"]["type"] == "forbidden"

    running = await api.post(f"{url}/rollback", json={"to_version": "0"}, headers=operator)
    assert running.status_code == 409, running.text
    error = running.json()["error"]
    assert error["type"] == "conflict"
    assert "still running; cancel it first" in error["message"]
    assert error["details"] == {"run_id": run["run_id"]}

    await temporal_client.get_workflow_handle(workflow_id_for(run["run_id"])).terminate(
        reason="test"
    )
    for _ in range(100):
        late = await api.patch(url, json={"concurrency": 3}, headers=operator)
        if late.status_code != 200:
            break
        await asyncio.sleep(0.1)
    assert late.status_code == 409, late.text
    assert late.json()["error"]["details"] == {"run_id": run["run_id"]}
    # Terminated through Temporal: listed as terminated, not as cancelled.
    for _ in range(100):
        listed = await api.get("/api/v1/migrations", params={"set": run["set"]}, headers=operator)
        if [r["status"] for r in listed.json()["items"]] == ["terminated"]:
            break
        await asyncio.sleep(0.1)
    assert [r["run_id"] for r in listed.json()["items"]] == [run["run_id"]]
    assert [r["status"] for r in listed.json()["items"]] == ["terminated"]
    cancelled = await api.get(
        "/api/v1/migrations", params={"set": run["set"], "status": "cancelled"}, headers=operator
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["items"] == []
    for control in ("pause", "resume", "cancel"):
        refused = await api.post(f"{url}/{control}", headers=operator)
        assert refused.status_code == 409, (control, refused.text)
        assert f"cannot be {control}d" in refused.json()["error"]["message"]


def legacy_progress(states: dict[str, TargetState]) -> FleetProgress:
    """The progress of a run from before compact state: every target in it."""
    now = datetime.now(UTC)
    return FleetProgress(
        run_id="legacy1",
        set_name="core",
        status=FleetStatus.COMPLETED,
        paused_reason=None,
        total=len(states),
        total_known=True,
        counts=FleetCounts(),
        concurrency=10,
        targets={key: TargetProgress(state=state) for key, state in states.items()},
        targets_complete=True,
        started_at=now,
        updated_at=now,
        throughput_per_minute=0.0,
        eta_seconds=None,
    )


def test_a_legacy_run_rolls_back_the_targets_it_succeeded_or_failed_on() -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    states = [
        TargetState.SUCCEEDED,
        TargetState.FAILED,
        TargetState.UP_TO_DATE,
        TargetState.PENDING,
    ]
    progress = legacy_progress({str(i): s for i, s in zip(ids, states, strict=True)})
    assert touched_targets(progress).database_ids == ids[:2]


def test_a_legacy_run_that_changed_nothing_has_nothing_to_roll_back() -> None:
    progress = legacy_progress({str(uuid.uuid4()): TargetState.UP_TO_DATE})
    with pytest.raises(Conflict) as caught:
        touched_targets(progress)
    assert (caught.value.message, caught.value.details) == (
        "run legacy1 changed no target",
        {"run_id": "legacy1"},
    )
