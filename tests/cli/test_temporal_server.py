"""The embedded Temporal dev server (cli.temporal_server): its command line, the binary it
finds, and each way a start can fail, without a whole stack (the fixtures start real ones)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from cli.stack import free_port, run_sync
from cli.temporal_server import TemporalDevServer, temporal_binary
from common.errors import ConfigurationError, DependencyUnavailable


def test_temporal_dev_server_command_line(tmp_path: Path) -> None:
    server = TemporalDevServer(tmp_path, 7333, 8333, namespace="tf")
    argv = server.argv()
    assert argv[1:3] == ["server", "start-dev"]
    assert str(tmp_path.resolve() / "temporal.db") in argv
    assert argv[argv.index("--ui-port") + 1] == "8333"
    assert "--headless" not in argv
    assert "TenantflowMigrationSet=Keyword" in argv
    assert argv[argv.index("--namespace") + 1] == "tf"
    headless = TemporalDevServer(tmp_path, 7333, None).argv()
    assert "--headless" in headless
    assert server.ui_url == "http://127.0.0.1:8333"


def test_temporal_binary_falls_back_to_path_then_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "venv" / "bin" / "python"))
    on_path = tmp_path / "path"
    on_path.mkdir()
    fake = on_path / "temporal"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(on_path))
    assert temporal_binary() == str(fake)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(ConfigurationError, match="the temporal CLI is not installed"):
        temporal_binary()


def test_the_ui_codec_endpoint_is_passed_on(tmp_path: Path) -> None:
    server = TemporalDevServer(tmp_path, 7333, 8333, codec_endpoint="http://127.0.0.1:8888/codec")
    argv = server.argv()
    assert argv[argv.index("--ui-codec-endpoint") + 1] == "http://127.0.0.1:8888/codec"
    assert "--namespace" not in argv  # the default namespace needs no flag
    assert server.log_path == tmp_path.resolve() / "temporal.log"
    headless = TemporalDevServer(tmp_path, 7333, None, codec_endpoint="http://x/codec").argv()
    assert "--ui-codec-endpoint" not in headless  # no UI, no codec for it
    server.stop()  # never started: nothing to stop
    assert not server.running()


def _fake_temporal(bin_dir: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``temporal`` next to the interpreter that runs ``script`` (Python) instead."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    fake = bin_dir / "temporal"
    fake.write_text(f"#!{sys.executable}\n{script}")
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))


def test_temporal_that_never_opens_its_port_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_temporal(tmp_path / "bin", "import time\ntime.sleep(60)\n", monkeypatch)
    port = free_port()
    server = TemporalDevServer(tmp_path / "data", port, None)
    with pytest.raises(DependencyUnavailable) as caught:
        server.start(timeout=0.5)
    assert caught.value.message == f"Temporal did not open port {port}"
    assert caught.value.details["log"] == str(server.log_path)
    assert not server.running()  # the half-started server was stopped


def test_temporal_that_exits_after_opening_its_port_is_not_healthy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    script = (
        "import socket, sys, time\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1', {port}))\n"
        "s.listen(8)\n"
        "time.sleep(1)\n"
        "sys.exit(3)\n"
    )
    _fake_temporal(tmp_path / "bin", script, monkeypatch)
    server = TemporalDevServer(tmp_path / "data", port, None)
    with pytest.raises(DependencyUnavailable) as caught:
        server.start(timeout=20)
    assert caught.value.message == "Temporal dev server did not become healthy"
    assert caught.value.details["log"] == str(server.log_path)
    assert caught.value.details["cause"] != ""
    assert not server.running()


def test_temporal_that_never_answers_is_not_healthy_in_time(tmp_path: Path) -> None:
    server = TemporalDevServer(tmp_path, free_port(), None)  # nothing listens there
    with pytest.raises(DependencyUnavailable) as caught:
        run_sync(server._wait_healthy(time.monotonic() + 1))
    assert caught.value.message == "Temporal dev server did not become healthy"
    assert caught.value.details["cause"] not in ("", "exited")  # the last connect error's class
