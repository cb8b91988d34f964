"""Set assignments on the real catalog: put/replace, pinned versions checked, label matching."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from common.catalog.assignments import AssignmentRepository
from common.catalog.migration_sets import MigrationSetRepository
from common.errors import InvalidInput, NotFound
from common.migrations.loader import parse_files
from models.assignments import AssignedSet, AssignmentSpec

FILES = {"V1__a.sql": "CREATE TABLE a (id int);", "V2__b.sql": "CREATE TABLE b (id int);"}


@pytest.fixture
async def sets(catalog_pool: asyncpg.Pool) -> AsyncIterator[list[str]]:
    """Two fresh registered sets; their assignments are removed afterwards so a catch-all
    selector never leaks into other tests."""
    names = sorted(f"as-{uuid.uuid4().hex[:8]}" for _ in range(2))
    registry = MigrationSetRepository(catalog_pool)
    for name in names:
        await registry.register(name, parse_files(FILES))
    yield names
    await catalog_pool.execute("DELETE FROM set_assignments WHERE set_name = ANY($1)", names)


async def test_put_get_replace_and_delete(catalog_pool: asyncpg.Pool, sets: list[str]) -> None:
    repo = AssignmentRepository(catalog_pool)
    first = await repo.put(sets[0], AssignmentSpec(selector={"tier": "free"}))
    assert (first.selector, first.version) == ({"tier": "free"}, "latest")
    replaced = await repo.put(sets[0], AssignmentSpec(selector={"tier": "pro"}, version="01"))
    assert (replaced.selector, replaced.version) == ({"tier": "pro"}, "1")
    assert replaced.created_at == first.created_at
    assert (await repo.get(sets[0])).version == "1"
    listed = [a.set_name for a in (await repo.list()).items]
    assert sets[0] in listed and listed == sorted(listed)
    await repo.delete(sets[0])
    with pytest.raises(NotFound):
        await repo.get(sets[0])
    with pytest.raises(NotFound):
        await repo.delete(sets[0])


async def test_unknown_set_and_unknown_version_are_refused(
    catalog_pool: asyncpg.Pool, sets: list[str]
) -> None:
    repo = AssignmentRepository(catalog_pool)
    with pytest.raises(NotFound):
        await repo.put(f"nope-{uuid.uuid4().hex[:6]}", AssignmentSpec())
    with pytest.raises(InvalidInput, match="no version 9"):
        await repo.put(sets[0], AssignmentSpec(version="9"))
    with pytest.raises(NotFound):
        await repo.get(sets[0])  # nothing was written


async def test_for_labels_matches_selectors_contained_in_the_labels(
    catalog_pool: asyncpg.Pool, sets: list[str]
) -> None:
    repo = AssignmentRepository(catalog_pool)
    region = f"r{uuid.uuid4().hex[:6]}"
    await repo.put(sets[1], AssignmentSpec(selector={"region": region}, version="2"))
    await repo.put(sets[0], AssignmentSpec(selector={"region": region, "tier": "free"}))
    both = await repo.for_labels({"region": region, "tier": "free", "x": "y"})
    mine = [a for a in both if a.set_name in sets]
    assert mine == [
        AssignedSet(set_name=sets[0], version=None),
        AssignedSet(set_name=sets[1], version="2"),
    ]
    only_region = [a for a in await repo.for_labels({"region": region}) if a.set_name in sets]
    assert only_region == [AssignedSet(set_name=sets[1], version="2")]
    assert not [a for a in await repo.for_labels({"tier": "free"}) if a.set_name in sets]
    await repo.put(sets[0], AssignmentSpec(selector={}))
    assert AssignedSet(set_name=sets[0]) in await repo.for_labels({})
