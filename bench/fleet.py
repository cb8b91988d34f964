"""Fleet rollout benchmark: tenantflow vs plain asyncpg vs a sequential loop, same machine.

    python -m bench.fleet                    # 200 databases
    python -m bench.fleet --schemas --targets 2000

Creates its own embedded PostgreSQL and Temporal server in a temporary directory, one set of
targets per contender (so no reset sits inside or between timings), applies ``examples/core``:

1. plain asyncpg at the same concurrency (the physical limit: PostgreSQL itself),
2. a sequential per-target loop (what most teams run today),
3. tenantflow end to end: API -> MigrateFleetWorkflow -> worker -> done.

and prints the three times and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import uvicorn

from cli.dev_issuer import DevIssuer, create_issuer_app
from cli.stack import EmbeddedPostgres, TemporalDevServer, free_port
from common.migrations.loader import load_directory
from common.settings import DEV_REALM, Settings
from gateway.app import create_app
from models.migrations import Migration

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "core"


class Server(threading.Thread):
    """uvicorn in a thread."""

    def __init__(self, app: Any, port: int, lifespan: Literal["on", "off"] = "on") -> None:
        super().__init__(daemon=True)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan
        )
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        self.server.run()

    def begin(self) -> None:
        self.start()
        while not self.server.started:
            time.sleep(0.02)

    def end(self) -> None:
        self.server.should_exit = True
        self.join(10)


async def create_targets(pg: EmbeddedPostgres, prefix: str, count: int, schemas: bool) -> list[str]:
    """Databases (or schemas in one database) named ``{prefix}_{i}``."""
    names = [f"{prefix}_{i}" for i in range(count)]
    admin = await asyncpg.connect(pg.dsn("postgres"))
    try:
        if schemas:
            await admin.execute(f'CREATE DATABASE "{prefix}"')
            conn = await asyncpg.connect(pg.dsn(prefix))
            try:
                for name in names:
                    await conn.execute(f'CREATE SCHEMA "{name}"')
            finally:
                await conn.close()
        else:
            for name in names:
                await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
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


async def timed(label: str, work: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    print(f"{label:<34} {elapsed:8.2f} s", flush=True)
    return elapsed


async def main(options: argparse.Namespace) -> None:
    migrations = load_directory(EXAMPLE)
    work_dir = Path(tempfile.mkdtemp(prefix="tenantflow-bench-"))
    pg = EmbeddedPostgres(work_dir / "pg", free_port(), max_connections=400)
    temporal = TemporalDevServer(work_dir / "temporal", free_port(), None)
    worker: subprocess.Popen[bytes] | None = None
    servers: list[Server] = []
    try:
        pg.start()
        temporal.start()
        n, schemas, c = options.targets, options.schemas, options.concurrency
        kind = "schemas" if schemas else "databases"
        print(f"{n} {kind} x {len(migrations)} migrations, concurrency {c}", flush=True)
        t0 = time.perf_counter()
        plain_targets = await create_targets(pg, "plain", n, schemas)
        seq_targets = await create_targets(pg, "seq", n, schemas)
        tf_targets = await create_targets(pg, "tf", n, schemas)
        print(f"(setup: {3 * n} {kind} in {time.perf_counter() - t0:.1f} s, not timed)")

        semaphore = asyncio.Semaphore(c)

        async def bounded(name: str) -> None:
            async with semaphore:
                await apply_plain(connect_args(pg, "plain", name, schemas), migrations)

        async def plain() -> None:
            await asyncio.gather(*(bounded(name) for name in plain_targets))

        async def sequential() -> None:
            for name in seq_targets:
                await apply_plain(connect_args(pg, "seq", name, schemas), migrations)

        # tenantflow: issuer, worker (own process, as in production), gateway.
        issuer_port, gateway_port = free_port(), free_port()
        issuer = DevIssuer(
            work_dir / "issuer", f"http://127.0.0.1:{issuer_port}/realms/{DEV_REALM}"
        )
        servers.append(Server(create_issuer_app(issuer, DEV_REALM), issuer_port, lifespan="off"))
        servers[-1].begin()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
        env.update(
            {
                "TENANTFLOW_CATALOG__DSN": pg.dsn(),
                "TENANTFLOW_TEMPORAL__ADDRESS": temporal.address,
                "TENANTFLOW_LOG__LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT),
            }
        )
        worker = subprocess.Popen(  # noqa: ASYNC220 - started once, outside every timing
            [sys.executable, "-m", "cli.main", "worker"], env=env
        )
        settings = Settings(
            _env_file=None,
            catalog={"dsn": pg.dsn(), "max_pool_size": 20},
            temporal={"address": temporal.address},
            auth={"issuer_url": issuer.issuer_url},
            log={"level": "WARNING", "access_log": False},
            rate_limit={"enabled": False},
        )
        servers.append(Server(create_app(settings), gateway_port))
        servers[-1].begin()
        headers = {"Authorization": f"Bearer {issuer.mint(subject='bench', roles=['infra-admin'])}"}
        label = uuid.uuid4().hex[:8]
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{gateway_port}", headers=headers, timeout=120
        ) as api:
            files = {m.source or f"V{m.version}__x.sql": m.up_sql for m in migrations}
            response = await api.post(
                "/api/v1/migration-sets", json={"name": "core", "files": files}
            )
            response.raise_for_status()
            for name in tf_targets:
                body = {
                    "name": name.replace("_", "-"),
                    "host": "127.0.0.1",
                    "port": pg.port,
                    "database": "tf" if schemas else name,
                    "user": "postgres",
                    "password": pg.password,
                    "labels": {"bench": label},
                }
                if schemas:
                    body["schema"] = name
                (await api.post("/api/v1/databases", json=body)).raise_for_status()

            async def tenantflow() -> None:
                started = await api.post(
                    "/api/v1/migrations",
                    json={
                        "set": "core",
                        "selector": {"labels": {"bench": label}},
                        "concurrency": c,
                        "batch_size": options.batch_size,
                    },
                )
                started.raise_for_status()
                url = started.json()["status_url"]
                while True:
                    state = (await api.get(url)).json()
                    if state["status"] in ("completed", "cancelled"):
                        break
                    await asyncio.sleep(0.1)
                counts = state["counts"]
                if counts["succeeded"] != n:
                    raise SystemExit(f"tenantflow run did not migrate every target: {counts}")

            plain_s = await timed("plain asyncpg (physical limit)", plain)
            seq_s = await timed("sequential loop", sequential)
            tf_s = await timed(f"tenantflow (batch size {options.batch_size})", tenantflow)
        print(f"\ntenantflow / plain asyncpg   = {tf_s / plain_s:.2f}")
        print(f"sequential / plain asyncpg   = {seq_s / plain_s:.2f}")
        print(f"tenantflow / sequential      = {tf_s / seq_s:.2f}")
    finally:
        for server in reversed(servers):
            server.end()
        if worker is not None:
            worker.terminate()
            worker.wait(60)
        temporal.stop()
        pg.stop()
        shutil.rmtree(work_dir, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--schemas", action="store_true", help="schema-per-tenant targets")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
