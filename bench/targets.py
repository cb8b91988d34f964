"""The benchmarks' targets and the plain ways of migrating them, the baselines tenantflow is
timed against: databases (or schemas) made and emptied between rounds, plain asyncpg applying a
set with a connection per target, the same writing a ledger row per version, and the no-op
baseline (connect and read the ledger)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from activities.ledger import ledger_ddl, ledger_name
from bench.stack import run_sql
from cli.stack import EmbeddedPostgres
from models.migrations import Migration


async def create_targets(pg: EmbeddedPostgres, prefix: str, count: int, schemas: bool) -> list[str]:
    """Databases (or schemas in one database) named ``{prefix}_{i}``."""
    names = [f"{prefix}_{i}" for i in range(count)]
    if schemas:
        await run_sql(pg, "postgres", [f'CREATE DATABASE "{prefix}"'])
        await run_sql(pg, prefix, (f'CREATE SCHEMA "{name}"' for name in names))
    else:
        await run_sql(pg, "postgres", (f'CREATE DATABASE "{name}"' for name in names))
    return names


def connect_args(pg: EmbeddedPostgres, prefix: str, name: str, schemas: bool) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": pg.port,
        "user": "postgres",
        "password": pg.password,
        "database": prefix if schemas else name,
        "server_settings": {"search_path": name} if schemas else {},
    }


async def apply_plain(args: dict[str, Any], migrations: list[Migration]) -> None:
    """One target the plain way: each migration in its own transaction."""
    conn = await asyncpg.connect(**args)
    try:
        for migration in migrations:
            async with conn.transaction():
                await conn.execute(migration.up_sql)
    finally:
        await conn.close()


async def apply_with_ledger(args: dict[str, Any], migrations: list[Migration]) -> None:
    """One target the way a tool that records versions does (dbmate, golang-migrate): its
    ledger table (tenantflow's) on first contact, then each migration in its own transaction
    with its ledger row. What bookkeeping alone costs over ``apply_plain``."""
    conn = await asyncpg.connect(**args)
    try:
        schema = args["server_settings"].get("search_path", "public")
        await conn.execute(ledger_ddl(schema))
        insert = (
            f"INSERT INTO {ledger_name(schema)} "  # noqa: S608 - quoted identifier
            "(version, description, checksum, execution_ms, run_id) VALUES ($1, $2, $3, 0, $4)"
        )
        for migration in migrations:
            async with conn.transaction():
                await conn.execute(migration.up_sql)
                await conn.execute(
                    insert, migration.version, migration.description, migration.checksum, "plain"
                )
    finally:
        await conn.close()


async def read_ledger_plain(args: dict[str, Any]) -> None:
    """The no-op baseline for one target: connect and read its ledger, nothing else."""
    conn = await asyncpg.connect(**args)
    try:
        schema = args["server_settings"].get("search_path", "public")
        await conn.fetch(
            f'SELECT version, checksum, success FROM "{schema}".tenantflow_schema_history'  # noqa: S608
        )
    finally:
        await conn.close()


async def reset_targets(pg: EmbeddedPostgres, prefix: str, names: list[str], schemas: bool) -> None:
    """Empty a contender's targets between rounds (not timed), then checkpoint, so no round
    pays for the previous one's writes."""
    if schemas:
        await run_sql(
            pg, prefix, (f'DROP SCHEMA "{name}" CASCADE; CREATE SCHEMA "{name}"' for name in names)
        )
    else:
        semaphore = asyncio.Semaphore(16)

        async def one(name: str) -> None:
            async with semaphore:
                await run_sql(pg, name, ["DROP SCHEMA public CASCADE; CREATE SCHEMA public"])

        await asyncio.gather(*(one(name) for name in names))
    await run_sql(pg, "postgres", ["CHECKPOINT"])
