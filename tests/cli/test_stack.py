"""The embedded-services launcher: ports, PostgreSQL with passwords, process groups."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from cli.stack import (
    EmbeddedPostgres,
    ManagedProcess,
    TemporalDevServer,
    ensure_ports_free,
    free_port,
    port_is_free,
)
from common.errors import PortInUse


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
