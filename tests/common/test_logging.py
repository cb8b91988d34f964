"""Logging: JSON lines with request ids and redaction, readable console lines, one root handler."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from common.logging import (
    REDACTED,
    ConsoleFormatter,
    JsonFormatter,
    configure_logging,
    redact_text,
    redact_value,
    request_id_var,
)
from common.settings import LogSettings

_TOUCHED_LOGGERS = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "temporalio",
    "asyncpg",
    "httpx",
    "httpcore",
)


@dataclass
class Capture:
    """A logger whose records go only to ``stream`` through ``handler``."""

    logger: logging.Logger
    handler: logging.StreamHandler[io.StringIO]
    stream: io.StringIO

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


def _capture(name: str, formatter: logging.Formatter) -> Iterator[Capture]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield Capture(logger, handler, stream)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


@pytest.fixture
def json_log() -> Iterator[Capture]:
    """A logger formatted by ``JsonFormatter``."""
    yield from _capture("tenantflow.test.json", JsonFormatter())


@pytest.fixture
def console_log() -> Iterator[Capture]:
    """A logger formatted by ``ConsoleFormatter``."""
    yield from _capture("tenantflow.test.console", ConsoleFormatter())


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo whatever ``configure_logging`` did to the root and the third-party loggers."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    level = root.level
    saved = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).level,
            logging.getLogger(name).propagate,
            logging.getLogger(name).disabled,
        )
        for name in _TOUCHED_LOGGERS
    }
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)
    for name, (old_handlers, old_level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = old_handlers
        logger.setLevel(old_level)
        logger.propagate = propagate
        logger.disabled = disabled


def _tenantflow_handlers() -> list[logging.Handler]:
    return [h for h in logging.getLogger().handlers if getattr(h, "_tenantflow", False)]


# --- JsonFormatter --------------------------------------------------------------------------------


def test_json_one_object_per_line_with_core_fields(json_log: Capture) -> None:
    json_log.logger.info("first %s", "message")
    json_log.logger.warning("second")
    lines = json_log.lines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "first message"
    assert first["level"] == "INFO"
    assert first["logger"] == "tenantflow.test.json"
    assert first["time"].endswith("+00:00")
    assert "T" in first["time"]
    assert second["level"] == "WARNING"
    assert second["message"] == "second"


def test_json_without_request_id_has_no_request_id_key(json_log: Capture) -> None:
    assert request_id_var.get() is None
    json_log.logger.info("no request")
    assert "request_id" not in json_log.entries()[0]


def test_json_includes_request_id_from_context(json_log: Capture) -> None:
    token = request_id_var.set("req-abc123")
    try:
        json_log.logger.info("inside a request")
    finally:
        request_id_var.reset(token)
    json_log.logger.info("after the request")
    inside, after = json_log.entries()
    assert inside["request_id"] == "req-abc123"
    assert "request_id" not in after


def test_json_carries_trace_and_span_ids_of_the_current_span(json_log: Capture) -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("outer") as span:
        json_log.logger.info("inside a span")
    json_log.logger.info("outside any span")
    inside, outside = json_log.entries()
    context = span.get_span_context()
    assert inside["trace_id"] == f"{context.trace_id:032x}"
    assert inside["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in outside and "span_id" not in outside


def test_json_includes_extras(json_log: Capture) -> None:
    json_log.logger.info(
        "migrated",
        extra={"target": "acme", "version": 7, "ok": True, "tags": ["a", "b"], "ratio": 0.5},
    )
    entry = json_log.entries()[0]
    assert entry["target"] == "acme"
    assert entry["version"] == 7
    assert entry["ok"] is True
    assert entry["tags"] == ["a", "b"]
    assert entry["ratio"] == 0.5
    # Standard LogRecord attributes are not dumped as extras.
    for attr in ("args", "msg", "pathname", "lineno", "levelno", "exc_info", "thread"):
        assert attr not in entry


def test_json_serialises_unusual_extras_as_strings(json_log: Capture) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque-value"

    json_log.logger.info("odd", extra={"thing": Opaque()})
    assert json_log.entries()[0]["thing"] == "opaque-value"


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "db_password",
        "passwd",
        "token",
        "access_token",
        "secret",
        "client_secret",
        "dsn",
        "catalog_dsn",
        "authorization",
        "Authorization",
        "api_key",
        "apikey",
        "cookie",
        "credentials",
        "private_key",
    ],
)
def test_json_redacts_secret_named_extras(json_log: Capture, key: str) -> None:
    json_log.logger.info("connecting", extra={key: "hunter2-value"})
    entry = json_log.entries()[0]
    assert entry[key] == REDACTED
    assert "hunter2-value" not in json_log.stream.getvalue()


def test_json_redacts_nested_dicts_and_lists(json_log: Capture) -> None:
    json_log.logger.info(
        "request",
        extra={
            "headers": {"Authorization": "Bearer tok.en", "Accept": "application/json"},
            "config": {"catalog": {"dsn": "postgresql://u:pw1@h/db", "pool": 5}},
            "tokens": ["t1", "t2"],
            "urls": ["postgresql://u:pw2@h/db"],
        },
    )
    entry = json_log.entries()[0]
    assert entry["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert entry["config"] == {"catalog": {"dsn": REDACTED, "pool": 5}}
    assert entry["tokens"] == REDACTED
    assert entry["urls"] == ["postgresql://u:***@h/db"]
    output = json_log.stream.getvalue()
    for secret in ("tok.en", "pw1", "pw2", "t1", "t2"):
        assert secret not in output


def test_json_redacts_passwords_in_string_extras(json_log: Capture) -> None:
    json_log.logger.info("connect", extra={"target_url": "postgresql://u:zzpw@h/db"})
    assert json_log.entries()[0]["target_url"] == "postgresql://u:***@h/db"


@pytest.mark.parametrize(
    ("message", "secret", "expected"),
    [
        ("connecting to postgresql://u:pw-9f3@h/db", "pw-9f3", "postgresql://u:***@h/db"),
        ("conninfo host=h password=xyz-77 user=u", "xyz-77", "password=***"),
        ("header Authorization: Bearer abc.def", "abc.def", "Bearer ***"),
        ("token=tok-55&next=1", "tok-55", "token=***&next=1"),
    ],
)
def test_json_redacts_secrets_in_messages(
    json_log: Capture, message: str, secret: str, expected: str
) -> None:
    json_log.logger.info(message)
    entry = json_log.entries()[0]
    assert expected in entry["message"]
    assert secret not in json_log.stream.getvalue()


def test_json_redacts_secrets_in_message_arguments(json_log: Capture) -> None:
    json_log.logger.info("cannot reach %s", "postgresql://tf:argpw-1@db/tf")
    entry = json_log.entries()[0]
    assert entry["message"] == "cannot reach postgresql://tf:***@db/tf"


def test_json_exception_text_is_included_and_redacted(json_log: Capture) -> None:
    try:
        raise ConnectionError("could not connect to postgresql://tf:exc-pw-42@db/tf")
    except ConnectionError:
        json_log.logger.exception("catalog down")
    entry = json_log.entries()[0]
    assert entry["level"] == "ERROR"
    assert entry["message"] == "catalog down"
    assert "Traceback" in entry["exception"]
    assert "ConnectionError" in entry["exception"]
    assert "postgresql://tf:***@db/tf" in entry["exception"]
    assert "exc-pw-42" not in json_log.stream.getvalue()
    assert len(json_log.lines()) == 1, "a multi-line traceback must stay on one JSON line"


def test_json_keeps_unicode_readable(json_log: Capture) -> None:
    json_log.logger.info("tenant Zürich migrated")
    assert "Zürich" in json_log.lines()[0]


# --- redaction helpers ----------------------------------------------------------------------------


def test_redact_text_leaves_harmless_text_alone() -> None:
    text = "migrated tenant acme to version 12 (https://example.com/docs)"
    assert redact_text(text) == text


def test_redact_value_keeps_non_string_values() -> None:
    assert redact_value("count", 3) == 3
    assert redact_value("items", ("a", 1)) == ["a", 1]
    assert redact_value("password", 1234) == REDACTED


# --- ConsoleFormatter -----------------------------------------------------------------------------


def test_console_line_is_readable(console_log: Capture) -> None:
    console_log.logger.warning("slow target %s", "acme")
    (line,) = console_log.lines()
    stamp, level, rest = line.split(" ", 2)
    assert len(stamp) == 8
    assert stamp.count(":") == 2
    assert level == "WARNING"
    assert rest == "tenantflow.test.console: slow target acme"


def test_console_line_has_request_id_and_redacted_extras(console_log: Capture) -> None:
    token = request_id_var.set("req-42")
    try:
        console_log.logger.info(
            "connect postgresql://u:cpw-1@h/db", extra={"target": "acme", "password": "cpw-2"}
        )
    finally:
        request_id_var.reset(token)
    (line,) = console_log.lines()
    assert "INFO    tenantflow.test.console: connect postgresql://u:***@h/db" in line
    assert line.endswith("request_id=req-42 target=acme password=***")
    assert "cpw-1" not in line
    assert "cpw-2" not in line


def test_console_exception_is_on_following_lines_and_redacted(console_log: Capture) -> None:
    try:
        raise ValueError("bad password=console-pw")
    except ValueError:
        console_log.logger.exception("failed")
    output = console_log.stream.getvalue()
    first, *rest = output.splitlines()
    assert first.endswith("failed")
    assert any("ValueError" in line for line in rest)
    assert "console-pw" not in output
    assert "password=***" in output


# --- configure_logging ----------------------------------------------------------------------------


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_installs_exactly_one_handler() -> None:
    root = logging.getLogger()
    foreign = logging.NullHandler()
    root.addHandler(foreign)
    baseline = len(root.handlers)
    first_stream, second_stream = io.StringIO(), io.StringIO()

    configure_logging(LogSettings(format="json"), stream=first_stream)
    configure_logging(LogSettings(format="json"), stream=second_stream)

    installed = _tenantflow_handlers()
    assert len(installed) == 1
    assert len(root.handlers) == baseline + 1
    assert foreign in root.handlers, "handlers not installed by tenantflow are left alone"

    logging.getLogger("tenantflow.test.configure").info("hello", extra={"token": "t0k"})
    assert first_stream.getvalue() == ""
    (line,) = second_stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "hello"
    assert entry["token"] == REDACTED


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_console_format_and_level() -> None:
    stream = io.StringIO()
    configure_logging(LogSettings(format="console", level="WARNING"), stream=stream)
    (handler,) = _tenantflow_handlers()
    assert isinstance(handler.formatter, ConsoleFormatter)
    assert logging.getLogger().level == logging.WARNING

    log = logging.getLogger("tenantflow.test.configure")
    log.info("too quiet")
    log.warning("loud enough")
    (line,) = stream.getvalue().splitlines()
    assert "WARNING" in line
    assert line.endswith("tenantflow.test.configure: loud enough")


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_tames_third_party_loggers() -> None:
    logging.getLogger("uvicorn").addHandler(logging.NullHandler())
    logging.getLogger("uvicorn").propagate = False
    configure_logging(LogSettings(level="INFO"), stream=io.StringIO())
    assert logging.getLogger("uvicorn").handlers == []
    assert logging.getLogger("uvicorn").propagate is True
    assert logging.getLogger("uvicorn.error").propagate is True
    assert logging.getLogger("uvicorn.access").disabled is True
    for name in ("temporalio", "asyncpg", "httpx", "httpcore"):
        assert logging.getLogger(name).level == logging.WARNING


@pytest.mark.usefixtures("restore_logging")
def test_configure_logging_debug_leaves_third_party_levels_alone() -> None:
    for name in ("temporalio", "asyncpg"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    configure_logging(LogSettings(level="DEBUG"), stream=io.StringIO())
    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("temporalio").level == logging.NOTSET
    assert logging.getLogger("asyncpg").level == logging.NOTSET
