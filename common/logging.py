"""Logging: one JSON object per line (production) or readable lines (development).

Every record carries the request id of the HTTP request (or workflow) that produced it and, when
tracing is on, the trace and span ids of the span it was written in. Values of
keys that look secret (password, token, secret, dsn, authorization, key) are replaced before a
record is written, and libpq URLs inside messages lose their password.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

from common.settings import LogSettings

request_id_var: ContextVar[str | None] = ContextVar("tenantflow_request_id", default=None)

SECRET_KEY_PATTERN = re.compile(
    r"pass(word|wd)?|secret|token|authorization|api_?key|(^|_)key$|dsn|private|credential|cookie",
    re.IGNORECASE,
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@", re.I)
_KV_PASSWORD = re.compile(
    r"(?P<key>password|passwd|pwd|secret|token)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|[^\s&,;]+)", re.I
)
_BEARER = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.I)

REDACTED = "***"

# Attributes every LogRecord has; anything else was passed through ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName", "color_message"}


def redact_text(text: str) -> str:
    """Remove passwords from URLs, ``password=...`` pairs and bearer tokens inside free text."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m['key']}={REDACTED}", text)
    return _BEARER.sub(rf"\g<1>{REDACTED}", text)


def redact_value(key: str, value: Any) -> Any:
    """Redact ``value`` when ``key`` names a secret; recurse into dicts and lists."""
    if SECRET_KEY_PATTERN.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(key, v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: redact_value(key, value)
        for key, value in vars(record).items()
        if key not in _STANDARD_ATTRS and not key.startswith("_")
    }


def trace_ids() -> dict[str, str]:
    """``trace_id`` and ``span_id`` (hex, as trace backends show them) of the current span, so a
    log line leads to its trace; empty when no span is current (tracing off costs one lookup)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, trace and span ids,
    extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(trace_ids())
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS LEVEL logger message key=value ...`` for humans at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        parts = [f"{stamp} {record.levelname:<7} {record.name}: {redact_text(record.getMessage())}"]
        request_id = request_id_var.get()
        extras = _extras(record)
        if request_id:
            extras = {"request_id": request_id, **extras}
        if extras:
            parts.append(" ".join(f"{k}={v}" for k, v in extras.items()))
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + redact_text(self.formatException(record.exc_info))
        return line


def configure_logging(settings: LogSettings, *, stream: Any = None) -> None:
    """Install one handler on the root logger; idempotent, safe to call from every entry point."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_tenantflow", False):
            root.removeHandler(existing)
    handler._tenantflow = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(settings.level)
    # uvicorn's own access log duplicates ours; its error log goes through our handler.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Temporal's and asyncpg's chatter stays at WARNING unless we ask for DEBUG.
    quiet = logging.WARNING if settings.level != "DEBUG" else logging.NOTSET
    for name in ("temporalio", "asyncpg", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(quiet)
