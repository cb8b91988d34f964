"""``tenantflow dev``'s pieces without a whole stack: the children's environment, waiting for the
gateway, and watching the running stack (real child processes, a real HTTP server)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli.dev import DEV_WORKER_METRICS_PORT, _child_env, _wait_ready, _watch
from cli.dev_issuer import DevIssuer, dev_issuer_url
from cli.stack import ManagedProcess, free_port
from cli.temporal_server import TemporalDevServer
from common.errors import DependencyUnavailable
from common.settings import Settings


def _process(name: str, code: str, log: Path | None = None) -> ManagedProcess:
    return ManagedProcess(name, [sys.executable, "-c", code], log_path=log)


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "issuer", dev_issuer_url(free_port()))


def test_child_env_points_the_alerts_at_the_gateway_unless_configured(
    issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TENANTFLOW_ALERTS__GATEWAY_METRICS_URLS", raising=False)
    plain = Settings(_env_file=None)
    env = _child_env(plain, "postgresql://x@127.0.0.1/tenantflow", "127.0.0.1:7233", issuer)
    assert json.loads(env["TENANTFLOW_ALERTS__GATEWAY_METRICS_URLS"]) == [
        f"{plain.gateway.base_url()}/metrics"
    ]
    assert env["TENANTFLOW_TELEMETRY__WORKER_METRICS_PORT"] == str(DEV_WORKER_METRICS_PORT)
    assert env["TENANTFLOW_AUTH__CLIENT_SECRET"] == issuer.client_secret()

    configured = Settings(
        _env_file=None, alerts={"gateway_metrics_urls": ["http://gw.example:9000/metrics"]}
    )
    env = _child_env(configured, "postgresql://x@h/db", "h:7233", issuer)
    # The children read the configured URLs from the settings themselves: nothing is overridden.
    assert "TENANTFLOW_ALERTS__GATEWAY_METRICS_URLS" not in env
    assert env["TENANTFLOW_CATALOG__DSN"] == "postgresql://x@h/db"


class _NotReady(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "not ready", "temporal": "down"}'
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def not_ready_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotReady)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/health/ready"
    server.shutdown()
    server.server_close()


def test_a_gateway_that_stays_not_ready_times_out_with_its_last_answer(
    not_ready_url: str,
) -> None:
    with pytest.raises(DependencyUnavailable) as caught:
        _wait_ready(not_ready_url, [], timeout=0.6)
    assert caught.value.message == "the gateway did not become ready in time"
    assert caught.value.details == {"last_answer": '{"status": "not ready", "temporal": "down"}'}


def test_nothing_answering_is_named_by_the_error_class() -> None:
    with pytest.raises(DependencyUnavailable) as caught:
        _wait_ready(f"http://127.0.0.1:{free_port()}/health/ready", [], timeout=0.3)
    assert caught.value.details["last_answer"] == "ConnectError"


def test_a_child_exiting_during_start_up_is_named_with_its_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "worker.log"
    worker = _process("worker", "raise SystemExit(3)", log)
    worker.start()
    assert worker.process is not None and worker.process.wait(30) == 3
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            _wait_ready(f"http://127.0.0.1:{free_port()}/health/ready", [worker], timeout=30)
    finally:
        worker.stop()
    assert caught.value.message == "the worker exited during start-up"
    assert caught.value.details == {"log": str(log)}


def test_watch_reports_temporal_once_and_stops_when_a_child_exits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    temporal = TemporalDevServer(tmp_path / "temporal", free_port(), None)
    temporal.process = _process("temporal", "pass")
    gateway = _process("gateway", "import time; time.sleep(60)", tmp_path / "gateway.log")
    worker = _process("worker", "import time; time.sleep(1.5)", tmp_path / "worker.log")
    children = [temporal.process, gateway, worker]
    for child in children:
        child.start()
    try:
        code = _watch(threading.Event(), temporal, [gateway, worker], interval=0.1)
    finally:
        for child in children:
            child.stop(timeout=5)
    assert code == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"Temporal exited; see {temporal.log_path}",
        f"the worker exited; see {tmp_path / 'worker.log'}",
    ]


def test_watch_returns_0_once_asked_to_stop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    temporal = TemporalDevServer(tmp_path / "temporal", free_port(), None)
    temporal.process = _process("temporal", "import time; time.sleep(60)")
    temporal.process.start()
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    try:
        assert _watch(stop, temporal, [], interval=0.1) == 0
    finally:
        timer.cancel()
        temporal.stop()
    assert capsys.readouterr().err == ""
