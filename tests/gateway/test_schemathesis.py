"""schemathesis against a running gateway: no 5xx, and every response as the OpenAPI schema says.

``schemathesis run`` (the CLI, as a user or CI runs it) fuzzes every operation of
``/openapi.json`` served by a real gateway (uvicorn on a real port, real PostgreSQL and Temporal,
a worker), authenticated with a token holding every permission. The gateway has a catalog
database and a task queue of its own: what the fuzzer registers (targets on made-up hosts,
servers, sets, webhooks, runs) never reaches the catalog other tests share, and only this
test's worker runs it.

No operation is excluded: none stops or damages the stack it runs on. The deprovision route
drops only databases of tenants this gateway provisioned, and a fleet run only touches targets
of this catalog, which the fuzzer made up. Three listings skip only the coverage phase (CONFIG).

docs/security.md records the figures of a run (operations, cases, failures found and fixed).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.settings import Settings
from common.temporal_client import connect_temporal
from gateway.app import create_app
from tests.conftest import ThreadedServer, Tokens, make_settings
from tests.pollers import wait_for_pollers
from worker.main import run_worker

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Bounded and reproducible: at most this many generated cases per operation and phase, from
# one seed, so a failure found once is found again.
MAX_EXAMPLES = 10
SEED = 14
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# Stateful testing needs OpenAPI links between operations; the schema declares none, so that
# phase would only repeat the fuzzing phase's single requests.
PHASES = "examples,coverage,fuzzing"
RUN_SECONDS = 280
# The coverage phase's boundary cases send the visibility listings dozens of page cursors Temporal
# cannot read; each such answer (400) takes about 9 s while the SDK retries Temporal's refusal
# (gateway/visibility.py), 320 s of the run in all. Those three operations keep the fuzzing
# phase (cursors included), only their coverage phase is off.
CONFIG = """\
[[operations]]
include-path-regex = "^/api/v1/(migrations|events|webhooks/\\\\{webhook_id\\\\}/deliveries)$"
include-method = "GET"
phases.coverage.enabled = false
"""


@dataclass
class OwnGateway:
    """A gateway and a worker on a catalog database and a task queue of their own."""

    settings: Settings
    url: str
    catalog_dsn: str


@contextlib.asynccontextmanager
async def start_own_gateway(
    postgres: EmbeddedPostgres, settings: Settings
) -> AsyncIterator[OwnGateway]:
    """A gateway (uvicorn on a real port) and an in-process worker on a new catalog database
    and task queue; the database is dropped afterwards."""
    name = f"sec_{uuid.uuid4().hex[:10]}"
    await postgres.create_database(name)
    dsn = postgres.dsn(name)
    # A Temporal server of its own too: the fuzzer reads run ids from the run listing, and the
    # shared server's runs of earlier tests (their workers gone) answer 503 "no poller seen".
    work = Path(tempfile.mkdtemp(prefix="sec-temporal-"))
    temporal = TemporalDevServer(work, free_port(), None)
    await asyncio.to_thread(temporal.start)
    own = make_settings(
        postgres,
        temporal.address,
        auth=settings.auth,
        catalog={"dsn": dsn, "startup_retry_seconds": 5},
        # Fuzzing sends hundreds of requests per route and many failed password logins: the
        # limits stay on, high enough that the routes themselves answer.
        rate_limit={
            "per_subject": "100000/minute",
            "auth_endpoints": "100000/minute",
            "failed_auth": "100000/minute",
        },
    )
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(own, stop=stop, install_signal_handlers=False))
    port = free_port()
    server = ThreadedServer(create_app(own), port, lifespan="on")
    try:
        # In a thread: this loop keeps running the worker while the gateway starts.
        await asyncio.to_thread(server.start)
        # Runs the fuzzer starts are queried at once: the worker must poll first (a query to a
        # queue nobody polls is a 503 "no poller seen", a worker that died is its traceback).
        await wait_for_pollers(
            await connect_temporal(own.temporal),
            own.temporal.task_queue,
            alive=lambda: not worker.done(),
            why=lambda: repr(worker.exception()) if worker.done() else "still starting",
        )
        yield OwnGateway(own, f"http://127.0.0.1:{port}", dsn)
    finally:
        await asyncio.to_thread(server.stop)
        stop.set()
        # Activities still connecting to made-up hosts are abandoned after a while.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker, timeout=30)
        admin = await asyncpg.connect(postgres.dsn("postgres"))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
            await asyncio.to_thread(temporal.stop)
            shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
async def own_gateway(postgres: EmbeddedPostgres, settings: Settings) -> AsyncIterator[OwnGateway]:
    """The test's own gateway and worker."""
    async with start_own_gateway(postgres, settings) as gateway:
        yield gateway


def summary(output: str) -> str:
    """The lines of the CLI's closing summary (from its '=' rule on), or the last 60 lines."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"^=+ (SUMMARY|FAILURES)", line.strip()):
            return "\n".join(lines[index:])
    return "\n".join(lines[-60:])


@pytest.mark.timeout(RUN_SECONDS + 60)
async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    own_gateway: OwnGateway, tokens: Tokens, tmp_path: Path
) -> None:
    token = tokens.issuer.mint(
        subject="schemathesis", roles=["infra-admin"], lifetime_seconds=RUN_SECONDS + 600
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    argv = [
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"{own_gateway.url}/openapi.json",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        PHASES,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-deterministic",
        # One worker: with two threads, hypothesis' lambda descriptions call ast.parse at once,
        # which CPython 3.11 does not make thread-safe ("AST constructor recursion depth
        # mismatch", a runtime error of the fuzzer's own, seen in a full run).
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--no-color",
        "--header",
        f"Authorization: Bearer {token}",
        "--report",
        "junit",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        # Awaited, not blocked on: this loop runs the test's worker meanwhile.
        out, _ = await asyncio.wait_for(process.communicate(), timeout=RUN_SECONDS)
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        (tmp_path / "schemathesis.txt").write_bytes(out)
        raise
    output = out.decode(errors="replace")
    (tmp_path / "schemathesis.txt").write_text(output)
    assert process.returncode == 0, summary(output)
    # Every operation of the schema was tested: none excluded, none skipped.
    selected = re.search(r"Selected: (\d+)/(\d+)", output)
    tested = re.search(r"Tested: (\d+)", output)
    assert selected and tested, summary(output)
    assert int(tested.group(1)) == int(selected.group(1)) == int(selected.group(2)), summary(output)
