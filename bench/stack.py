"""What every benchmark shares: tenantflow's stack started as in production and stopped whatever
happens (``start_tenantflow``, ``stop_stack``, uvicorn in a thread), the CPU seconds each process
used during a timing (``Usage``, ``timed``), and the figures printed (``percentile``,
``peak_rss_mb``). ``bench.fleet``, ``bench.scale``, ``bench.adopt`` and ``bench.provision`` build
on it."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import uvicorn

from cli.dev_issuer import DevIssuer
from cli.dev_issuer_app import create_issuer_app
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.settings import DEV_REALM

ROOT = Path(__file__).resolve().parents[1]


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


async def run_sql(pg: EmbeddedPostgres, database: str, statements: Iterable[str]) -> None:
    """Each statement in turn on one connection to ``database`` (setup, resets: never timed)."""
    conn = await asyncpg.connect(pg.dsn(database))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def postmaster_pid(pg: EmbeddedPostgres) -> int | None:
    try:
        return int((pg.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | None) -> float:
    """CPU seconds of a process and its reaped children (PostgreSQL's backends are reaped by
    the postmaster), 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / TICK


def machine_cpu() -> tuple[float, float]:
    """(busy, idle) CPU seconds of the whole machine so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / TICK, idle / TICK


class Usage:
    """Who used the CPU during one timing: PostgreSQL, Temporal, the worker, this process."""

    def __init__(self, pids: dict[str, Callable[[], int | None]]) -> None:
        self.pids = pids

    def snapshot(self) -> dict[str, float]:
        taken = {name: process_cpu(pid()) for name, pid in self.pids.items()}
        taken["bench"] = process_cpu(os.getpid())
        taken["machine busy"], taken["machine idle"] = machine_cpu()
        return taken

    @staticmethod
    def report(before: dict[str, float], after: dict[str, float]) -> str:
        return ", ".join(f"{name} {after[name] - before[name]:.1f}" for name in before)


USAGE: Usage | None = None


# Per timing label: CPU seconds of the services (PostgreSQL, Temporal, workers, gateways). On a
# shared machine wall time swings with the neighbours' load; the CPU a run costs does not.
SERVICE_CPU: dict[str, list[float]] = {}


SERVICES = ("postgres", "temporal", "worker", "gateway", "worker off", "gateway off")


async def timed(label: str, work: Callable[[], Awaitable[None]]) -> float:
    before = USAGE.snapshot() if USAGE else None
    started = time.perf_counter()
    await work()
    elapsed = time.perf_counter() - started
    print(f"{label:<34} {elapsed:8.2f} s", flush=True)
    if USAGE and before:
        after = USAGE.snapshot()
        print(f"    CPU s: {Usage.report(before, after)}", flush=True)
        used = sum(after[name] - before[name] for name in SERVICES if name in before)
        SERVICE_CPU.setdefault(label, []).append(used)
    return elapsed


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def wait_for_http(url: str, process: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer within {seconds} s")


async def start_tenantflow(
    pg: EmbeddedPostgres,
    temporal: TemporalDevServer,
    work_dir: Path,
    processes: dict[str, subprocess.Popen[bytes]],
    threads: list[Server],
    env: dict[str, str] | None = None,
    suffix: str = "",
) -> tuple[str, dict[str, str]]:
    """tenantflow as in production: the dev issuer in a thread, worker and gateway in processes
    of their own (added to ``threads`` and ``processes`` as they start, for the caller to stop
    whatever happens, as ``worker{suffix}`` and ``gateway{suffix}``); ``env``: settings of the
    benchmark's own. Returns the gateway's URL, once
    ready, and an admin's headers."""
    issuer_port, gateway_port = free_port(), free_port()
    issuer = DevIssuer(work_dir / "issuer", f"http://127.0.0.1:{issuer_port}/realms/{DEV_REALM}")
    issuer_server = Server(create_issuer_app(issuer, DEV_REALM), issuer_port, lifespan="off")
    threads.append(issuer_server)
    issuer_server.begin()
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    env.update(
        {
            "TENANTFLOW_CATALOG__DSN": pg.dsn(),
            "TENANTFLOW_TEMPORAL__ADDRESS": temporal.address,
            "TENANTFLOW_AUTH__ISSUER_URL": issuer.issuer_url,
            "TENANTFLOW_GATEWAY__PORT": str(gateway_port),
            "TENANTFLOW_RATE_LIMIT__ENABLED": "false",
            "TENANTFLOW_LOG__LEVEL": "WARNING",
            "TENANTFLOW_LOG__ACCESS_LOG": "false",
            # No scheduled fleet health sweeps: every 5 minutes one would check every target the
            # bench registered (8,000 schemas at --schemas --targets 2000) in each stack, and land
            # in whichever contender's timing it overlaps (it took 5x the PostgreSQL CPU of a run).
            "TENANTFLOW_HEALTH__INTERVAL_SECONDS": "0",
            "PYTHONPATH": str(ROOT),
            **extra,
        }
    )
    for role in ("worker", "gateway"):
        processes[role + suffix] = subprocess.Popen(  # noqa: ASYNC220 - started once, untimed
            [sys.executable, "-m", "cli.main", role], env=env
        )
    base_url = f"http://127.0.0.1:{gateway_port}"
    await asyncio.to_thread(
        wait_for_http, f"{base_url}/health/ready", processes["gateway" + suffix]
    )
    token = issuer.mint(subject="bench", roles=["infra-admin"])
    return base_url, {"Authorization": f"Bearer {token}"}


def stop_stack(
    processes: dict[str, subprocess.Popen[bytes]],
    threads: list[Server],
    temporal: TemporalDevServer,
    pg: EmbeddedPostgres,
    work_dir: Path,
) -> None:
    """Stop what ``start_tenantflow`` and a benchmark started, whatever happened: the worker
    and gateway processes (killed if they do not stop within a minute), the issuer thread,
    Temporal and PostgreSQL, then the temporary directory."""
    for process in processes.values():
        process.terminate()
    for process in processes.values():
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    for thread in threads:
        thread.end()
    temporal.stop()
    pg.stop()
    shutil.rmtree(work_dir, ignore_errors=True)
