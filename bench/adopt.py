"""Adoption with the real dbmate: a fleet dbmate migrated is taken over by tenantflow.

    python -m bench.adopt                     # 10 databases
    python -m bench.adopt --targets 200 --dbmate node_modules/.bin/dbmate

Creates its own embedded PostgreSQL and Temporal server in a temporary directory and starts
tenantflow as in production (worker and gateway processes). ``examples/core`` is written out in
dbmate's layout; the real ``dbmate`` binary (``--dbmate``, else ``dbmate`` on the PATH, else
``npm install dbmate`` into the temporary directory, which needs the npm registry) brings every
target to version 4 with its own ``schema_migrations`` table. tenantflow then adopts the fleet
(``kind: adopt, from: dbmate``) and brings it to the latest version with a normal run. Prints what
each step did and how long it took, checks that dbmate's table is left as it was, that every
ledger records versions 1-4 as adopted from dbmate, and that every target's schema equals a target
tenantflow migrated from empty.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench.fleet import EXAMPLE
from bench.stack import Server, run_sql, start_tenantflow, stop_stack
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.migrations.loader import load_directory, to_format
from models.migrations import MigrationFormat

ADOPTED_UP_TO = 4


def find_dbmate(given: str | None, work_dir: Path) -> tuple[str, str]:
    """The dbmate binary (given, on the PATH, or installed from npm into ``work_dir``) and
    what its ``--version`` says."""
    found = given or shutil.which("dbmate")
    if not found:
        print("dbmate not on the PATH: npm install dbmate", flush=True)
        subprocess.run(
            ["npm", "install", "--silent", "--prefix", str(work_dir / "npm"), "dbmate"],
            check=True,
        )
        found = str(work_dir / "npm" / "node_modules" / ".bin" / "dbmate")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    return found, version.stdout.strip()


def dbmate_up(dbmate: str, pg: EmbeddedPostgres, database: str, migrations_dir: Path) -> None:
    """``dbmate up`` on one database, as a team runs it today."""
    url = pg.dsn(database) + "?sslmode=disable"
    subprocess.run(
        [dbmate, "--url", url, "--migrations-dir", str(migrations_dir), "--no-dump-schema", "up"],
        check=True,
        capture_output=True,
        timeout=120,
    )


async def dump(pg: EmbeddedPostgres, database: str) -> str:
    """The schema without either tool's table (``pg_dump --schema-only``)."""
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(EmbeddedPostgres.bin_dir() / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=public.schema_migrations",
            "--exclude-table=public.tenantflow_schema_history",
            pg.dsn(database),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict", "\\unrestrict", "-- Dumped"))
    )


async def finished(http: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> Any:
    """Start a fleet run and wait for it; its last progress."""
    started = await http.post("/api/v1/migrations", json=body, headers=headers)
    started.raise_for_status()
    url = started.json()["status_url"]
    while True:
        state = (await http.get(url, headers=headers)).json()
        if state["status"] in ("completed", "cancelled"):
            return state
        await asyncio.sleep(0.1)


async def main(options: argparse.Namespace) -> None:
    work_dir = Path(tempfile.mkdtemp(prefix="tenantflow-adopt-"))
    pg = EmbeddedPostgres(work_dir / "pg", free_port())
    temporal = TemporalDevServer(work_dir / "temporal", free_port(), None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    threads: list[Server] = []
    try:
        dbmate, version = find_dbmate(options.dbmate, work_dir)
        files = to_format(load_directory(EXAMPLE), MigrationFormat.DBMATE)
        old = work_dir / "dbmate-v4"
        old.mkdir()
        for name in sorted(files)[:ADOPTED_UP_TO]:
            (old / name).write_text(files[name])
        print(f"{version}; examples/core in dbmate's layout: {', '.join(files)}")

        pg.start()
        temporal.start()
        prefix = f"adopt_{uuid.uuid4().hex[:6]}"
        names = [f"{prefix}_{i}" for i in range(options.targets)]
        fresh = f"{prefix}_fresh"
        await run_sql(pg, "postgres", (f'CREATE DATABASE "{n}"' for n in [*names, fresh]))

        started = time.perf_counter()
        await asyncio.gather(*(asyncio.to_thread(dbmate_up, dbmate, pg, n, old) for n in names))
        took_dbmate = time.perf_counter() - started
        print(
            f"dbmate up (versions 1-{ADOPTED_UP_TO}) on {len(names)} databases: {took_dbmate:.2f} s"
        )
        before = {}
        for name in names:
            conn = await asyncpg.connect(pg.dsn(name))
            try:
                before[name] = [
                    r[0]
                    for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
                ]
            finally:
                await conn.close()
        conn = await asyncpg.connect(pg.dsn(names[0]))
        try:
            layout = await conn.fetch(
                "SELECT table_schema, column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'schema_migrations' ORDER BY ordinal_position"
            )
        finally:
            await conn.close()
        shown = ", ".join(f"{r[0]}.schema_migrations.{r[1]} {r[2]}" for r in layout)
        print(f"dbmate's table: {shown}; rows in {names[0]}: {before[names[0]]}")

        base_url, headers = await start_tenantflow(pg, temporal, work_dir, processes, threads)
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:
            set_name = f"core-{prefix.replace('_', '-')}"
            answer = await http.post(
                "/api/v1/migration-sets",
                json={"name": set_name, "files": files, "format": "dbmate"},
                headers=headers,
            )
            answer.raise_for_status()
            ids: dict[str, str] = {}
            for name in [*names, fresh]:
                body = {
                    "name": name.replace("_", "-"),
                    "host": pg.host,
                    "port": pg.port,
                    "database": name,
                    "user": pg.user,
                    "password": pg.password,
                    "labels": {"fleet": prefix if name != fresh else f"{prefix}-fresh"},
                }
                created = await http.post("/api/v1/databases", json=body, headers=headers)
                created.raise_for_status()
                ids[name] = created.json()["id"]

            selector = {"labels": {"fleet": prefix}}
            started = time.perf_counter()
            adopted = await finished(
                http,
                headers,
                {"set": set_name, "kind": "adopt", "from": "dbmate", "selector": selector},
            )
            took_adopt = time.perf_counter() - started
            print(f"tenantflow adopt (from dbmate): {adopted['counts']} in {took_adopt:.2f} s")
            history = (
                await http.get(
                    f"/api/v1/databases/{ids[names[0]]}/history",
                    params={"set": set_name},
                    headers=headers,
                )
            ).json()
            print(
                f"ledger of {names[0]}: "
                + ", ".join(f"{e['version']} ({e['adopted_from']})" for e in history["entries"])
            )
            started = time.perf_counter()
            applied = await finished(
                http,
                headers,
                {"set": set_name, "selector": {"database_ids": [ids[n] for n in [*names, fresh]]}},
            )
            took_apply = time.perf_counter() - started
            print(f"tenantflow apply to the latest: {applied['counts']} in {took_apply:.2f} s")
            versions = {(t["from_version"], t["to_version"]) for t in applied["targets"].values()}
            print(f"from -> to versions: {sorted(versions, key=str)}")

        problems = [n for n in names if adopted["targets"][ids[n]]["state"] != "succeeded"]
        reference = await dump(pg, fresh)
        for name in names:
            conn = await asyncpg.connect(pg.dsn(name))
            try:
                now = [
                    r[0]
                    for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
                ]
            finally:
                await conn.close()
            if now != before[name]:
                problems.append(f"{name}: dbmate's table changed")
            if await dump(pg, name) != reference:
                problems.append(f"{name}: schema differs from a fresh tenantflow apply")
        if problems:
            print("PROBLEMS: " + "; ".join(problems))
            raise SystemExit(1)
        print(
            f"all {len(names)} schemas equal a fresh tenantflow apply; dbmate's tables untouched; "
            f"adopt took {took_adopt / took_dbmate:.2f}x dbmate's own run to version "
            f"{ADOPTED_UP_TO}"
        )
    finally:
        stop_stack(processes, threads, temporal, pg, work_dir)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=10)
    parser.add_argument("--dbmate", default=os.environ.get("DBMATE"), help="the dbmate binary")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
