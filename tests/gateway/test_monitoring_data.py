"""What ``gateway.monitoring_data`` reads for the monitoring summary, on the real gateway,
Temporal and PostgreSQL: limits of 0 leave their parts empty, a run no worker answers for is
listed with its progress error, and a catalog that does not answer is a 503."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
from temporalio.client import Client

from cli.stack import EmbeddedPostgres
from common.errors import DependencyUnavailable
from common.settings import MonitoringSettings, Settings, TemporalSettings
from gateway.app import create_app
from gateway.monitoring_data import health_totals
from gateway.routers.migrations import workflow_id_for
from tests.conftest import TargetDatabase, Tokens, serve

SUMMARY = "/api/v1/monitoring/summary"


def _settings(settings: Settings, **monitoring: Any) -> Settings:
    return settings.model_copy(
        update={"monitoring": MonitoringSettings(snapshot_seconds=0, **monitoring)}
    )


@pytest.mark.usefixtures("running_worker")
async def test_limits_of_zero_leave_active_runs_and_the_sample_empty(
    settings: Settings, tokens: Tokens
) -> None:
    app = create_app(_settings(settings, max_active_runs=0, sampled_runs=0))
    async for api in serve(app):
        answer = await api.get(SUMMARY, headers=tokens.headers("infra-viewer"))
        assert answer.status_code == 200, answer.text
        summary = answer.json()
        assert (summary["active_runs"], summary["active_runs_truncated"]) == ([], False)
        assert summary["targets"]["sampled_runs"] == 0
        assert summary["targets"]["failure_rate"] is None
        assert summary["target_migration_time"] == {"samples": 0, "p50_ms": None, "p95_ms": None}
        assert app.state.monitoring.closed_runs.reads == 0


async def test_an_active_run_no_worker_answers_for_is_listed_with_its_error(
    settings: Settings,
    tokens: Tokens,
    target_database: TargetDatabase,
    temporal_client: Client,
) -> None:
    # A gateway whose task queue no worker polls: the run starts but nobody runs or answers it.
    unpolled = TemporalSettings.model_validate(
        {**settings.temporal.model_dump(), "task_queue": f"nobody-{uuid.uuid4().hex[:8]}"}
    )
    alone = _settings(settings).model_copy(update={"temporal": unpolled})
    operator = tokens.headers("infra-operator")
    async for api in serve(create_app(alone)):
        set_name = f"mon-{uuid.uuid4().hex[:8]}"
        registered = await api.post(
            "/api/v1/migration-sets",
            json={"name": set_name, "files": {"V1__a.sql": "SELECT 1;"}},
            headers=operator,
        )
        assert registered.status_code == 201, registered.text
        created = await api.post(
            "/api/v1/databases",
            json=target_database.create_body(name=f"m-{uuid.uuid4().hex[:8]}"),
            headers=operator,
        )
        assert created.status_code == 201, created.text
        started = await api.post(
            "/api/v1/migrations",
            json={"set": set_name, "selector": {"database_ids": [created.json()["id"]]}},
            headers=operator,
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["run_id"]
        try:
            run: dict[str, Any] = {}
            # Another gateway: the one that started the run knows its accepted state already.
            async for other in serve(create_app(_settings(settings))):
                for _ in range(100):  # visibility lists the new run a moment later
                    summary = await other.get(SUMMARY, headers=tokens.headers("infra-viewer"))
                    assert summary.status_code == 200, summary.text
                    active = summary.json()["active_runs"]
                    run = next((r for r in active if r["run_id"] == run_id), {})
                    if run:
                        break
                    await asyncio.sleep(0.1)
            assert run["set_name"] == set_name
            assert run["progress_error"], run
            assert run["counts"] is None and run["total"] is None
            # Its targets page needs the run's progress, which no worker answers for either.
            targets = await api.get(
                f"/api/v1/migrations/{run_id}/targets",
                params={"state": "pending"},
                headers=tokens.headers("infra-viewer"),
            )
            assert targets.status_code == 503, targets.text
            assert targets.json()["error"]["type"] == "dependency_unavailable"
            assert targets.json()["error"]["message"].endswith("could not be read")
        finally:
            await temporal_client.get_workflow_handle(workflow_id_for(run_id)).terminate(
                reason="test over"
            )


async def test_a_catalog_that_does_not_answer_is_a_503(postgres: EmbeddedPostgres) -> None:
    pool = await asyncpg.create_pool(postgres.dsn(), min_size=1, max_size=1)
    await pool.close()
    with pytest.raises(DependencyUnavailable) as caught:
        await health_totals(pool, {})
    assert caught.value.message == "the catalog did not answer"
    assert caught.value.details == {"dependency": "catalog", "cause": "InterfaceError"}
