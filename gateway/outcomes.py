"""What a fleet run did to each of some targets, read from their ledgers by a worker.

A compact run keeps nothing per finished target; its per-target view tells a target it
changed (``succeeded``: the ledger has rows with the run's id) from one it left as it was
(``up_to_date``) by reading the ledgers of one page of targets.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from temporalio.client import Client

from common.errors import InvalidInput
from common.settings import Settings
from gateway.runs import run_and_wait
from models.outcomes import MAX_OUTCOME_TARGETS, RunOutcomesRequest
from models.run_state import TargetState
from workflows.outcomes import ReadRunOutcomesWorkflow

READ_WAIT_SECONDS = 30.0


async def read_outcomes(
    temporal: Client,
    settings: Settings,
    *,
    run_id: str,
    set_name: str,
    database_ids: Sequence[uuid.UUID],
) -> dict[uuid.UUID, TargetState | None]:
    """For each target: ``SUCCEEDED`` when its ledger (of ``set_name``'s table) holds a row of
    ``run_id``, ``UP_TO_DATE`` when it holds none, ``None`` when it could not be read."""
    ids = list(dict.fromkeys(database_ids))
    if not ids:
        return {}
    if len(ids) > MAX_OUTCOME_TARGETS:
        raise InvalidInput(
            f"at most {MAX_OUTCOME_TARGETS} targets per outcome read",
            details={"targets": len(ids), "limit": MAX_OUTCOME_TARGETS},
        )
    answer = await run_and_wait(
        temporal,
        ReadRunOutcomesWorkflow.run,
        RunOutcomesRequest(run_id=run_id, set_name=set_name, database_ids=ids),
        workflow_id=f"read-outcomes-{run_id}-{uuid.uuid4().hex[:8]}",
        task_queue=settings.temporal.task_queue,
        # The activity gives up on slow targets after 20 s (activities.outcomes).
        wait_seconds=max(settings.gateway.system_check_timeout_seconds, READ_WAIT_SECONDS),
        what="read of the run's outcomes",
    )
    return {database_id: answer.outcomes.get(database_id) for database_id in ids}
