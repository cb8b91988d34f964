"""A dry run's plan carries each version's lock-risk findings, linted once across targets."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from common.migrations import lint
from common.settings import Settings
from models.migrations import TargetRunKind
from tests.activities.test_migrations import Engine, migration
from tests.conftest import TargetDatabase

STEPS = [
    migration(
        "1",
        "CREATE TABLE accounts (id bigint PRIMARY KEY, email text);\n"
        "CREATE INDEX accounts_email ON accounts (email);",
        "DROP TABLE accounts;",
    ),
    migration(
        "2",
        "-- look up by email\nCREATE INDEX accounts_email_lower ON accounts (lower(email));",
        "DROP INDEX accounts_email_lower;",
    ),
]


@pytest.fixture
async def engine(
    catalog_pool: asyncpg.Pool, settings: Settings, target_database: TargetDatabase
) -> AsyncIterator[Engine]:
    engine = Engine(catalog_pool, settings, target_database)
    await engine.register_target()
    yield engine


async def test_a_dry_run_lists_each_versions_lock_risks(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = lint.lint_sql

    def counting(sql: str, **options: object) -> object:
        calls.append(sql)
        return real(sql, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(lint, "lint_sql", counting)
    await engine.sets.register(engine.set_name, STEPS)

    plan = await engine.run(dry_run=True)
    assert [p.version for p in plan.planned] == ["1", "2"]
    assert plan.planned[0].warnings == []  # the index is on a table the version creates
    (risk,) = plan.planned[1].warnings
    assert (risk.rule, risk.severity.value, risk.line) == (
        "require-concurrent-index-creation",
        "error",
        2,
    )
    assert "-- tenantflow:no-transaction" in risk.advice

    # A second target (or batch) plans the same versions: linted once.
    await engine.register_target()
    again = await engine.run(dry_run=True)
    assert again.planned[1].warnings == plan.planned[1].warnings
    assert len(calls) == 2

    # A run's lock_timeout_ms of 0 is part of the context.
    off = await engine.run(dry_run=True, lock_timeout_ms=0)
    assert [r.rule for r in off.planned[1].warnings] == [
        "require-concurrent-index-creation",
        "require-lock-timeout",
    ]

    # Applying records nothing of the lint; a rollback's plan lints the down scripts.
    applied = await engine.run()
    assert [a.version for a in applied.applied] == ["1", "2"]
    back = await engine.run(TargetRunKind.ROLLBACK, target_version="0", dry_run=True)
    assert [p.version for p in back.planned] == ["2", "1"]
    assert [[r.rule for r in p.warnings] for p in back.planned] == [
        ["require-concurrent-index-deletion"],
        ["ban-drop-table"],
    ]
