"""What a fleet run did to each of some targets, as their ledgers tell it (a compact run keeps
nothing per finished target)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, Field

from models.run_state import TargetState

# Targets per read: one page of a run's per-target view.
MAX_OUTCOME_TARGETS = 200


class RunOutcomesRequest(BaseModel):
    """Input of ``ReadRunOutcomesWorkflow``: ids only, never credentials."""

    run_id: str = Field(min_length=1, max_length=200, description="The fleet run's business id.")
    set_name: str = Field(description="The run's set: its ledger table is read.")
    database_ids: list[uuid.UUID] = Field(max_length=MAX_OUTCOME_TARGETS)


class RunOutcomes(BaseModel):
    """Per target: ``succeeded`` when its ledger holds a row of the run, ``up_to_date`` when it
    holds none (or there is no ledger), null when the target could not be read."""

    outcomes: dict[uuid.UUID, TargetState | None]
