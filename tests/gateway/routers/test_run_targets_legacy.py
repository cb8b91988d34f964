"""``GET /api/v1/migrations/{id}/targets`` for a run from before compact state, whose progress
holds every target (``targets_complete``): pages in id order, filtered by state, named from the
real catalog. The progress is built here: no run of that kind can be started any more."""

from __future__ import annotations

import base64
import json
import uuid

import asyncpg
import pytest

from common.catalog.databases import DatabaseRepository
from common.crypto import CredentialCipher, KeyRing
from common.settings import Settings
from gateway.routers.run_targets import _whole_run_page
from models.databases import DatabaseCreate
from models.run_state import TargetState
from models.run_targets import TargetsFilter
from tests.gateway.routers.test_run_control import legacy_progress


def _at(cursor: str) -> str:
    value: dict[str, str] = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    return value["a"]


@pytest.fixture
async def repository(catalog_pool: asyncpg.Pool, settings: Settings) -> DatabaseRepository:
    return DatabaseRepository(
        catalog_pool, CredentialCipher(KeyRing.from_settings(settings.crypto))
    )


async def test_a_legacy_runs_targets_page_in_id_order_by_state(
    repository: DatabaseRepository,
) -> None:
    label = uuid.uuid4().hex[:8]
    names: dict[str, str] = {}
    for i in range(3):
        created = await repository.create(
            DatabaseCreate.model_validate(
                {
                    "name": f"legacy-{label}-{i}",
                    "host": "db.internal",
                    "database": "app",
                    "user": "app",
                    "password": "pw",
                }
            )
        )
        names[str(created.id)] = created.name
    gone = str(uuid.uuid4())  # a target deleted from the catalog since
    ids = sorted([*names, gone])
    states = dict(
        zip(
            ids,
            [
                TargetState.SUCCEEDED,
                TargetState.FAILED,
                TargetState.UP_TO_DATE,
                TargetState.SUCCEEDED,
            ],
            strict=True,
        )
    )
    progress = legacy_progress(states)

    first = await _whole_run_page(repository, progress, TargetsFilter.ALL, 3, None)
    assert [str(i.database_id) for i in first.items] == ids[:3]
    assert [i.name for i in first.items] == [names.get(k) for k in ids[:3]]
    assert first.complete is True and first.next_cursor is not None
    assert _at(first.next_cursor) == ids[2]
    rest = await _whole_run_page(repository, progress, TargetsFilter.ALL, 3, ids[2])
    assert [str(i.database_id) for i in rest.items] == ids[3:]
    assert rest.next_cursor is None

    failed = await _whole_run_page(repository, progress, TargetsFilter.FAILED, 10, None)
    assert [(str(i.database_id), i.state.value) for i in failed.items] == [(ids[1], "failed")]
    done = await _whole_run_page(repository, progress, TargetsFilter.DONE, 10, None)
    assert [str(i.database_id) for i in done.items] == [ids[0], ids[2], ids[3]]
    assert {i.state.value for i in done.items} == {"succeeded", "up_to_date"}
