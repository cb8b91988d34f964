"""Traces: one trace from the HTTP request through the workflow to each activity and its SQL.

The gateway's FastAPI app, both sides of the Temporal client (Temporal's ``TracingInterceptor``
carries the trace context in workflow and activity headers) and asyncpg are instrumented, and
spans go to an OTLP/HTTP collector. Nothing is instrumented, and nothing costs anything, unless
``TENANTFLOW_TELEMETRY__TRACES_ENABLED`` is on.

The process-wide OpenTelemetry tracer provider is left alone: every instrumentation gets our
provider explicitly, so a process (or a test session) can start and stop tracing, and another
library's global provider never changes where our spans go.

SQL in spans is sanitised before any exporter sees it: quoted literals become ``'?'`` (a role's
password or verifier is only ever a literal: DDL takes no parameters), parameters are never
recorded, and long statements are truncated. Connection setup, where asyncpg sends passwords, is
not traced at all.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from typing import Literal

from fastapi import FastAPI
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes
from pydantic import SecretStr
from temporalio.client import Interceptor
from temporalio.contrib.opentelemetry import TracingInterceptor

from common.logging import redact_text
from common.settings import TelemetrySettings
from common.version import __version__

log = logging.getLogger(__name__)

Component = Literal["gateway", "worker"]

# Attributes asyncpg's instrumentation fills with the statement (old and new conventions).
SQL_ATTRIBUTES = ("db.statement", "db.query.text")
# Long enough for any statement tenantflow writes; a migration script is cut, not shipped whole.
MAX_ATTRIBUTE_LENGTH = 4096
# Health probes and scrapes would drown the traces that matter.
EXCLUDED_URLS = r"^https?://[^/]+/(health|metrics)(/|\?|$)"


class Tracing:
    """One process's tracing: its provider, the Temporal interceptor and the instrumentation.

    Built by :func:`start_tracing`; ``shutdown`` flushes what is buffered and removes the
    instrumentation this object installed.
    """

    def __init__(self, settings: TelemetrySettings, component: Component) -> None:
        assert settings.otlp_endpoint is not None  # TelemetrySettings refuses it otherwise
        self.provider = TracerProvider(
            resource=Resource.create(
                {
                    "service.name": settings.service_name or f"tenantflow-{component}",
                    "service.version": __version__,
                    "tenantflow.component": component,
                }
            ),
            sampler=SqlAwareSampler(settings.trace_sample_ratio),
            span_limits=SpanLimits(max_attribute_length=MAX_ATTRIBUTE_LENGTH),
            # Shut down by ``shutdown``; an exit hook per provider would pile up in test sessions.
            shutdown_on_exit=False,
        )
        # Sanitising runs first, when the span starts, so no processor ever holds the raw SQL.
        self.provider.add_span_processor(SanitizeSql())
        self.provider.add_span_processor(
            BatchSpanProcessor(
                OTLPSpanExporter(
                    endpoint=settings.otlp_endpoint.rstrip("/") + "/v1/traces",
                    headers=parse_headers(settings.otlp_headers),
                    timeout=settings.otlp_timeout_seconds,
                )
            )
        )
        tracer = self.provider.get_tracer("tenantflow.temporal", __version__)
        self.interceptor = TracingInterceptor(tracer)
        self._sql = _instrument_asyncpg(self.provider)
        self._closed = False

    @property
    def interceptors(self) -> Sequence[Interceptor]:
        """For ``connect_temporal``: a client with them carries the trace into workflows, and a
        worker built on that client continues it in workflows and activities."""
        return (self.interceptor,)

    def instrument_app(self, app: FastAPI) -> None:
        """A server span per HTTP request (not per ASGI message), probes excluded."""
        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.provider,
            # Traces only: metrics are common/telemetry/metrics.py's business.
            meter_provider=NoOpMeterProvider(),
            excluded_urls=EXCLUDED_URLS,
            exclude_spans=["receive", "send"],
        )

    async def shutdown(self) -> None:
        """Export what is buffered (off the event loop: the exporter blocks) and uninstrument."""
        if self._closed:
            return
        self._closed = True
        if self._sql:
            _uninstrument_asyncpg()
        await asyncio.to_thread(self.provider.shutdown)


def start_tracing(settings: TelemetrySettings, component: Component) -> Tracing | None:
    """Tracing for this process when configured, else ``None`` (and nothing is instrumented)."""
    if not settings.traces_enabled:
        return None
    tracing = Tracing(settings, component)
    log.info(
        "tracing on",
        extra={
            "otlp_endpoint": redact_text(settings.otlp_endpoint or ""),
            "sample_ratio": settings.trace_sample_ratio,
        },
    )
    return tracing


def parse_headers(raw: SecretStr | None) -> dict[str, str]:
    """``key=value,key2=value2`` (the ``OTEL_EXPORTER_OTLP_HEADERS`` format) as a dict."""
    if raw is None:
        return {}
    headers: dict[str, str] = {}
    for pair in raw.get_secret_value().split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[key.strip()] = value.strip()
    return headers


# --- SQL ------------------------------------------------------------------------------------------
# asyncpg's instrumentation patches asyncpg's classes, so it is process-wide: the first tracing
# object installs it, the last one to shut down removes it (a test runs a gateway and a worker in
# one process; a deployed process has one).
_sql_users = 0


def _instrument_asyncpg(provider: TracerProvider) -> bool:
    global _sql_users
    if _sql_users == 0:
        # capture_parameters stays False: values (passwords included) never reach a span.
        AsyncPGInstrumentor(capture_parameters=False).instrument(  # type: ignore[no-untyped-call]
            tracer_provider=provider
        )
    _sql_users += 1
    return True


def _uninstrument_asyncpg() -> None:
    global _sql_users
    _sql_users -= 1
    if _sql_users == 0:
        AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]


class SanitizeSql(SpanProcessor):
    """Replaces the statement of every SQL span by :func:`sanitize_sql` as the span starts."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        del parent_context
        for key in SQL_ATTRIBUTES:
            value = (span.attributes or {}).get(key)
            if isinstance(value, str):
                span.set_attribute(key, sanitize_sql(value))

    def on_end(self, span: ReadableSpan) -> None:
        del span


# What asyncpg's pool runs on every release (the lines depend on the server's capabilities):
# one span per checkout would double the SQL in every trace and say nothing.
_POOL_RESET_LINES = frozenset(
    {"SELECT pg_advisory_unlock_all();", "CLOSE ALL;", "UNLISTEN *;", "RESET ALL;"}
)


class SqlAwareSampler(Sampler):
    """Parent-based sampling by ratio, minus the SQL nobody can use: a statement outside any
    request or activity (a one-span trace nobody can place) and asyncpg's pool resets."""

    def __init__(self, ratio: float) -> None:
        self._sampler = ParentBased(root=TraceIdRatioBased(ratio))
        self._ratio = ratio

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if attributes and ("db.system" in attributes or "db.system.name" in attributes):
            statement = attributes.get("db.statement", attributes.get("db.query.text"))
            orphan = not get_current_span(parent_context).get_span_context().is_valid
            if orphan or (
                isinstance(statement, str) and set(statement.split("\n")) <= _POOL_RESET_LINES
            ):
                return SamplingResult(Decision.DROP)
        return self._sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"SqlAware{{ParentBased{{TraceIdRatioBased{{{self._ratio}}}}}}}"


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def sanitize_sql(statement: str) -> str:
    """``statement`` with every quoted literal replaced by ``'?'``.

    A small scanner rather than a regex, so a quote inside an identifier (``"it's"``) or a
    comment cannot shift what counts as a literal. Dollar-quoted bodies (function code) are kept
    and sanitised in turn; what is left goes through the log redaction (URLs with passwords,
    ``password=`` pairs) as a last net.
    """
    out: list[str] = []
    i, n = 0, len(statement)
    while i < n:
        c = statement[i]
        if c == "'" or (
            c in "eE" and statement[i + 1 : i + 2] == "'" and _starts_word(statement, i)
        ):
            backslash = c != "'"
            j = i + (2 if backslash else 1)
            while j < n:
                if backslash and statement[j] == "\\":
                    j += 2
                    continue
                if statement[j] == "'":
                    if statement[j + 1 : j + 2] == "'":
                        j += 2
                        continue
                    break
                j += 1
            out.append("'?'")
            i = j + 1
        elif c == '"':
            j = statement.find('"', i + 1)
            j = n - 1 if j < 0 else j
            out.append(statement[i : j + 1])
            i = j + 1
        elif c == "-" and statement.startswith("--", i):
            j = statement.find("\n", i)
            j = n if j < 0 else j
            out.append(statement[i:j])
            i = j
        elif c == "/" and statement.startswith("/*", i):
            j = statement.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(statement[i:j])
            i = j
        elif c == "$" and (tag := _DOLLAR_TAG.match(statement, i)) and _starts_word(statement, i):
            end = statement.find(tag.group(0), tag.end())
            if end < 0:  # unterminated: nothing after it can be trusted to be code
                out.append(tag.group(0) + "?")
                break
            out.append(tag.group(0) + sanitize_sql(statement[tag.end() : end]) + tag.group(0))
            i = end + len(tag.group(0))
        else:
            out.append(c)
            i += 1
    return redact_text("".join(out))


def _starts_word(text: str, i: int) -> bool:
    """Whether ``text[i]`` does not continue an identifier (``name$1$`` is not a dollar quote,
    ``type'`` is not an E'' string)."""
    return i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_$")
