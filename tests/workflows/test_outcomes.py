"""ReadRunOutcomesWorkflow on a real Temporal server and worker after a real fleet run; its
history is committed and replayed (tests/workflows/test_system.py); the gateway's
``read_outcomes`` goes through it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from common.errors import InvalidInput
from common.settings import Settings
from gateway.outcomes import read_outcomes
from models.outcomes import MAX_OUTCOME_TARGETS, RunOutcomesRequest
from models.run_state import TargetState
from tests.activities.test_outcomes import STEPS, Fleet
from tests.conftest import TargetFactory
from worker.registry import WORKFLOWS
from workflows.outcomes import ReadRunOutcomesWorkflow

pytestmark = pytest.mark.usefixtures("running_worker")

HISTORIES = Path(__file__).parent / "histories"


async def test_read_run_outcomes_workflow_answers_per_target_and_its_history_replays(
    catalog_pool: asyncpg.Pool,
    settings: Settings,
    temporal_client: Client,
    make_target: TargetFactory,
) -> None:
    fleet = Fleet(catalog_pool, settings, temporal_client)
    await fleet.sets.register(fleet.set_name, STEPS)
    shared = await make_target()
    changed = [await fleet.add(shared, s) for s in ("w_a", "w_b")]
    kept = await fleet.add(await make_target())
    await fleet.run([kept])  # up to date before the run
    run_id = await fleet.run([*changed, kept])
    missing = uuid.uuid4()

    handle = await temporal_client.start_workflow(
        ReadRunOutcomesWorkflow.run,
        RunOutcomesRequest(
            run_id=run_id, set_name=fleet.set_name, database_ids=[*changed, kept, missing]
        ),
        id=f"read-outcomes-{run_id}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal.task_queue,
    )
    answer = await handle.result()
    assert answer.outcomes == {
        changed[0]: TargetState.SUCCEEDED,
        changed[1]: TargetState.SUCCEEDED,
        kept: TargetState.UP_TO_DATE,
        missing: None,
    }

    history = await handle.fetch_history()
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / "read_run_outcomes.json").write_text(history.to_json())

    # The gateway's entry point: the same answer, in the order asked.
    through_gateway = await read_outcomes(
        temporal_client,
        settings,
        run_id=run_id,
        set_name=fleet.set_name,
        database_ids=[kept, changed[0], kept],
    )
    assert list(through_gateway.items()) == [
        (kept, TargetState.UP_TO_DATE),
        (changed[0], TargetState.SUCCEEDED),
    ]


async def test_read_outcomes_refuses_more_than_a_page(
    temporal_client: Client, settings: Settings
) -> None:
    too_many = [uuid.uuid4() for _ in range(MAX_OUTCOME_TARGETS + 1)]
    with pytest.raises(InvalidInput) as refused:
        await read_outcomes(
            temporal_client, settings, run_id="r", set_name="s", database_ids=too_many
        )
    assert refused.value.details == {"targets": 201, "limit": MAX_OUTCOME_TARGETS}
    assert (
        await read_outcomes(temporal_client, settings, run_id="r", set_name="s", database_ids=[])
        == {}
    )
