"""SystemCheckWorkflow on a real Temporal server and worker, plus replay of committed histories.

To re-record the committed history after an intended change, run
``TENANTFLOW_RECORD_HISTORIES=1 pytest tests/workflows`` and commit the file with the change.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from common.settings import Settings
from models.system import SystemCheckInput
from worker.registry import WORKFLOWS
from workflows.system import SystemCheckWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def _run_check(client: Client, settings: Settings) -> WorkflowHistory:
    handle = await client.start_workflow(
        SystemCheckWorkflow.run,
        SystemCheckInput(requested_by="tests"),
        id=f"system-check-{uuid.uuid4().hex}",
        task_queue=settings.temporal.task_queue,
    )
    result = await handle.result()
    assert result.workflow_id == handle.id
    assert result.catalog.schema_version >= 1
    assert result.finished_at >= result.started_at
    return await handle.fetch_history()


@pytest.mark.usefixtures("running_worker")
async def test_system_check_runs_and_its_history_replays(
    temporal_client: Client, settings: Settings
) -> None:
    history = await _run_check(temporal_client, settings)
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / "system_check.json").write_text(history.to_json())


@pytest.mark.parametrize("path", sorted(HISTORIES.glob("*.json")), ids=lambda p: p.stem)
async def test_committed_histories_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())  # noqa: ASYNC240
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


def test_histories_are_committed() -> None:
    assert (HISTORIES / "system_check.json").exists()
    assert (HISTORIES / "test_connection.json").exists()
