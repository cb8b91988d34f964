"""Grouped schema targets on real PostgreSQL (issue 13): the schemas of a batch that share a
database and credentials go through one connection, each in its own transactions under its own
lock and search path; an up-to-date group is settled from one ledger query; a big group runs
in chunks, each on a connection of its own, at once."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from temporalio.testing import ActivityEnvironment

from activities import grouped, reconnect
from activities.grouped import (
    NEUTRAL_SEARCH_PATH,
    GroupRunner,
    Hold,
    SchemaGroup,
    chunked,
    group_schemas,
    no_hold,
)
from activities.migrations import _connect
from cli.stack import free_port
from common.migrations.loader import parse_files
from common.settings import Settings
from models.databases import DatabaseCreate
from models.fleet import TargetBatchInput
from models.migrations import Migration, TargetRunKind, TargetRunResult
from tests.activities.test_migrations import Harness
from tests.conftest import TargetDatabase

FILES = {
    # Unqualified names throughout: each must land in the schema it runs for.
    "V1__who.sql": "CREATE TABLE who (pid int, schema_name text);\n"
    "INSERT INTO who SELECT pg_backend_pid(), current_schema();",
    # Fails in the schemas whose name ends in _bad only, after version 1 is in.
    "V2__items.sql": "CREATE TABLE items (id int);\n"
    "SELECT CASE WHEN current_schema() LIKE '%\\_bad' THEN current_schema()::int END;",
    "V3__index.sql": (
        "-- tenantflow:no-transaction\nCREATE INDEX CONCURRENTLY items_id ON items (id);"
    ),
    "R__item_view.sql": "CREATE OR REPLACE VIEW item_ids AS SELECT id FROM items;",
}


class Group(Harness):
    """Schema targets in one database, registered in the catalog, run as one batch (the
    single-target tests' harness with several targets)."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, target: TargetDatabase) -> None:
        super().__init__(pool, settings, target)
        self.set_name = f"g-{uuid.uuid4().hex[:8]}"
        self.ids: dict[str, uuid.UUID] = {}

    async def add(self, *schemas: str, **overrides: object) -> None:
        for schema in schemas:
            body = self.target.create_body(
                name=f"t-{uuid.uuid4().hex[:8]}", schema=schema, **overrides
            )
            created = await self.databases.create(DatabaseCreate.model_validate(body))
            self.ids[schema] = created.id

    def batch(self, kind: TargetRunKind = TargetRunKind.APPLY, **options: Any) -> TargetBatchInput:
        return TargetBatchInput(
            run_id=uuid.uuid4().hex[:8],
            set_name=self.set_name,
            kind=kind,
            target_version=options.pop("target_version", None),
            database_ids=list(self.ids.values()),
            dry_run=options.pop("dry_run", False),
            lock_timeout_ms=options.pop("lock_timeout_ms", 5000),
            statement_timeout_ms=options.pop("statement_timeout_ms", 60000),
        )

    async def run(
        self, kind: TargetRunKind = TargetRunKind.APPLY, **options: Any
    ) -> dict[str, TargetRunResult]:
        results = await ActivityEnvironment().run(
            self.activities.run_target_batch, self.batch(kind, **options)
        )
        by_id = {r.database_id: r for r in results}
        return {schema: by_id[i] for schema, i in self.ids.items()}

    async def records(self, sql: str) -> list[asyncpg.Record]:
        conn = await self.target.connect()
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await self.records(sql)]

    async def ledger(self, schema: str) -> list[str]:
        rows = await self.records(
            f'SELECT version FROM "{schema}".tenantflow_schema_history ORDER BY version'
        )
        return [r["version"] for r in rows]


@pytest.fixture
async def group(
    catalog_pool: asyncpg.Pool, settings: Settings, target_database: TargetDatabase
) -> AsyncIterator[Group]:
    yield Group(catalog_pool, settings, target_database)


def _versions(result: TargetRunResult) -> list[str]:
    return [a.version for a in result.applied]


async def test_grouped_schemas_apply_through_one_connection_each_in_its_own_schema(
    group: Group,
) -> None:
    await group.sets.register(group.set_name, parse_files(FILES))
    await group.add("g_a", "g_b_bad", "g_c")
    results = await group.run()

    for schema in ("g_a", "g_c"):
        assert results[schema].failure is None
        assert _versions(results[schema]) == ["1", "2", "3", "R:item view"]
        assert await group.ledger(schema) == ["1", "2", "3", "R:item view"]
    # The failing schema fails alone: its version 2 rolled back, version 1 stays.
    bad = results["g_b_bad"]
    assert bad.failure is not None and bad.failure.version == "2"
    assert bad.failure.sqlstate == "22P02"
    assert _versions(bad) == ["1"]
    assert await group.ledger("g_b_bad") == ["1"]
    assert await group.fetch("SELECT to_regclass('g_b_bad.items')") == [(None,)]

    # One backend served all three; search_path never leaked between them.
    rows = await group.records(
        "SELECT 'g_a' AS s, * FROM g_a.who UNION ALL SELECT 'g_b_bad', * FROM g_b_bad.who "
        "UNION ALL SELECT 'g_c', * FROM g_c.who"
    )
    assert {r["s"]: r["schema_name"] for r in rows} == {s: s for s in ("g_a", "g_b_bad", "g_c")}
    assert len({r["pid"] for r in rows}) == 1
    assert await group.fetch("SELECT to_regclass('public.who'), to_regclass('public.items')") == [
        (None, None)
    ]
    for schema in ("g_a", "g_c"):
        valid = await group.fetch(
            f"SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{schema}.items_id')"
        )
        assert valid == [(True,)]
        assert await group.fetch(f"SELECT to_regclass('{schema}.item_ids') IS NOT NULL") == [
            (True,)
        ]


async def test_an_up_to_date_group_is_settled_from_one_ledger_query(group: Group) -> None:
    migrations = parse_files(FILES)
    await group.sets.register(group.set_name, migrations)
    await group.add("n_a", "n_b", "n_c")
    first = await group.run()
    assert all(r.failure is None for r in first.values())

    second = await group.run()
    for schema, result in second.items():
        assert result.failure is None and result.applied == []
        assert result.from_version == result.to_version == "3", schema

    # The same group through the runner, every statement on its connection logged.
    statements: list[str] = []
    runner = _runner(group, migrations, statements)
    results = await runner.run()
    assert [r.applied for r in results.values()] == [[], [], []]
    assert runner.ledger_queries == 1
    assert len(statements) == 1 and "UNION ALL" in statements[0]


async def test_a_group_rolls_back_each_schema_in_its_own_schema(group: Group) -> None:
    files = {
        "V1__a.sql": "CREATE TABLE a (id int);",
        "U1__a.sql": "DROP TABLE a;",
        "V2__b.sql": "CREATE TABLE b (id int);",
        "U2__b.sql": "DROP TABLE b;",
    }
    await group.sets.register(group.set_name, parse_files(files))
    await group.add("r_a", "r_b")
    await group.run()
    results = await group.run(TargetRunKind.ROLLBACK, target_version="1")
    for schema in ("r_a", "r_b"):
        assert results[schema].failure is None
        assert _versions(results[schema]) == ["2"]
        assert await group.ledger(schema) == ["1"]
        assert await group.fetch(
            f"SELECT to_regclass('{schema}.a') IS NOT NULL, to_regclass('{schema}.b')"
        ) == [(True, None)]


async def test_first_contact_reads_ledgers_that_are_not_there_yet_without_failing(
    group: Group,
) -> None:
    """The group's ledger query meets missing tables on a first rollout: the engine reads
    each ledger itself then."""
    await group.sets.register(group.set_name, parse_files({"V1__a.sql": "CREATE TABLE a ();"}))
    await group.add("f_a", "f_b")
    statements: list[str] = []
    runner = _runner(group, parse_files({"V1__a.sql": "CREATE TABLE a ();"}), statements)
    results = await runner.run()
    assert sorted(_versions(r) for r in results.values()) == [["1"], ["1"]]


async def test_a_grouped_dry_run_plans_each_schema_with_its_lock_risks(group: Group) -> None:
    files = {"V1__a.sql": "CREATE TABLE a (id int);", "V2__i.sql": "CREATE INDEX i ON a (id);"}
    await group.sets.register(group.set_name, parse_files(files))
    await group.add("d_a", "d_b")
    results = await group.run(dry_run=True)
    for result in results.values():
        assert [(p.version, [w.rule for w in p.warnings]) for p in result.planned] == [
            ("1", []),
            ("2", ["require-concurrent-index-creation"]),
        ]
    assert await group.fetch("SELECT to_regclass('d_a.a'), to_regnamespace('d_b')") == [
        (None, None)
    ]


async def test_a_busy_schema_is_tried_again_after_the_others(group: Group) -> None:
    await group.sets.register(group.set_name, parse_files({"V1__a.sql": "CREATE TABLE a ();"}))
    await group.add("l_a", "l_busy", "l_c")
    conn = await group.target.connect()
    locked = conn.transaction()
    await locked.start()
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('tenantflow:l_busy', 0))")

    async def release() -> None:
        # Held until the schema after it is done: its first attempt timed out by then.
        while await group.fetch("SELECT to_regclass('l_c.a') IS NOT NULL") != [(True,)]:  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.05)
        await locked.rollback()

    try:
        results, _ = await asyncio.gather(group.run(lock_timeout_ms=100), release())
    finally:
        await conn.close()
    assert {s: _versions(r) for s, r in results.items()} == {s: ["1"] for s in group.ids}


# The first schema of each chunk (c00, c10, c20) waits until three of the run's connections are
# open at once: it passes only when the chunks run concurrently (else the statement times out).
CHUNK_FILES = {
    "V1__who.sql": "CREATE TABLE who (pid int, schema_name text);\n"
    "INSERT INTO who SELECT pg_backend_pid(), current_schema();\n"
    "DO $$ BEGIN\n"
    "  IF current_schema() LIKE '%0' THEN\n"
    "    WHILE (SELECT count(*) FROM pg_stat_activity\n"
    "           WHERE application_name = current_setting('application_name')) < 3 LOOP\n"
    "      PERFORM pg_sleep(0.01);\n"
    "      PERFORM pg_stat_clear_snapshot();\n"
    "    END LOOP;\n"
    "  END IF;\n"
    "END $$;",
}
CHUNKED = [f"c{i:02d}" for i in range(30)]


def test_chunks_are_as_even_as_they_can_be() -> None:
    def sizes(n: int) -> list[int]:
        return [len(c) for c in chunked([(uuid.uuid4(), str(i)) for i in range(n)], 12)]

    assert sizes(0) == []
    assert sizes(2) == [2]
    assert sizes(12) == [12]
    assert sizes(13) == [7, 6]
    assert sizes(30) == [10, 10, 10]
    assert sizes(100) == [12] + [11] * 8
    members = [(uuid.uuid4(), str(i)) for i in range(30)]
    assert [m for chunk in chunked(members, 12) for m in chunk] == members


async def test_a_big_group_runs_in_chunks_on_distinct_backends_at_once(group: Group) -> None:
    await group.sets.register(group.set_name, parse_files(CHUNK_FILES))
    await group.add(*CHUNKED)
    results = await group.run(statement_timeout_ms=20000)

    assert {s: (r.failure, _versions(r)) for s, r in results.items()} == {
        s: (None, ["1"]) for s in CHUNKED
    }
    rows = await group.records(
        " UNION ALL ".join(f"SELECT '{s}' AS s, * FROM {s}.who" for s in CHUNKED)
    )
    # Every schema migrated exactly once, in its own schema.
    assert sorted((r["s"], r["schema_name"]) for r in rows) == [(s, s) for s in CHUNKED]
    for schema in CHUNKED:
        assert await group.ledger(schema) == ["1"]
    # Three chunks of ten schemas in order, each on a backend of its own.
    pid = {r["s"]: r["pid"] for r in rows}
    by_chunk = [{pid[s] for s in CHUNKED[i : i + 10]} for i in (0, 10, 20)]
    assert [len(pids) for pids in by_chunk] == [1, 1, 1]
    assert len(set.union(*by_chunk)) == 3


async def test_an_up_to_date_big_group_sends_one_ledger_query_in_total(group: Group) -> None:
    migrations = parse_files(FILES)
    await group.sets.register(group.set_name, migrations)
    await group.add(*(f"u{i:02d}" for i in range(30)))
    first = await group.run()
    assert all(r.failure is None for r in first.values())

    statements: list[str] = []
    opened: list[int] = []
    runner = _runner(group, migrations, statements, opened=opened)
    results = await runner.run()
    assert len(results) == 30 and all(r.applied == [] for r in results.values())
    assert runner.ledger_queries == 1 and runner.chunks == []
    assert len(opened) == 1
    assert len(statements) == 1 and "UNION ALL" in statements[0]


async def test_only_schemas_with_work_left_are_chunked(group: Group) -> None:
    """The group's ledgers are read once; the up-to-date schemas are settled from it and the
    others run on the connection that read them (ten schemas: one chunk)."""
    both = parse_files({"V1__a.sql": "CREATE TABLE a ();", "V2__b.sql": "CREATE TABLE b ();"})
    await group.sets.register(group.set_name, both)
    schemas = [f"w{i:02d}" for i in range(30)]
    await group.add(*schemas)
    first = await group.run(target_version="1")
    assert all(_versions(r) == ["1"] for r in first.values())
    # Twenty of them are up to date, ten have version 2 left.
    await _runner(group, both, [], schemas=schemas[10:]).run()

    opened: list[int] = []
    statements: list[str] = []
    runner = _runner(group, both, statements, opened=opened)
    results = await runner.run()
    assert runner.ledger_queries == 1 and len(opened) == 1
    assert [[s for _, s in chunk] for chunk in runner.chunks] == [schemas[:10]]
    by_schema = {s: results[group.ids[s]] for s in schemas}
    assert {s: _versions(r) for s, r in by_schema.items()} == {
        s: ["2"] if s in schemas[:10] else [] for s in schemas
    }
    for schema in schemas:
        assert await group.ledger(schema) == ["1", "2"]


async def test_chunks_wait_for_the_budget_and_never_for_themselves(group: Group) -> None:
    """With a budget of one connection the chunks run one after another: the first
    connection's hold ends with its own chunk, so the others are not kept waiting on it."""
    migrations = parse_files({"V1__a.sql": "CREATE TABLE a ();"})
    await group.sets.register(group.set_name, migrations)
    schemas = [f"b{i:02d}" for i in range(25)]
    await group.add(*schemas)
    budget = asyncio.Semaphore(1)
    holding = [0, 0]  # now, most at once

    @contextlib.asynccontextmanager
    async def hold() -> AsyncIterator[None]:
        async with budget:
            holding[0] += 1
            holding[1] = max(holding)
            try:
                yield
            finally:
                holding[0] -= 1

    opened: list[int] = []
    runner = _runner(group, migrations, [], hold=hold, opened=opened)
    results = await asyncio.wait_for(runner.run(), 60)
    assert {s: _versions(results[group.ids[s]]) for s in schemas} == {s: ["1"] for s in schemas}
    assert [len(c) for c in runner.chunks] == [9, 8, 8]
    assert holding[1] == 1
    # One connection per chunk (the first also read the ledgers), opened one after another.
    assert len(opened) == 3


def _runner(
    group: Group,
    migrations: list[Migration],
    statements: list[str],
    *,
    schemas: list[str] | None = None,
    hold: Hold = no_hold,
    opened: list[int] | None = None,
) -> GroupRunner:
    """A runner over the group (or ``schemas`` of it) logging every statement on its
    connections into ``statements`` and each connection's backend pid into ``opened``."""
    batch = group.batch()
    target: dict[str, Any] = {
        "host": group.target.host,
        "port": group.target.port,
        "database": group.target.database,
        "user": group.target.user,
        "password": group.target.password,
    }
    groups, singles = group_schemas(
        batch.database_ids,
        {i: {**target, "schema": schema} for schema, i in group.ids.items()},
    )
    assert singles == [] and len(groups) == 1
    chosen = groups[0]
    if schemas is not None:
        chosen = SchemaGroup(chosen.params, [(group.ids[s], s) for s in schemas])

    async def connect() -> asyncpg.Connection:
        conn = await _connect(target, batch.for_target(batch.database_ids[0]), NEUTRAL_SEARCH_PATH)
        conn.add_query_logger(lambda record: statements.append(record.query))
        if opened is not None:
            opened.append(conn.get_server_pid())
        return conn

    return GroupRunner(
        chosen, batch.for_target, migrations, "tenantflow_schema_history", connect, hold=hold
    )


async def test_a_lost_connection_mid_version_is_opened_again_and_the_group_finishes(
    group: Group,
) -> None:
    """The lane's backend terminated inside a version (what a server restart does to it): the
    version was rolled back, the lane connects again (activities.reconnect) and every schema
    ends with every version once."""
    files = {
        "V1__a.sql": "CREATE TABLE a (id int);",
        "V2__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(2);",
    }
    await group.sets.register(group.set_name, parse_files(files))
    await group.add("r_a", "r_b", "r_c")

    async def terminate_mid_version() -> int:
        while True:
            pids = await group.fetch(
                "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(2)%' "
                "AND pid <> pg_backend_pid()"
            )
            if pids:
                await group.fetch(f"SELECT pg_terminate_backend({pids[0][0]})")
                return int(pids[0][0])
            await asyncio.sleep(0.02)

    results, killed = await asyncio.gather(group.run(), terminate_mid_version())
    assert killed
    assert {s: (r.failure, r.to_version) for s, r in results.items()} == dict.fromkeys(
        group.ids, (None, "2")
    )
    for schema in group.ids:
        assert await group.ledger(schema) == ["1", "2"]  # each version once
        assert await group.fetch(f'SELECT count(*) FROM "{schema}".slow') == [(0,)]


def test_a_schema_named_twice_or_an_unreadable_target_keeps_a_connection_of_its_own() -> None:
    a, twice, b, unreadable, unknown, alone = (uuid.uuid4() for _ in range(6))
    shared = {"host": "h", "port": 5432, "database": "d", "user": "u", "password": "p"}
    groups, singles = group_schemas(
        [a, twice, b, unreadable, unknown, alone],
        {
            a: {**shared, "schema": "s_a"},
            twice: {**shared, "schema": "s_a"},
            b: {**shared, "schema": None},  # the default schema
            unreadable: ValueError("cannot decrypt"),
            alone: {**shared, "database": "other", "schema": "s_a"},
        },
    )
    assert [g.members for g in groups] == [[(a, "s_a"), (b, "public")]]
    assert groups[0].params == shared
    assert singles == [twice, unreadable, unknown, alone]


async def test_a_schema_busy_through_every_attempt_fails_alone_with_lock_timeout(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grouped, "LOCK_ATTEMPTS", 2)  # one pause of a second, not seven
    await group.sets.register(group.set_name, parse_files({"V1__a.sql": "CREATE TABLE a ();"}))
    await group.add("k_a", "k_busy")
    conn = await group.target.connect()
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended('tenantflow:k_busy', 0))"
            )
            results = await group.run(lock_timeout_ms=100)
    finally:
        await conn.close()
    assert _versions(results["k_a"]) == ["1"]
    failure = results["k_busy"].failure
    assert failure is not None and failure.reason == "lock_timeout"
    assert "target busy (55P03)" in failure.message
    assert await group.fetch("SELECT to_regclass('k_busy.a'), to_regnamespace('k_busy')") == [
        (None, None)
    ]


async def test_a_refused_password_fails_every_schema_of_the_group_as_unreachable(
    group: Group,
) -> None:
    await group.sets.register(group.set_name, parse_files({"V1__a.sql": "CREATE TABLE a ();"}))
    await group.add("p_a", "p_b", "p_c", password="not-the-password")
    results = await group.run()
    for schema, result in results.items():
        assert result.failure is not None, schema
        assert result.failure.reason == "unreachable"
        assert result.failure.message.startswith("InvalidPasswordError")
        assert "not-the-password" not in result.failure.message
        assert result.applied == []
    assert await group.fetch("SELECT to_regnamespace('p_a'), to_regnamespace('p_c')") == [
        (None, None)
    ]


async def test_a_server_refusing_connections_is_tried_again_then_unreachable(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listens on the port: a lost connection for all the lane knows (a server
    restarting), connected again with growing pauses for RECONNECT_SECONDS, then unreachable."""
    monkeypatch.setattr(reconnect, "RECONNECT_SECONDS", 1.0)
    await group.sets.register(group.set_name, parse_files({"V1__a.sql": "CREATE TABLE a ();"}))
    await group.add("q_a", "q_b", port=free_port())
    began = time.monotonic()
    results = await group.run()
    assert time.monotonic() - began >= 1.0  # 0.5 s, then the 0.5 s left
    for result in results.values():
        assert result.failure is not None
        assert result.failure.reason == "unreachable"
        assert "Connect" in result.failure.message or "refused" in result.failure.message


async def test_a_schema_that_loses_its_connection_every_time_ends_unreachable_alone(
    group: Group, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version that terminates its own backend (each attempt): its schema is run again on
    new connections for RECONNECT_SECONDS, then fails; the schemas after it still run."""
    monkeypatch.setattr(reconnect, "RECONNECT_SECONDS", 1.0)
    files = {
        "V1__a.sql": "CREATE TABLE a (id int);\n"
        "SELECT pg_terminate_backend(pg_backend_pid()) WHERE current_schema() = 'x_dies';"
    }
    await group.sets.register(group.set_name, parse_files(files))
    await group.add("x_dies", "x_b", "x_c")
    results = await group.run()
    failure = results["x_dies"].failure
    assert failure is not None and failure.reason == "unreachable"
    assert results["x_dies"].applied == []
    for schema in ("x_b", "x_c"):
        assert results[schema].failure is None, results[schema].failure
        assert await group.ledger(schema) == ["1"]
    assert await group.fetch("SELECT to_regclass('x_dies.a')") == [(None,)]


async def test_an_unexpected_error_fails_the_members_without_a_result_and_no_others(
    group: Group,
) -> None:
    await group.sets.register(group.set_name, parse_files({"V1__a.sql": "CREATE TABLE a ();"}))
    await group.add("e_a", "e_b")
    batch = group.batch()
    members = [(group.ids[s], s) for s in ("e_a", "e_b")]

    async def broken() -> asyncpg.Connection:
        raise RuntimeError("the connection factory is broken")

    runner = GroupRunner(
        SchemaGroup({}, members),
        batch.for_target,
        parse_files({"V1__a.sql": "CREATE TABLE a ();"}),
        "tenantflow_schema_history",
        broken,
    )
    results = await runner.run()
    assert set(results) == set(group.ids.values())
    for result in results.values():
        assert result.failure is not None
        assert (result.failure.reason, result.failure.message) == (
            "internal",
            "RuntimeError: the connection factory is broken",
        )


async def test_a_cancelled_group_stops_every_chunk_and_leaves_nothing_half_done(
    group: Group,
) -> None:
    files = {"V1__slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);"}
    migrations = parse_files(files)
    await group.sets.register(group.set_name, migrations)
    await group.add("z_a", "z_b", "z_c")
    opened: list[int] = []
    runner = _runner(group, migrations, [], opened=opened)
    runner.chunk_size = 1  # three chunks, three connections at once
    task = asyncio.create_task(runner.run())
    sleeping: list[tuple[Any, ...]] = []
    for _ in range(500):
        sleeping = await group.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
            "AND pid <> pg_backend_pid()"
        )
        if len(sleeping) == 3:
            break
        await asyncio.sleep(0.02)
    assert len(sleeping) == 3, sleeping
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Every chunk was stopped: no backend of the run is left working.
    for _ in range(250):
        left = await group.fetch(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
            "AND state = 'active' AND pid <> pg_backend_pid()"
        )
        if not left:
            break
        await asyncio.sleep(0.02)
    assert left == []
    for schema in ("z_a", "z_b", "z_c"):
        assert await group.fetch(f"SELECT to_regclass('{schema}.slow')") == [(None,)]
