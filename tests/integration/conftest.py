"""A worker of the test's own, with its metrics endpoint, and a gateway sending runs to it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from cli.stack import free_port
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import ThreadedServer
from worker.main import run_worker


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[tuple[Settings, int]]:
    """A worker of its own (its own task queue and metrics port) and settings for a gateway
    sending runs to it, so the numbers scraped are this test's alone."""
    own = settings.model_copy(
        update={
            "temporal": settings.temporal.model_copy(
                update={"task_queue": f"metrics-{uuid.uuid4().hex[:8]}"}
            ),
            "telemetry": settings.telemetry.model_copy(
                update={"metrics_enabled": True, "worker_metrics_port": free_port()}
            ),
        }
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(own, stop=stop, install_signal_handlers=False))
    yield own, own.telemetry.worker_metrics_port
    stop.set()
    await asyncio.wait_for(task, timeout=60)


@pytest.fixture
def gateway_port(stack: tuple[Settings, int]) -> Iterator[int]:
    port = free_port()
    server = ThreadedServer(create_app(stack[0]), port, lifespan="on")
    server.start()
    yield port
    server.stop()
