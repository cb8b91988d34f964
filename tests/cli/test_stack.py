"""The embedded-services launcher: ports, PostgreSQL with passwords, process groups."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import asyncpg
import pytest

from cli import stack
from cli.stack import (
    EmbeddedPostgres,
    ManagedProcess,
    _run_as,
    ensure_ports_free,
    free_port,
    port_is_free,
    wait_for_port,
)
from common.errors import ConfigurationError, DependencyUnavailable, PortInUse


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_port_checks(taken_port: int) -> None:
    assert not port_is_free(taken_port)
    assert port_is_free(free_port())


def test_taken_ports_are_named_with_the_setting_that_moves_them(taken_port: int) -> None:
    with pytest.raises(PortInUse) as info:
        ensure_ports_free(
            {
                "Temporal frontend": (taken_port, "TENANTFLOW_DEV__TEMPORAL_PORT"),
                "gateway": (free_port(), "TENANTFLOW_GATEWAY__PORT"),
            }
        )
    message = info.value.message
    assert f"port {taken_port} (Temporal frontend) is already in use" in message
    assert "TENANTFLOW_DEV__TEMPORAL_PORT" in message
    assert "gateway" not in message
    assert info.value.details == {"Temporal frontend": taken_port}


def test_managed_process_stop_kills_the_whole_group(tmp_path: Path) -> None:
    # The child starts a grandchild that ignores SIGTERM; stop() must still leave nothing behind.
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "p = subprocess.Popen([sys.executable, '-c', "
        "'import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "child.log"
    child = ManagedProcess("child", [sys.executable, "-c", script], log_path=log)
    child.start()
    for _ in range(100):
        if log.exists() and log.read_text().strip():
            break
        time.sleep(0.05)
    grandchild = int(log.read_text().split()[0])
    child.stop(timeout=1)
    assert not child.running()
    # SIGKILL is delivered asynchronously: give the kernel a moment before looking.
    for _ in range(100):
        status = Path(f"/proc/{grandchild}/status")
        if not status.exists() or "zombie" in status.read_text().lower():
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"grandchild {grandchild} survived the group kill")


async def test_postgres_requires_the_generated_password(postgres: EmbeddedPostgres) -> None:
    conn = await asyncpg.connect(postgres.dsn())
    assert await conn.fetchval("SELECT current_database()") == "tenantflow"
    await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(f"postgresql://postgres:wrong@127.0.0.1:{postgres.port}/tenantflow")
    assert (postgres.data_dir / "password").stat().st_mode & 0o077 == 0


def test_postgres_restart_keeps_data_and_password(service_dir: Path) -> None:
    server = EmbeddedPostgres(service_dir / "pg", free_port())
    server.start()
    try:
        password = server.password
        assert server.running()
        server.stop()
        assert not server.running()
        server.start()
        assert server.password == password
        assert server.running()
    finally:
        server.stop()


# -- helpers and failure branches, without starting another whole stack ------------------------
def test_wait_for_port_gives_up_on_a_port_nobody_opens() -> None:
    started = time.monotonic()
    assert wait_for_port(free_port(), timeout=0.3) is False
    assert time.monotonic() - started >= 0.3


def test_run_as_drops_to_the_named_user_only() -> None:
    assert _run_as(None) == {}
    assert _run_as("root") == {"user": 0, "group": 0, "extra_groups": []}


def _never_started(process: ManagedProcess) -> bool:
    return process.pid is None and process.process is None and not process.running()


def test_a_process_without_a_log_inherits_output_and_stops_cleanly() -> None:
    idle = ManagedProcess("idle", [sys.executable, "-c", "pass"])
    assert _never_started(idle)
    idle.stop()  # never started: nothing to do
    assert _never_started(idle)
    idle.start()
    process = idle.process
    assert process is not None and idle.pid == process.pid
    assert process.wait(30) == 0
    idle.stop()
    assert not idle.running()


def test_missing_embedded_wheel_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only cli.stack's view of importlib: the wheel is not found.
    no_wheel = SimpleNamespace(util=SimpleNamespace(find_spec=lambda _name: None))
    monkeypatch.setattr(stack, "importlib", no_wheel)
    with pytest.raises(ConfigurationError, match=r"pip install 'tenantflow\[embedded\]'"):
        EmbeddedPostgres.bin_dir()


def test_a_data_directory_that_is_no_cluster_fails_initdb_clearly(service_dir: Path) -> None:
    server = EmbeddedPostgres(service_dir / "pg", free_port())
    server.pgdata.mkdir(parents=True)
    (server.pgdata / "stray.txt").write_text("not a cluster\n")
    with pytest.raises(ConfigurationError) as caught:
        server.start()
    assert caught.value.message.startswith("initdb failed: ")
    assert "not empty" in caught.value.details["output"]
    # No password was kept, and the temporary password file is gone.
    assert not (server.data_dir / "password").exists()
    assert not (server.data_dir / ".pwfile").exists()
    assert not server.running()
    server.stop()  # not initialised: nothing to stop


@pytest.mark.skipif(os.geteuid() != 0, reason="initdb refuses root only")
def test_initdb_refuses_root_without_the_system_user(service_dir: Path) -> None:
    # Run as an unprivileged user no system user is involved; as root that is refused, and
    # the refusal is what the error shows.
    server = EmbeddedPostgres(service_dir / "pg", free_port())
    server._system_user = None
    with pytest.raises(ConfigurationError) as caught:
        server.start()
    assert caught.value.message.startswith("initdb failed: ")
    assert "cannot be run as root" in caught.value.details["output"]
    assert not (server.data_dir / "password").exists()
    assert not server.initialised()


def test_postgres_on_a_taken_port_fails_with_its_server_log(
    service_dir: Path, taken_port: int
) -> None:
    server = EmbeddedPostgres(service_dir / "pg", taken_port)
    try:
        with pytest.raises(DependencyUnavailable) as caught:
            server.start(timeout=30)
        assert caught.value.message == f"PostgreSQL did not start on port {taken_port}"
        assert "could not" in caught.value.details["server_log"]
        assert server.initialised() and not server.running()
    finally:
        server.stop()


def test_starting_a_running_postgres_again_keeps_it(
    postgres: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    password = postgres.password
    with caplog.at_level(logging.INFO, logger="cli.stack"):
        postgres.start()
    assert "postgres already running" in caplog.messages
    assert postgres.running() and postgres.password == password
