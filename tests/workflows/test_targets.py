"""TestConnectionWorkflow on a real Temporal server and worker; its history replays."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import asyncpg
import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from common.catalog.databases import DatabaseRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from models.databases import ConnectionTestInput, DatabaseCreate
from tests.conftest import TargetDatabase
from worker.registry import WORKFLOWS
from workflows.targets import TestConnectionWorkflow

HISTORIES = Path(__file__).parent / "histories"


@pytest.mark.usefixtures("running_worker")
async def test_connection_workflow_runs_and_replays(
    temporal_client: Client,
    settings: Settings,
    catalog_pool: asyncpg.Pool,
    target_database: TargetDatabase,
) -> None:
    repository = DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )
    body = target_database.create_body(name=f"wf-{uuid.uuid4().hex[:8]}")
    database = await repository.create(DatabaseCreate.model_validate(body))
    handle = await temporal_client.start_workflow(
        TestConnectionWorkflow.run,
        ConnectionTestInput(database_id=database.id),
        id=f"test-connection-{database.id}",
        task_queue=settings.temporal.task_queue,
    )
    result = await handle.result()
    assert result.ok is True
    assert result.database_id == database.id
    history = await handle.fetch_history()
    assert target_database.password not in history.to_json()
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
    if os.environ.get("TENANTFLOW_RECORD_HISTORIES") == "1":
        (HISTORIES / "test_connection.json").write_text(history.to_json())
