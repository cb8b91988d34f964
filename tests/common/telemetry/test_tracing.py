"""Traces: one rollout, one trace (HTTP request -> workflow -> activities -> SQL), received by an
in-process OTLP/HTTP collector; SQL in spans sanitised; tracing off instruments nothing."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request, Response
from opentelemetry.context import Context, get_current
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import Decision
from pydantic import SecretStr, ValidationError
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from cli.dev_issuer import DevIssuer
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.logging import JsonFormatter
from common.settings import Settings, TelemetrySettings
from common.telemetry.tracing import SqlAwareSampler, parse_headers, sanitize_sql, start_tracing
from gateway.app import create_app
from tests.conftest import (
    LEAK_CANARIES,
    TargetFactory,
    ThreadedServer,
    Tokens,
    auth_settings,
    make_settings,
    serve,
)
from tests.gateway.routers.test_fleet import _fleet, _start_run, _until
from worker.main import run_worker
from worker.registry import WORKFLOWS

HISTORIES = Path(__file__).parents[2] / "workflows" / "histories"
SERVER = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER


# --- an OTLP/HTTP collector in the test process ---------------------------------------------------
@dataclass(frozen=True)
class ReceivedSpan:
    """The parts of an exported span the assertions need (ids in hex, attributes as text)."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]


def _text(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    return "" if kind is None else str(getattr(value, kind))


class Collector:
    """Decodes ``ExportTraceServiceRequest`` protobufs posted to ``/v1/traces``."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self.app = FastAPI()
        self.app.add_api_route("/v1/traces", self._receive, methods=["POST"])

    async def _receive(self, request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest.FromString(body)
        received = []
        for resource_spans in export.resource_spans:
            resource = {a.key: _text(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _text(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self.spans += received
            self.raw.append(body)
            self.headers.append(dict(request.headers))
        return Response(
            ExportTraceServiceResponse().SerializeToString(), media_type="application/x-protobuf"
        )


@pytest.fixture
def collector() -> Iterator[tuple[Collector, str]]:
    """A collector on a free port and its base URL (what ``otlp_endpoint`` takes)."""
    receiver = Collector()
    port = free_port()
    server = ThreadedServer(receiver.app, port)
    server.start()
    yield receiver, f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def traced_settings(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    dev_issuer: DevIssuer,
    collector: tuple[Collector, str],
) -> Settings:
    """The session's services, a task queue of this test's own, traces to the collector."""
    return make_settings(
        postgres,
        temporal_server.address,
        auth=auth_settings(dev_issuer),
        telemetry={
            "traces_enabled": True,
            "otlp_endpoint": collector[1],
            "otlp_headers": "x-collector-key=test-key",
        },
    )


@asynccontextmanager
async def traced_stack(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A traced worker and gateway; leaving the block stops both, which exports their spans."""
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stop=stop, install_signal_handlers=False))
    try:
        async for client in serve(create_app(settings)):
            yield client
    finally:
        stop.set()
        await asyncio.wait_for(worker, timeout=60)


async def test_one_rollout_is_one_trace_from_request_to_sql(
    traced_settings: Settings,
    collector: tuple[Collector, str],
    tokens: Tokens,
    make_target: TargetFactory,
    temporal_client: Client,
) -> None:
    lines = io.StringIO()
    handler = logging.StreamHandler(lines)
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger("tenantflow.access")
    access.addHandler(handler)
    try:
        async with traced_stack(traced_settings) as http:
            label, set_name, _ = await _fleet(http, tokens, make_target, 3)
            operator = tokens.headers("infra-operator")
            run = await _start_run(http, operator, set_name, label, concurrency=2, batch_size=1)
            state = await _until(
                http, run["status_url"], operator, lambda p: p["status"] == "completed", 300
            )
            assert state["status"] == "completed"
    finally:
        access.removeHandler(handler)

    assert not _asyncpg_instrumented()  # both processes stopped: nothing left patched
    receiver = collector[0]
    spans = receiver.spans
    request = [
        s for s in spans if s.kind == SERVER and s.name.startswith("POST /api/v1/migrations")
    ]
    assert len(request) == 1, sorted({s.name for s in spans if s.kind == SERVER})
    trace = {s.span_id: s for s in spans if s.trace_id == request[0].trace_id}
    names = {s.name for s in trace.values()}
    assert {
        "StartWorkflow:MigrateFleetWorkflow",
        "RunWorkflow:MigrateFleetWorkflow",
        "RunActivity:resolve_targets",
        "RunActivity:run_target_batch",
    } <= names, sorted(names)
    # Every activity of the run is in that one trace (three targets, one batch each).
    ours = [
        s
        for s in spans
        if s.name.startswith("RunActivity:")
        and s.attributes.get("temporalWorkflowID", "").startswith(run["workflow_id"])
    ]
    assert ours and {s.trace_id for s in ours} == {request[0].trace_id}
    assert sum(s.name == "RunActivity:run_target_batch" for s in ours) >= 3
    # Linked, not merely stamped with the same id: the workflow's start hangs under the request.
    start = next(s for s in trace.values() if s.name == "StartWorkflow:MigrateFleetWorkflow")
    assert request[0].span_id in _ancestors(trace, start.span_id)
    # SQL under the activities: the catalog query resolving targets, the targets' migrations.
    sql = [s for s in trace.values() if s.attributes.get("db.system") == "postgresql"]
    parents = {trace[s.parent_id].name for s in sql if s.parent_id in trace}
    assert {"RunActivity:resolve_targets", "RunActivity:run_target_batch"} <= parents, parents
    assert any("CREATE TABLE a" in s.attributes.get("db.statement", "") for s in sql)
    assert {s.service for s in trace.values()} <= {"tenantflow-gateway", "tenantflow-worker"}
    assert not any(
        s.attributes.get("db.statement", "").startswith("SELECT pg_advisory_unlock_all")
        for s in spans
    )  # asyncpg's pool resets are dropped
    # The request's JSON access line names the request's trace and span.
    started = [
        entry
        for entry in map(json.loads, lines.getvalue().splitlines())
        if entry["message"] == "POST /api/v1/migrations 202"
    ]
    assert [(e["trace_id"], e["span_id"]) for e in started] == [
        (request[0].trace_id, request[0].span_id)
    ]
    # No parameters recorded, no password anywhere in what left the process.
    assert not any("db.statement.parameters" in s.attributes for s in spans)
    exported = b"".join(receiver.raw)
    assert [c for c in LEAK_CANARIES if c.encode() in exported] == []
    assert {h.get("x-collector-key") for h in receiver.headers} == {"test-key"}

    # The traced run's history (trace context in its headers) replays on workers with tracing
    # on and off: turning tracing on or off needs no versioning.
    history = await temporal_client.get_workflow_handle(run["workflow_id"]).fetch_history()
    for interceptors in ([], [TracingInterceptor(TracerProvider().get_tracer("replay"))]):
        replayer = Replayer(
            workflows=list(WORKFLOWS),
            data_converter=pydantic_data_converter,
            interceptors=interceptors,
        )
        await replayer.replay_workflow(history)


def _asyncpg_instrumented() -> bool:
    return hasattr(asyncpg.Connection.execute, "__wrapped__")


def _ancestors(trace: dict[str, ReceivedSpan], span_id: str) -> list[str]:
    chain: list[str] = []
    while span_id in trace and trace[span_id].parent_id:
        span_id = trace[span_id].parent_id
        chain.append(span_id)
    return chain


# --- pieces --------------------------------------------------------------------------------------
def test_tracing_is_off_unless_configured() -> None:
    assert start_tracing(TelemetrySettings(), "worker") is None
    # Off means not instrumented at all: no middleware, no patched asyncpg.
    app = create_app(Settings(_env_file=None))
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert not _asyncpg_instrumented()
    with pytest.raises(ValidationError, match="needs otlp_endpoint"):
        TelemetrySettings(traces_enabled=True)
    with pytest.raises(ValidationError, match="http"):
        TelemetrySettings(otlp_endpoint="grpc://collector:4317")


def test_headers_parse_like_otel_exporter_otlp_headers() -> None:
    raw = SecretStr("api-key=abc, x-team = infra ,broken")
    assert parse_headers(raw) == {"api-key": "abc", "x-team": "infra"}
    assert parse_headers(None) == {}


def test_sql_outside_a_trace_and_pool_resets_are_not_sampled() -> None:
    sampler = SqlAwareSampler(1.0)
    provider = TracerProvider(sampler=sampler)
    with provider.get_tracer("test").start_as_current_span("RunActivity:x") as parent:
        inside = get_current()
        assert parent.is_recording()

    def sampled(sampler: SqlAwareSampler, context: Context | None, statement: str = "") -> bool:
        sql = {"db.system": "postgresql", "db.statement": statement} if statement else None
        decision = sampler.should_sample(context, 1, "span", attributes=sql).decision
        return decision is Decision.RECORD_AND_SAMPLE

    assert sampled(sampler, inside, "SELECT 1")
    assert not sampled(sampler, inside, "SELECT pg_advisory_unlock_all();\nRESET ALL;")
    assert not sampled(sampler, None, "SELECT 1")  # no request or activity around it
    assert sampled(sampler, None)
    assert not sampled(SqlAwareSampler(0.0), None)


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            "ALTER ROLE \"t\" WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$x:y'",
            "ALTER ROLE \"t\" WITH LOGIN PASSWORD '?'",
        ),
        ("SELECT $1::text, 'it''s' AS a", "SELECT $1::text, '?' AS a"),
        ("SELECT E'a\\'b', e'x' FROM t", "SELECT '?', '?' FROM t"),
        ("SELECT \"it's\" FROM t WHERE x = 'secret'", "SELECT \"it's\" FROM t WHERE x = '?'"),
        ("-- it's a comment\nSELECT 'v'", "-- it's a comment\nSELECT '?'"),
        (
            "CREATE FUNCTION f() RETURNS text AS $body$ SELECT 'inner' $body$ LANGUAGE sql",
            "CREATE FUNCTION f() RETURNS text AS $body$ SELECT '?' $body$ LANGUAGE sql",
        ),
        ("DO $$ BEGIN PERFORM 'x'; END $$", "DO $$ BEGIN PERFORM '?'; END $$"),
        ("SELECT 'unterminated", "SELECT '?'"),
        (
            "SELECT dblink_connect(x) -- postgresql://u:pw@h/db",
            "SELECT dblink_connect(x) -- postgresql://u:***@h/db",
        ),
        ("SELECT a$1$ FROM t", "SELECT a$1$ FROM t"),
    ],
)
def test_sql_literals_never_reach_a_span(statement: str, expected: str) -> None:
    assert sanitize_sql(statement) == expected


async def test_committed_histories_replay_with_the_tracing_interceptor() -> None:
    """A worker with tracing on replays every recorded history: the interceptor adds headers
    and spans, never commands."""
    interceptor = TracingInterceptor(TracerProvider().get_tracer("replay"))
    replayer = Replayer(
        workflows=list(WORKFLOWS),
        data_converter=pydantic_data_converter,
        interceptors=[interceptor],
    )
    histories = [
        WorkflowHistory.from_json(path.stem, path.read_text())
        for path in sorted(HISTORIES.glob("*.json"))
    ]
    assert histories

    # One replay worker for all of them (one per history would cost seconds each).
    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    results = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    assert {run: str(error) for run, error in results.replay_failures.items()} == {}
