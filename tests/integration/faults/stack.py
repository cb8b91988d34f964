"""The processes a fault test runs and breaks: ``tenantflow gateway`` and ``tenantflow worker``
as real processes on a task queue no other worker serves, and a TCP proxy in front of the
catalog that can cut it off."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
from temporalio.client import Client

from cli.stack import CATALOG_DATABASE, EmbeddedPostgres, ManagedProcess, free_port
from tests.pollers import wait_for_pollers

ROOT = Path(__file__).resolve().parents[3]


def catalog_dsn(postgres: EmbeddedPostgres, port: int | None = None) -> str:
    """The catalog's DSN, through ``port`` (a proxy) instead of the server's own port."""
    password = quote(postgres.password, safe="")
    return (
        f"postgresql://{postgres.user}:{password}@{postgres.host}:{port or postgres.port}/"
        f"{CATALOG_DATABASE}"
    )


def sigkill(process: ManagedProcess) -> None:
    """SIGKILL the process (no goodbye) and reap it."""
    assert process.process is not None
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.process.pid, signal.SIGKILL)
    process.process.wait(30)


@dataclass
class FaultStack:
    """A gateway and a worker of the test's own; ``catalog`` is the DSN both use."""

    work_dir: Path
    catalog: str
    temporal_address: str
    issuer_url: str
    queue: str = field(default_factory=lambda: f"faults-{uuid.uuid4().hex[:8]}")
    gateway_port: int = field(default_factory=free_port)
    worker: ManagedProcess | None = None
    gateway: ManagedProcess | None = None
    started: list[ManagedProcess] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
        env.update(
            {
                "TENANTFLOW_CATALOG__DSN": self.catalog,
                "TENANTFLOW_TEMPORAL__ADDRESS": self.temporal_address,
                "TENANTFLOW_TEMPORAL__TASK_QUEUE": self.queue,
                "TENANTFLOW_AUTH__ISSUER_URL": self.issuer_url,
                "TENANTFLOW_GATEWAY__PORT": str(self.gateway_port),
                # The status poller alone sends 10 requests a second.
                "TENANTFLOW_RATE_LIMIT__ENABLED": "false",
                "TENANTFLOW_LOG__FORMAT": "console",
                "TENANTFLOW_LOG__ACCESS_LOG": "false",
                "TENANTFLOW_HEALTH__INTERVAL_SECONDS": "0",
                "TENANTFLOW_ALERTS__INTERVAL_SECONDS": "0",
                "PYTHONPATH": str(ROOT),
            }
        )
        return env

    def _spawn(self, role: str) -> ManagedProcess:
        process = ManagedProcess(
            role,
            [sys.executable, "-m", "cli.main", role],
            env=self.env(),
            log_path=self.work_dir / f"{role}.log",
        )
        process.start()
        self.started.append(process)
        return process

    def start_worker(self) -> None:
        self.worker = self._spawn("worker")

    async def start_gateway(self, within: float = 90.0) -> None:
        """Start the gateway and wait until ``/health/ready`` says 200."""
        self.gateway = self._spawn("gateway")
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as http:
            while time.monotonic() < deadline:
                assert self.gateway.running(), f"the gateway exited:\n{self.log_tail('gateway')}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health/ready")).status_code == 200:
                        return
                await asyncio.sleep(0.2)
        tail = self.log_tail("gateway")
        raise AssertionError(f"the gateway was not ready in {within} s:\n{tail}")

    async def wait_worker_polling(self, within: float = 90.0) -> None:
        """Until a worker polls the stack's task queue (the worker process must live)."""
        await wait_for_pollers(
            await Client.connect(self.temporal_address),
            self.queue,
            alive=lambda: self.worker is not None and self.worker.running(),
            why=lambda: self.log_tail("worker"),
            within=within,
        )

    def log_tail(self, role: str, chars: int = 3000) -> str:
        path = self.work_dir / f"{role}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    async def kill(self, process: ManagedProcess | None) -> None:
        assert process is not None
        await asyncio.to_thread(sigkill, process)

    async def stop(self) -> None:
        """Stop every process started (SIGTERM, then SIGKILL), whatever happened."""

        async def stop(process: ManagedProcess) -> None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                await asyncio.to_thread(process.stop, 30)

        await asyncio.gather(*(stop(process) for process in self.started))


class CatalogProxy:
    """A TCP proxy in front of the catalog. ``cut`` closes every relayed connection and stops
    listening (connects are refused: the catalog is unreachable); ``restore`` listens again."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, reuse_address=True
        )

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        self._links.update({client_w, server_w})
        for source, sink in ((client_r, server_w), (server_r, client_w)):
            task = asyncio.create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sink.transport.abort()
            self._links.discard(sink)
