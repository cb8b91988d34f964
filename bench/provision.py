"""Tenant provisioning benchmark: tenantflow end to end vs the same steps in plain asyncpg.

    python -m bench.provision                 # 50 tenants, one after another
    python -m bench.provision --tenants 100 --mode schema

Creates its own embedded PostgreSQL and Temporal server in a temporary directory, starts the
worker and the gateway as processes of their own (as in production), registers the server and
``examples/core``, then times each tenant from ``POST /api/v1/tenants`` until it is ``active``
(role, database or schema, target, six migrations). The baseline, in this same process, does the
same steps with plain asyncpg: create the role, create the database (``CONNECT`` revoked from
``PUBLIC``) or schema, connect as the role and apply each migration with a ledger row. Prints
p50 and p95 of both and their ratio; the goal is a p50 under 2 s on a 2-core machine.

In database mode tenantflow copies tenants' databases from a template (the fast path) once the
first tenant's run has built it; the benchmark waits for that build after the warm-up, and the
baseline does the same: a template database migrated once, then per tenant the role,
``CREATE DATABASE ... TEMPLATE``, ``REASSIGN OWNED`` and a ledger read. ``--no-template`` turns
the fast path off on both sides (every tenant migrated from empty).
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import httpx

from bench.fleet import EXAMPLE
from bench.stack import Server, percentile, run_sql, start_tenantflow, stop_stack
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.migrations.loader import load_directory
from models.migrations import Migration

PLAIN_TEMPLATE = "plain_template"


async def plain_template(pg: EmbeddedPostgres, migrations: list[Migration]) -> None:
    """The baseline's template: migrated once, its objects owned by a NOLOGIN role, closed to
    connections, as tenantflow builds its own."""
    await run_sql(
        pg,
        "postgres",
        [f'CREATE ROLE "{PLAIN_TEMPLATE}" NOLOGIN', f'CREATE DATABASE "{PLAIN_TEMPLATE}"'],
    )
    conn = await asyncpg.connect(pg.dsn(PLAIN_TEMPLATE))
    try:
        await conn.execute(f'GRANT CREATE ON SCHEMA public TO "{PLAIN_TEMPLATE}"')
        await conn.execute(f'SET ROLE "{PLAIN_TEMPLATE}"')
        await apply_plain(conn, migrations)
    finally:
        await conn.close()
    await run_sql(
        pg, "postgres", [f'ALTER DATABASE "{PLAIN_TEMPLATE}" WITH ALLOW_CONNECTIONS false']
    )


async def apply_plain(conn: asyncpg.Connection, migrations: list[Migration]) -> None:
    """Each migration in its own transaction with its ledger row."""
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_history (version text PRIMARY KEY, checksum text)"
    )
    for migration in migrations:
        async with conn.transaction():
            await conn.execute(migration.up_sql)
            await conn.execute(
                "INSERT INTO schema_history VALUES ($1, $2)", migration.version, migration.checksum
            )


async def provision_plain(
    pg: EmbeddedPostgres, name: str, mode: str, migrations: list[Migration], template: bool
) -> None:
    """One tenant the plain way, with the same statements tenantflow sends."""
    password = secrets.token_urlsafe(32)
    admin = await asyncpg.connect(pg.dsn("postgres"))
    try:
        literal = await admin.fetchval("SELECT format('%L', $1::text)", password)
        await admin.execute(f'CREATE ROLE "{name}" LOGIN PASSWORD {literal}')
        database = name if mode == "database" else "plain_shared"
        if mode == "database":
            copy = f' TEMPLATE "{PLAIN_TEMPLATE}"' if template else ""
            await admin.execute(f'CREATE DATABASE "{name}" OWNER "{name}"{copy}')
            await admin.execute(f'REVOKE CONNECT, TEMPORARY ON DATABASE "{name}" FROM PUBLIC')
        else:
            await admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{name}"')
    finally:
        await admin.close()
    if template and mode == "database":
        await run_sql(pg, name, [f'REASSIGN OWNED BY "{PLAIN_TEMPLATE}" TO "{name}"'])
    if mode == "schema":
        shared = await asyncpg.connect(pg.dsn(database))
        try:
            await shared.execute(f'CREATE SCHEMA "{name}" AUTHORIZATION "{name}"')
        finally:
            await shared.close()
    conn = await asyncpg.connect(
        host=pg.host,
        port=pg.port,
        user=name,
        password=password,
        database=database,
        server_settings={"search_path": name} if mode == "schema" else {},
    )
    try:
        if template and mode == "database":
            # What tenantflow's migrate step does to a copy: read the ledger, verify it.
            found = await conn.fetch("SELECT version, checksum FROM schema_history")
            assert len(found) == len(migrations)
        else:
            await apply_plain(conn, migrations)
    finally:
        await conn.close()


async def provision_tenantflow(api: httpx.AsyncClient, tenant_id: str, mode: str) -> None:
    """One tenant through the API, until it is active (polled every 20 ms)."""
    body = {"tenant_id": tenant_id, "server": "bench", "mode": mode, "sets": [{"name": "core"}]}
    (await api.post("/api/v1/tenants", json=body)).raise_for_status()
    while True:
        shown = (await api.get(f"/api/v1/tenants/{tenant_id}")).json()
        if shown["status"] == "active":
            return
        if shown["status"] != "provisioning":
            raise RuntimeError(f"tenant {tenant_id}: {shown['status']}: {shown.get('error')}")
        await asyncio.sleep(0.02)


async def template_ready(pg: EmbeddedPostgres) -> None:
    """Wait for the template the warm-up tenant's run started to build."""
    catalog = await asyncpg.connect(pg.dsn())
    try:
        for _ in range(600):
            status = await catalog.fetchval("SELECT status FROM tenant_templates")
            if status == "ready":
                return
            if status == "failed":
                raise RuntimeError("the template build failed")
            await asyncio.sleep(0.1)
    finally:
        await catalog.close()
    raise RuntimeError("the template was not built within a minute")


async def timed(work: asyncio.Future[None] | object) -> float:
    started = time.perf_counter()
    await work  # type: ignore[misc]
    return time.perf_counter() - started


async def main(options: argparse.Namespace) -> None:
    migrations = load_directory(EXAMPLE)
    work_dir = Path(tempfile.mkdtemp(prefix="tenantflow-bench-provision-"))
    pg = EmbeddedPostgres(work_dir / "pg", free_port(), max_connections=200)
    temporal = TemporalDevServer(work_dir / "temporal", free_port(), None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    threads: list[Server] = []
    try:
        pg.start()
        temporal.start()
        n, mode = options.tenants, options.mode
        path = "template copies" if mode == "database" and not options.no_template else "empty"
        print(
            f"{n} tenants ({mode} mode, {path}) x {len(migrations)} migrations, one after another"
        )
        if mode == "schema":
            await run_sql(pg, "postgres", ['CREATE DATABASE "plain_shared"'])

        base_url, headers = await start_tenantflow(
            pg,
            temporal,
            work_dir,
            processes,
            threads,
            env={"TENANTFLOW_PROVISIONING__TEMPLATES": str(not options.no_template).lower()},
        )
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as api:
            files = {m.source or f"V{m.version}__x.sql": m.up_sql for m in migrations}
            (
                await api.post("/api/v1/migration-sets", json={"name": "core", "files": files})
            ).raise_for_status()
            server = {
                "name": "bench",
                "host": pg.host,
                "port": pg.port,
                "admin_user": pg.user,
                "admin_password": pg.password,
                "sslmode": "disable",
                "max_connections": 100,
            }
            (await api.post("/api/v1/servers", json=server)).raise_for_status()
            # One warm-up each (first connections, the shared database, imports, the template's
            # build), not counted.
            await provision_tenantflow(api, "warmup", mode)
            template = mode == "database" and not options.no_template
            if template:
                await plain_template(pg, migrations)
                await template_ready(pg)
            await provision_plain(pg, "plain_warmup", mode, migrations, template)
            plain: list[float] = []
            tenantflow: list[float] = []
            for i in range(n):  # turns alternate, so neither gets the quieter moments
                tenant = f"t{i}-{uuid.uuid4().hex[:6]}"
                tenantflow.append(await timed(provision_tenantflow(api, tenant, mode)))
                plain.append(
                    await timed(provision_plain(pg, f"plain_{i}", mode, migrations, template))
                )
        for label, values in (("plain asyncpg", plain), ("tenantflow", tenantflow)):
            print(
                f"{label:<16} p50 {statistics.median(values):.3f} s   "
                f"p95 {percentile(values, 95):.3f} s   max {max(values):.3f} s"
            )
        ratio = statistics.median(tenantflow) / statistics.median(plain)
        print(f"tenantflow / plain (p50)   = {ratio:.2f}")
        goal = "met" if statistics.median(tenantflow) < 2.0 else "NOT met"
        print(f"goal p50 < 2 s             = {goal}")
    finally:
        stop_stack(processes, threads, temporal, pg, work_dir)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tenants", type=int, default=50)
    parser.add_argument("--mode", choices=("database", "schema"), default="database")
    parser.add_argument(
        "--no-template", action="store_true", help="database mode: no fast path on either side"
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
