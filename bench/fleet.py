"""Fleet rollout benchmark: tenantflow vs plain asyncpg vs a sequential loop, same machine.

    python -m bench.fleet                    # 200 databases
    python -m bench.fleet --schemas --targets 2000
    python -m bench.fleet --noop             # 10,000 up-to-date schema targets, run again

Creates its own embedded PostgreSQL and Temporal server in a temporary directory and one set of
targets per contender, and applies ``examples/core`` in rounds (targets emptied and a checkpoint
taken between rounds, never inside a timing; contenders take turns at running first; autovacuum
is off, as its workers would land on whichever contender happens to be running):

1. plain asyncpg at the same concurrency (the physical limit: PostgreSQL itself),
   and the same with a ledger (the ledger table on first contact, each version's row in its
   transaction: what any tool that records versions pays on top of the limit),
2. a sequential per-target loop (what most teams run today),
3. tenantflow end to end: API -> MigrateFleetWorkflow -> worker -> done, with its metrics on and
   scraped every second (the worker's endpoint and the gateway's ``/metrics``),
4. the same with telemetry off: a second worker and gateway on a task queue of their own
   (``TENANTFLOW_TELEMETRY__METRICS_ENABLED=false``),

and prints each time, the CPU seconds each process used meanwhile, the medians and their
ratios (``telemetry on / off``: 3. over 4., the cost of telemetry), the worker's peak memory,
the run's history size and, with ``--watchers``, the latency of ``GET /api/v1/migrations/{id}``
polled by that many clients during the tenantflow runs.

After the rounds, the fast no-op: tenantflow runs again over its up-to-date targets, against
plain asyncpg connecting to each and reading its ledger at the same concurrency (printed as a
ratio, goal <= 2); ``--noop`` times that run alone over 10,000 schema targets (goal <= 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from temporalio.client import Client

from bench import stack
from bench.stack import (
    SERVICE_CPU,
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
from bench.targets import (
    apply_plain,
    apply_with_ledger,
    connect_args,
    create_targets,
    read_ledger_plain,
    reset_targets,
)
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.migrations.loader import load_directory

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "core"
CONTENDERS = ("plain", "ledger", "seq", "tf", "tfoff")
SCRAPE_SECONDS = 1.0
TELEMETRY_ON, TELEMETRY_OFF = "tenantflow (telemetry on)", "tenantflow (telemetry off)"
PROGRESS = "GET /api/v1/migrations/{id}"


async def main(options: argparse.Namespace) -> None:
    migrations = load_directory(EXAMPLE)
    work_dir = Path(tempfile.mkdtemp(prefix="tenantflow-bench-"))
    pg = EmbeddedPostgres(work_dir / "pg", free_port(), max_connections=400)
    temporal = TemporalDevServer(work_dir / "temporal", free_port(), None)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    threads: list[Server] = []
    try:
        pg.start()
        temporal.start()
        stack.USAGE = Usage(
            {
                "postgres": lambda: postmaster_pid(pg),
                "temporal": lambda: temporal.process.pid if temporal.process else None,
                "worker": lambda: processes["worker"].pid if "worker" in processes else None,
                "gateway": lambda: processes["gateway"].pid if "gateway" in processes else None,
                "worker off": lambda: (
                    processes["worker-off"].pid if "worker-off" in processes else None
                ),
                "gateway off": lambda: (
                    processes["gateway-off"].pid if "gateway-off" in processes else None
                ),
            }
        )
        n, schemas, c = options.targets, options.schemas, options.concurrency
        rounds = options.rounds or (3 if n <= 500 else 1)
        kind = "schemas" if schemas else "databases"
        print(
            f"{n} {kind} x {len(migrations)} migrations, concurrency {c}, "
            f"batch size {options.batch_size} ({options.batch_connections or 'all'} at a time), "
            f"{rounds} round(s), {options.watchers} watcher(s)",
            flush=True,
        )
        # Background work that belongs to no contender: with 600 databases the autovacuum
        # launcher starts a worker every ~0.1 s, landing on whichever contender is running.
        await run_sql(
            pg, "postgres", ["ALTER SYSTEM SET autovacuum = off", "SELECT pg_reload_conf()"]
        )
        t0 = time.perf_counter()
        chosen = [prefix for prefix in CONTENDERS if prefix in options.contenders.split(",")]
        targets = {prefix: await create_targets(pg, prefix, n, schemas) for prefix in chosen}
        print(f"(setup: {len(chosen) * n} {kind} in {time.perf_counter() - t0:.1f} s, not timed)")

        semaphore = asyncio.Semaphore(c)

        async def bounded(name: str) -> None:
            async with semaphore:
                await apply_plain(connect_args(pg, "plain", name, schemas), migrations)

        async def plain() -> None:
            await asyncio.gather(*(bounded(name) for name in targets["plain"]))

        async def bounded_ledger(name: str) -> None:
            async with semaphore:
                await apply_with_ledger(connect_args(pg, "ledger", name, schemas), migrations)

        async def with_ledger() -> None:
            await asyncio.gather(*(bounded_ledger(name) for name in targets["ledger"]))

        async def sequential() -> None:
            for name in targets["seq"]:
                await apply_plain(connect_args(pg, "seq", name, schemas), migrations)

        metrics_port = free_port()
        on = {
            "TENANTFLOW_TEMPORAL__TASK_QUEUE": "bench-telemetry-on",
            "TENANTFLOW_TELEMETRY__METRICS_ENABLED": "true",
            "TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT": str(metrics_port),
        }
        base_url, headers = await start_tenantflow(pg, temporal, work_dir, processes, threads, on)
        off_url, off_headers = "", headers
        if "tfoff" in chosen:
            off = {
                "TENANTFLOW_TEMPORAL__TASK_QUEUE": "bench-telemetry-off",
                "TENANTFLOW_TELEMETRY__METRICS_ENABLED": "false",
            }
            off_url, off_headers = await start_tenantflow(
                pg, temporal, work_dir / "off", processes, threads, off, suffix="-off"
            )
        label = uuid.uuid4().hex[:8]
        # Per polled path: latencies. /health and /api/v1/auth/me, one client each, are the
        # baselines in the same process: what any request costs on this machine meanwhile.
        latencies: dict[str, list[float]] = {}
        sizes: list[int] = [0, 0]
        slowest: list[tuple[float, float, str]] = []
        run_started = [0.0]
        run_ids: list[str] = []
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as api:
            files = {m.source or f"V{m.version}__x.sql": m.up_sql for m in migrations}
            response = await api.post(
                "/api/v1/migration-sets", json={"name": "core", "files": files}
            )
            response.raise_for_status()
            registered = [(name, "tf") for name in targets.get("tf", [])] + [
                (name, "tfoff") for name in targets.get("tfoff", [])
            ]
            for name, prefix in registered:
                body = {
                    "name": name.replace("_", "-"),
                    "host": "127.0.0.1",
                    "port": pg.port,
                    "database": prefix if schemas else name,
                    "user": "postgres",
                    "password": pg.password,
                    "labels": {"bench": f"{label}-{prefix}"},
                }
                if schemas:
                    body["schema"] = name
                (await api.post("/api/v1/databases", json=body)).raise_for_status()

            # Viewers' clients exist before any timing: building one (its TLS context) blocks
            # the loop for milliseconds, which would land in the other viewers' latencies.
            viewers = [
                httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30)
                for _ in range(options.watchers + 2 if options.watchers else 0)
            ]

            async def watch(
                client: httpx.AsyncClient, url: str, stop: asyncio.Event, key: str
            ) -> None:
                """One viewer polling ``url`` on its own connection."""
                while not stop.is_set():
                    started = time.perf_counter()
                    answer = await client.get(url)
                    answer.raise_for_status()
                    took = time.perf_counter() - started
                    latencies.setdefault(key, []).append(took)
                    slowest.append((took, started - run_started[0], key))
                    if key == PROGRESS:
                        sizes[:] = [answer.num_bytes_downloaded, len(answer.content)]
                    await asyncio.sleep(options.watch_interval)

            async def scrape(stop: asyncio.Event) -> None:
                """Prometheus' part: both endpoints read every SCRAPE_SECONDS (15 s is usual)."""
                urls = [f"http://127.0.0.1:{metrics_port}/metrics", f"{base_url}/metrics"]
                async with httpx.AsyncClient(timeout=30) as scraper:
                    while not stop.is_set():
                        for url in urls:
                            (await scraper.get(url)).raise_for_status()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), SCRAPE_SECONDS)

            async def tenantflow() -> None:
                await fleet_run(api, "tf", scraped=True)

            async def tenantflow_off() -> None:
                async with httpx.AsyncClient(
                    base_url=off_url, headers=off_headers, timeout=120
                ) as off:
                    await fleet_run(off, "tfoff", scraped=False)

            async def fleet_run(
                api: httpx.AsyncClient, prefix: str, *, scraped: bool, outcome: str = "succeeded"
            ) -> None:
                started = await api.post(
                    "/api/v1/migrations",
                    json={
                        "set": "core",
                        "selector": {"labels": {"bench": f"{label}-{prefix}"}},
                        "concurrency": c,
                        "batch_size": options.batch_size,
                        "batch_connections": options.batch_connections,
                    },
                )
                started.raise_for_status()
                run = started.json()
                run_ids.append(run["run_id"])
                run_started[0] = time.perf_counter()
                stop = asyncio.Event()
                polled = [(run["status_url"], PROGRESS)] * options.watchers
                if not scraped:
                    polled = []
                elif options.watchers:
                    polled += [
                        ("/health", "GET /health"),
                        ("/api/v1/auth/me", "GET /api/v1/auth/me"),
                    ]
                watchers = [
                    asyncio.create_task(watch(client, url, stop, key))
                    for client, (url, key) in zip(viewers, polled, strict=False)
                ]
                if scraped:
                    watchers.append(asyncio.create_task(scrape(stop)))
                # Watch it as a user would: the stream ends the moment the run does.
                async with api.stream("GET", run["stream_url"]) as stream:
                    stream.raise_for_status()
                    async for _line in stream.aiter_lines():
                        pass
                stop.set()
                await asyncio.gather(*watchers)
                state = (await api.get(run["status_url"])).json()
                counts = state["counts"]
                if state["status"] != "completed" or counts[outcome] != n:
                    raise SystemExit(f"tenantflow run did not migrate every target: {counts}")

            contenders: list[tuple[str, str, Callable[[], Awaitable[None]]]] = [
                ("plain", "plain asyncpg (physical limit)", plain),
                ("ledger", "plain asyncpg + ledger rows", with_ledger),
                ("seq", "sequential loop", sequential),
                ("tf", TELEMETRY_ON, tenantflow),
                ("tfoff", TELEMETRY_OFF, tenantflow_off),
            ]
            contenders = [c for c in contenders if c[0] in chosen]
            times: dict[str, list[float]] = {prefix: [] for prefix in CONTENDERS}
            for round_number in range(rounds):
                if round_number:
                    t1 = time.perf_counter()
                    for prefix in chosen:
                        await reset_targets(pg, prefix, targets[prefix], schemas)
                    print(f"(reset: {time.perf_counter() - t1:.1f} s, not timed)", flush=True)
                print(f"-- round {round_number + 1}", flush=True)
                # Each contender takes each position in turn: no one always runs last.
                shift = round_number % len(contenders)
                for prefix, title, work in contenders[shift:] + contenders[:shift]:
                    times[prefix].append(await timed(title, work))
            for viewer in viewers:
                await viewer.aclose()

            noop: dict[str, list[float]] = {"tf": [], "plain": []}
            if "tf" in chosen and (options.noop or "plain" in chosen):
                # The fast no-op: the same run again over its up-to-date targets, against
                # what plain asyncpg needs to connect to each and read its ledger.
                async def tenantflow_noop() -> None:
                    await fleet_run(api, "tf", scraped=False, outcome="up_to_date")

                async def bounded_read(name: str) -> None:
                    async with semaphore:
                        await read_ledger_plain(connect_args(pg, "tf", name, schemas))

                async def plain_noop() -> None:
                    await asyncio.gather(*(bounded_read(name) for name in targets["tf"]))

                noop_rounds = 1 if options.noop else 3
                for _ in range(noop_rounds):
                    noop["tf"].append(await timed("tenantflow no-op (up to date)", tenantflow_noop))
                    if not options.noop:
                        noop["plain"].append(
                            await timed("plain asyncpg: connect + ledger read", plain_noop)
                        )

        medians = {prefix: statistics.median(times[prefix]) for prefix in chosen}
        names = {
            "plain": "plain",
            "ledger": "plain + ledger",
            "seq": "sequential",
            "tf": "tenantflow",
            "tfoff": "off",
        }
        print("\nmedians: " + ", ".join(f"{names[k]} {v:.2f} s" for k, v in medians.items()))
        for a, b in (
            ("tf", "plain"),
            ("ledger", "plain"),
            ("tf", "ledger"),
            ("seq", "plain"),
            ("tf", "seq"),
        ):
            if a in medians and b in medians:
                label = f"{names[a]} / {names[b]}"
                line = f"{label:<28} = {medians[a] / medians[b]:.2f}"
                if len(times[a]) > 1:
                    # Paired within each round (the two ran seconds apart, the rounds minutes
                    # apart): steadier where the shared machine's speed drifts between rounds.
                    paired = [x / y for x, y in zip(times[a], times[b], strict=True)]
                    line += (
                        f" (per round {', '.join(f'{r:.2f}' for r in paired)}; "
                        f"median {statistics.median(paired):.2f})"
                    )
                print(line)
        if "tf" in medians and "tfoff" in medians:
            ratio = medians["tf"] / medians["tfoff"]
            verdict = "within" if ratio <= 1.05 else "OVER"
            print(f"{'telemetry on / off':<28} = {ratio:.3f} ({verdict} the 1.05 goal)")
            on_cpu = SERVICE_CPU.get(TELEMETRY_ON, [])
            off_cpu = SERVICE_CPU.get(TELEMETRY_OFF, [])
            if on_cpu and off_cpu:
                cpu_ratio = statistics.median(on_cpu) / statistics.median(off_cpu)
                print(
                    f"{'telemetry on / off, CPU':<28} = {cpu_ratio:.3f} (services' CPU seconds: "
                    f"{statistics.median(on_cpu):.1f} / {statistics.median(off_cpu):.1f})"
                )
        if noop["tf"] and noop["plain"]:
            ratio = statistics.median(noop["tf"]) / statistics.median(noop["plain"])
            verdict = "within" if ratio <= 2 else "OVER"
            print(
                f"{'no-op / connect + read':<28} = {ratio:.2f} ({verdict} the 2x goal; "
                f"{n} up-to-date {kind})"
            )
        if noop["tf"] and options.noop:
            took = noop["tf"][0]
            verdict = "within" if took <= 10 else "OVER"
            print(f"{'no-op run':<28} = {took:.2f} s over {n} up-to-date {kind} ({verdict} 10 s)")
        print(f"worker peak memory           = {peak_rss_mb(processes['worker'].pid):.0f} MB")
        client = await Client.connect(temporal.address)
        for run_id in run_ids[-1:]:
            executions = [
                e async for e in client.list_workflows(f"WorkflowId = 'migrate-fleet-{run_id}'")
            ]
            events = 0
            for execution in executions:
                described = await client.get_workflow_handle(
                    execution.id, run_id=execution.run_id
                ).describe()
                events = max(
                    events, described.raw_description.workflow_execution_info.history_length
                )
            print(
                f"history                      = {len(executions)} execution(s) "
                f"(continue-as-new), at most {events} events each (limit 51,200)"
            )
        for key, values in latencies.items():
            ms = [1000 * v for v in values]
            clients = f"{options.watchers} clients" if key == PROGRESS else "1 client"
            print(
                f"{key:<30} {len(ms):5} requests, {clients}: p50 {percentile(ms, 0.5):6.1f} ms, "
                f"p99 {percentile(ms, 0.99):6.1f} ms, max {max(ms):7.1f} ms"
            )
        if slowest:
            worst = sorted(slowest, reverse=True)[:5]
            print(
                "slowest: "
                + ", ".join(f"{1000 * t:.0f} ms at {at:.1f} s ({key})" for t, at, key in worst)
            )
        if sizes[0]:
            print(
                f"last progress answer: {sizes[0] / 1000:.0f} KB on the wire, "
                f"{sizes[1] / 1000:.0f} KB of JSON"
            )
    finally:
        stop_stack(processes, threads, temporal, pg, work_dir)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--schemas", action="store_true", help="schema-per-tenant targets")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument(
        "--batch-connections",
        type=int,
        default=None,
        help="each batch runs this many targets at a time (fewer, longer activities)",
    )
    parser.add_argument(
        "--rounds", type=int, default=0, help="timed rounds (default 3, 1 above 500 targets)"
    )
    parser.add_argument(
        "--watchers", type=int, default=0, help="clients polling the run's progress meanwhile"
    )
    parser.add_argument(
        "--contenders",
        default="plain,ledger,seq,tf,tfoff",
        help="which to time, e.g. tf for a scale run, tf,tfoff for the cost of telemetry",
    )
    parser.add_argument("--watch-interval", type=float, default=0.1, help="each watcher's pause")
    parser.add_argument(
        "--noop",
        action="store_true",
        help="the no-op at scale: 10,000 schema targets, batch size 100, concurrency 400 (unless "
        "given), tenantflow only, applied once and run again up to date, printing the total",
    )
    options = parser.parse_args(argv)
    if options.noop:
        options.schemas = True
        options.contenders = "tf"
        options.rounds = 1
        given = argv if argv is not None else sys.argv
        # A fleet of this size runs with full batches: up to date, a batch is one connection
        # and one ledger query per database, so the run's cost is its activities.
        for flag, attribute, value in (
            ("--targets", "targets", 10_000),
            ("--batch-size", "batch_size", 100),
            ("--concurrency", "concurrency", 400),
        ):
            if flag not in given:
                setattr(options, attribute, value)
    return options


if __name__ == "__main__":
    asyncio.run(main(parse()))
