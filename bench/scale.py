"""Scale benchmark: one logical run over 100,000 schema targets in 100 databases.

    python -m bench.scale                                   # 100 databases x 1,000 schemas
    python -m bench.scale --databases 4 --schemas-per-database 50
    python -m bench.scale --set core                        # examples/core instead of light

The issue's acceptance point: 100,000 schema targets (in 100 databases) in one logical run
completes, the worker stays under 500 MB, every history of the run's continue-as-new chain stays
under Temporal's limits, ``GET /api/v1/migrations/{id}`` answers with a p99 under 200 ms during
the run, and the run's total time is printed beside plain asyncpg on the same targets.

Builds on bench.fleet: its own embedded PostgreSQL and Temporal server in a temporary directory,
tenantflow started as in production (``start_tenantflow``). Untimed setup: each contender gets its
own databases (``plain_<d>`` and ``tf_<d>``) with schemas ``s<i>``, created in one transaction per
database; the tenantflow targets go into the catalog through ``DatabaseRepository.create`` (the
gateway has no bulk registration route; one POST per target would take longer than the run) with
a pool, timed on its own. Then, timed, each after a checkpoint:

1. plain asyncpg applies the set to every plain schema, a connection per schema, at the run's
   concurrency (what bench.fleet does for ``--schemas``);
2. tenantflow: ``POST /api/v1/migrations`` over the targets' label, watched to its end over SSE,
   while ``--pollers`` clients poll the light summary (``?targets=none``, what a dashboard
   watching a run of this size polls), one client the full answer and one ``/health`` (the
   baseline: what any request costs meanwhile), and the worker's RSS is sampled every second.

Afterwards: the run's counts (every target succeeded), the ledgers of 20 random schemas (every
version once, by this run) and every history of the run's chain against Temporal's limits.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from google.protobuf.message import Message
from temporalio.client import Client

from activities.ledger import ledger_name
from bench import stack
from bench.fleet import EXAMPLE
from bench.stack import (
    Server,
    Usage,
    peak_rss_mb,
    percentile,
    postmaster_pid,
    run_sql,
    start_tenantflow,
    stop_stack,
    timed,
)
from bench.targets import apply_plain, connect_args
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.catalog.databases import DatabaseRepository
from common.crypto import CredentialCipher, KeyRing
from common.migrations.loader import parse_files
from common.settings import CryptoSettings
from models.databases import DatabaseCreate

# Two versions with their downs: a table and an index per schema. examples/core's six versions
# over 100,000 schemas would keep plain asyncpg alone busy for most of an hour on 2 cores.
LIGHT = {
    "V1__create_account.sql": "CREATE TABLE account (id bigint PRIMARY KEY, name text);\n",
    "U1__create_account.sql": "DROP TABLE account;\n",
    "V2__index_account_name.sql": "CREATE INDEX account_name_idx ON account (name);\n",
    "U2__index_account_name.sql": "DROP INDEX account_name_idx;\n",
}
POLL_SECONDS = 0.2
SAMPLE_SECONDS = 1.0
LEDGERS_CHECKED = 20
SUMMARY = "GET /api/v1/migrations/{id}?targets=none"
FULL = "GET /api/v1/migrations/{id}"
HEALTH = "GET /health"
GOAL_RSS_MB, GOAL_P99_MS = 500, 200
# Temporal's limits per history (events, bytes) and per payload, and where it starts warning.
LIMIT_EVENTS, WARN_EVENTS = 51_200, 10_240
LIMIT_BYTES, WARN_BYTES = 50 * 1024 * 1024, 10 * 1024 * 1024
LIMIT_PAYLOAD = 2 * 1024 * 1024
# Whose CPU a tenantflow run costs (this process only polls and watches; plain asyncpg's client
# work is this process's).
TF_PROCESSES = ("postgres", "temporal", "worker", "gateway")
PAYLOAD_TYPES = frozenset({"temporal.api.common.v1.Payload", "temporal.api.common.v1.Payloads"})


def migration_files(name: str) -> dict[str, str]:
    """The set's files (ups and downs) by name: ``light`` from this script, ``core`` from
    examples/core."""
    if name == "light":
        return dict(LIGHT)
    return {path.name: path.read_text() for path in sorted(EXAMPLE.glob("*.sql"))}


def cpu_spent(before: dict[str, float], after: dict[str, float], names: tuple[str, ...]) -> float:
    return sum(after[name] - before[name] for name in names)


def rss_mb(pid: int) -> float:
    """A process's resident memory now (VmRSS) in MB; 0 when it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0.0
    for line in lines:
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def create_schemas(
    pg: EmbeddedPostgres, prefixes: list[str], databases: int, schemas: int
) -> None:
    """``{prefix}_{d}`` databases, each with schemas ``s0``..: one transaction per database
    (a multi-statement query), two databases at a time."""
    names = [f"{prefix}_{d}" for prefix in prefixes for d in range(databases)]
    await run_sql(pg, "postgres", (f'CREATE DATABASE "{name}"' for name in names))
    script = ";".join(f'CREATE SCHEMA "s{i}"' for i in range(schemas))
    semaphore = asyncio.Semaphore(2)

    async def one(name: str) -> None:
        async with semaphore:
            await run_sql(pg, name, [script])

    await asyncio.gather(*(one(name) for name in names))


def target_name(d: int, i: int) -> str:
    # Zero-padded so the selector's name order walks one database after another: a batch's
    # schemas share a database, as a real fleet's neighbours usually do.
    return f"tf-{d:03d}-s{i:05d}"


async def register_targets(
    pg: EmbeddedPostgres, databases: int, schemas: int, label: str, workers: int = 16
) -> None:
    """Every tenantflow target into the catalog through the repository (its password encrypted
    under the key the worker decrypts with: the development default), ``workers`` at once."""
    cipher = CredentialCipher(KeyRing.from_settings(CryptoSettings()))
    pairs: Iterator[tuple[int, int]] = itertools.product(range(databases), range(schemas))
    async with asyncpg.create_pool(pg.dsn(), min_size=workers, max_size=workers) as pool:
        repository = DatabaseRepository(pool, cipher)

        async def worker() -> None:
            for d, i in pairs:  # shared iterator: each pair is taken once
                spec = DatabaseCreate.model_validate(
                    {
                        "name": target_name(d, i),
                        "host": "127.0.0.1",
                        "port": pg.port,
                        "database": f"tf_{d}",
                        "schema": f"s{i}",
                        "user": "postgres",
                        "password": pg.password,
                        "labels": {"bench": label},
                    }
                )
                await repository.create(spec)

        await asyncio.gather(*(worker() for _ in range(workers)))


def largest_payload(message: Message) -> int:
    """The size of the biggest Payload(s) anywhere inside ``message``."""
    if message.DESCRIPTOR.full_name in PAYLOAD_TYPES:
        return message.ByteSize()
    largest = 0
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            largest = max(largest, largest_payload(item))
    return largest


async def read_chain(address: str, workflow_id: str) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Every history of a run's continue-as-new chain, walked back from the latest run through
    each start event's ``continued_execution_run_id``: (runs listed by visibility, runs walked,
    (events, bytes, largest payload) per history)."""
    client = await Client.connect(address)
    listed = [e async for e in client.list_workflows(f"WorkflowId = '{workflow_id}'")]
    histories: list[tuple[int, int, int]] = []
    run_id: str | None = None
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        history = await handle.fetch_history()
        events = history.events
        histories.append(
            (
                len(events),
                sum(event.ByteSize() for event in events),
                max(largest_payload(event) for event in events),
            )
        )
        started = events[0].workflow_execution_started_event_attributes
        if not started.continued_execution_run_id:
            return len(listed), len(histories), histories
        run_id = started.continued_execution_run_id


async def check_ledgers(
    pg: EmbeddedPostgres, databases: int, schemas: int, versions: list[str], run_id: str
) -> list[str]:
    """Problems found in the ledgers of LEDGERS_CHECKED random tenantflow schemas: each must
    hold every version once, successful, written by this run."""
    problems: list[str] = []
    picked = random.sample(range(databases * schemas), min(LEDGERS_CHECKED, databases * schemas))
    for n in picked:
        d, i = divmod(n, schemas)
        conn = await asyncpg.connect(pg.dsn(f"tf_{d}"))
        try:
            rows = await conn.fetch(
                f"SELECT version, success, run_id FROM {ledger_name(f's{i}')} ORDER BY version"  # noqa: S608 - quoted
            )
        finally:
            await conn.close()
        found = sorted(r["version"] for r in rows)
        if found != sorted(versions) or not all(
            r["success"] and r["run_id"] == run_id for r in rows
        ):
            problems.append(f"tf_{d}.s{i}: {[tuple(r) for r in rows]}")
    return problems


def latency_line(key: str, seconds: list[float], clients: str) -> str:
    if not seconds:
        return f"{key}: no answers"
    ms = [1000 * s for s in seconds]
    return (
        f"{key}: {len(ms)} requests, {clients}: p50 {percentile(ms, 0.5):.1f} ms, "
        f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
    )


async def main(options: argparse.Namespace) -> None:
    databases, schemas = options.databases, options.schemas_per_database
    n, c, b = databases * schemas, options.concurrency, options.batch_size
    pc = options.plain_concurrency or c
    files = migration_files(options.set)
    migrations = parse_files(files)
    versions = [m.version for m in migrations]
    work_dir = Path(tempfile.mkdtemp(prefix="tenantflow-scale-"))
    # Plain asyncpg holds ``c`` connections; tenantflow's batches, pools and slot sessions more.
    pg = EmbeddedPostgres(work_dir / "pg", free_port(), max_connections=max(c, pc) + 200)
    temporal = TemporalDevServer(work_dir / "temporal", free_port(), None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    threads: list[Server] = []
    try:
        pg.start()
        temporal.start()
        # bench.fleet's timings then print the CPU seconds each process used: on a shared
        # machine wall time swings with the neighbours' load, a run's CPU much less.
        stack.USAGE = usage = Usage(
            {
                "postgres": lambda: postmaster_pid(pg),
                "temporal": lambda: temporal.process.pid if temporal.process else None,
                "worker": lambda: processes["worker"].pid if "worker" in processes else None,
                "gateway": lambda: processes["gateway"].pid if "gateway" in processes else None,
            }
        )
        print(
            f"{n} schema targets in {databases} databases (set {options.set}, "
            f"{len(migrations)} versions), concurrency {c}, batch {b}",
            flush=True,
        )
        # As in bench.fleet: autovacuum would land on whichever contender is running.
        await run_sql(
            pg, "postgres", ["ALTER SYSTEM SET autovacuum = off", "SELECT pg_reload_conf()"]
        )
        t0 = time.perf_counter()
        await create_schemas(pg, ["plain", "tf"], databases, schemas)
        print(
            f"(setup: {2 * databases} databases, {2 * n} schemas in "
            f"{time.perf_counter() - t0:.1f} s, not timed)",
            flush=True,
        )
        base_url, headers = await start_tenantflow(pg, temporal, work_dir, processes, threads)
        worker_pid = processes["worker"].pid
        label = uuid.uuid4().hex[:8]
        t0 = time.perf_counter()
        await register_targets(pg, databases, schemas, label)
        print(
            f"(registration: {n} targets through DatabaseRepository.create on a pool of 16 "
            f"(the gateway has no bulk route) in {time.perf_counter() - t0:.1f} s, not timed)",
            flush=True,
        )

        async def plain() -> None:
            pairs = itertools.product(range(databases), range(schemas))

            async def worker() -> None:
                for d, i in pairs:  # shared iterator: ``pc`` schemas in flight
                    args = connect_args(pg, f"plain_{d}", f"s{i}", schemas=True)
                    await apply_plain(args, migrations)

            await asyncio.gather(*(worker() for _ in range(pc)))

        await run_sql(pg, "postgres", ["CHECKPOINT"])
        before = usage.snapshot()
        plain_seconds = await timed("plain asyncpg", plain)
        plain_cpu = cpu_spent(before, usage.snapshot(), ("postgres", "bench"))

        latencies: dict[str, list[float]] = {SUMMARY: [], FULL: [], HEALTH: []}
        failures: dict[str, int] = dict.fromkeys(latencies, 0)
        rss: list[float] = []
        run: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as api:
            registered = await api.post(
                "/api/v1/migration-sets", json={"name": "scale", "files": files}
            )
            registered.raise_for_status()
            # Clients exist before the timing: building one blocks the loop for milliseconds.
            polled = [(SUMMARY, {"targets": "none"})] * options.pollers
            polled += [(FULL, {}), (HEALTH, {})]
            viewers = [
                httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) for _ in polled
            ]

            async def poll(
                client: httpx.AsyncClient, key: str, params: dict[str, str], stop: asyncio.Event
            ) -> None:
                url = "/health" if key == HEALTH else run["status_url"]
                while not stop.is_set():
                    started = time.perf_counter()
                    try:
                        answer = await client.get(url, params=params)
                        answer.raise_for_status()
                        latencies[key].append(time.perf_counter() - started)
                    except httpx.HTTPError:
                        failures[key] += 1
                    await asyncio.sleep(POLL_SECONDS)

            async def sample(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    rss.append(rss_mb(worker_pid))
                    await asyncio.sleep(SAMPLE_SECONDS)

            async def tenantflow() -> None:
                started = await api.post(
                    "/api/v1/migrations",
                    json={
                        "set": "scale",
                        "selector": {"labels": {"bench": label}},
                        "concurrency": c,
                        "batch_size": b,
                    },
                )
                started.raise_for_status()
                run.update(started.json())
                stop = asyncio.Event()
                tasks = [
                    asyncio.create_task(poll(client, key, params, stop))
                    for client, (key, params) in zip(viewers, polled, strict=True)
                ]
                tasks.append(asyncio.create_task(sample(stop)))
                try:
                    # As a user watches it: the stream ends the moment the run does.
                    async with api.stream(
                        "GET", run["stream_url"], params={"targets": "none"}
                    ) as stream:
                        stream.raise_for_status()
                        async for _line in stream.aiter_lines():
                            pass
                finally:
                    stop.set()
                    await asyncio.gather(*tasks)

            await run_sql(pg, "postgres", ["CHECKPOINT"])
            try:
                before = usage.snapshot()
                tf_seconds = await timed("tenantflow", tenantflow)
                tf_cpu = cpu_spent(before, usage.snapshot(), TF_PROCESSES)
            finally:
                for viewer in viewers:
                    await viewer.aclose()
            state = (await api.get(run["status_url"], params={"targets": "none"})).json()

        counts = state["counts"]
        peak = max([peak_rss_mb(worker_pid), *rss])
        listed, walked, histories = await read_chain(temporal.address, run["workflow_id"])
        problems = await check_ledgers(pg, databases, schemas, versions, run["run_id"])

        print(
            f"\n{n} schema targets in {databases} databases (set {options.set}, "
            f"{len(migrations)} versions), concurrency {c}, batch {b}"
        )
        print(f"plain asyncpg: {plain_seconds:.1f} s (concurrency {pc})")
        print(f"tenantflow: {tf_seconds:.1f} s")
        print(f"tenantflow / plain = {tf_seconds / plain_seconds:.2f}")
        print(
            f"CPU seconds: plain {plain_cpu:.0f} (PostgreSQL + this process), tenantflow "
            f"{tf_cpu:.0f} (PostgreSQL + Temporal + worker + gateway), ratio "
            f"{tf_cpu / plain_cpu:.2f}"
        )
        met = "met" if peak < GOAL_RSS_MB else "NOT met"
        print(f"worker peak RSS = {peak:.0f} MB (goal < {GOAL_RSS_MB} MB: {met})")
        summary_ms = [1000 * s for s in latencies[SUMMARY]]
        if summary_ms:
            p99 = percentile(summary_ms, 0.99)
            met = "met" if p99 < GOAL_P99_MS else "NOT met"
            health = [1000 * s for s in latencies[HEALTH]] or [0.0]
            print(
                f"{SUMMARY}: p50 {percentile(summary_ms, 0.5):.1f} ms, p99 {p99:.1f} ms, "
                f"max {max(summary_ms):.1f} ms over {len(summary_ms)} requests "
                f"(goal p99 < {GOAL_P99_MS} ms: {met}); {HEALTH} p99 "
                f"{percentile(health, 0.99):.1f} ms"
            )
        print(latency_line(FULL, latencies[FULL], "1 client"))
        print(latency_line(HEALTH, latencies[HEALTH], "1 client"))
        if any(failures.values()):
            print(f"failed requests: {failures}")
        events = max(h[0] for h in histories)
        size = max(h[1] for h in histories)
        payload = max(h[2] for h in histories)
        print(
            f"histories: {walked} runs ({listed} listed), at most {events} events and "
            f"{size / 1024 / 1024:.2f} MB each, largest payload {payload / 1024:.0f} KB "
            f"(limits 51,200 events, 50 MB, 2 MB)"
        )
        if events > WARN_EVENTS or size > WARN_BYTES:
            print("WARNING: a history passed Temporal's warning (10,240 events or 10 MB)")
        if events > LIMIT_EVENTS or size > LIMIT_BYTES or payload > LIMIT_PAYLOAD:
            print("FAILED: a history or payload is over Temporal's limits")
        print(f"run counts: {counts}")
        if state["status"] != "completed" or counts.get("succeeded") != n:
            raise SystemExit(f"the run did not migrate every target: {state['status']}")
        if problems:
            raise SystemExit("ledgers not as expected:\n" + "\n".join(problems))
        print(f"ledgers of {LEDGERS_CHECKED} random schemas: every version once, by this run")
    finally:
        stack.USAGE = None
        stop_stack(processes, threads, temporal, pg, work_dir)
        shutil.rmtree(work_dir, ignore_errors=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", type=int, default=100)
    parser.add_argument("--schemas-per-database", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=400, help="targets in flight")
    parser.add_argument("--batch-size", type=int, default=100, help="targets per activity")
    parser.add_argument(
        "--plain-concurrency",
        type=int,
        default=0,
        help="plain asyncpg's connections at once (default: --concurrency)",
    )
    parser.add_argument(
        "--pollers", type=int, default=5, help="clients polling the run's light summary"
    )
    parser.add_argument(
        "--set",
        choices=("light", "core"),
        default="light",
        help="light: a table and an index (2 versions); core: examples/core (6 versions)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
