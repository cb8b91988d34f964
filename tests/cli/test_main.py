"""The ``tenantflow`` command's exit codes and messages (run as a real subprocess)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from cli.stack import EmbeddedPostgres, TemporalDevServer, free_port


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def test_check_exits_0_when_everything_answers(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, tmp_path: Path
) -> None:
    env = {
        "TENANTFLOW_CATALOG__DSN": postgres.dsn(),
        "TENANTFLOW_TEMPORAL__ADDRESS": temporal_server.address,
        "PYTHONPATH": str(_project_root()),
    }
    result = _run(["check"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "temporal: up" in result.stdout
    assert "catalog: up" in result.stdout


def test_check_exits_1_naming_what_is_down(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    env = {
        "TENANTFLOW_CATALOG__DSN": postgres.dsn(),
        "TENANTFLOW_TEMPORAL__ADDRESS": f"127.0.0.1:{free_port()}",
        "TENANTFLOW_TEMPORAL__RPC_TIMEOUT_SECONDS": "1",
        "PYTHONPATH": str(_project_root()),
    }
    result = _run(["check"], env, tmp_path)
    assert result.returncode == 1
    assert "temporal: down" in result.stderr
    assert "catalog: up" in result.stdout
    assert postgres.password not in result.stdout + result.stderr


def test_invalid_settings_exit_2_with_a_readable_message(tmp_path: Path) -> None:
    env = {"TENANTFLOW_GATEWAY__PORT": "not-a-port", "PYTHONPATH": str(_project_root())}
    result = _run(["check"], env, tmp_path)
    assert result.returncode == 2
    assert "gateway.port" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_profile_refuses_unsafe_settings(tmp_path: Path) -> None:
    env = {"TENANTFLOW_PROFILE": "production", "PYTHONPATH": str(_project_root())}
    result = _run(["worker"], env, tmp_path)
    assert result.returncode == 2
    assert "refusing to start in the production profile" in result.stderr


def test_dev_refuses_a_taken_port_before_starting_anything(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        env = {
            "TENANTFLOW_DEV__DATA_DIR": str(tmp_path / "data"),
            "TENANTFLOW_DEV__POSTGRES_PORT": str(free_port()),
            "TENANTFLOW_DEV__TEMPORAL_PORT": str(port),
            "TENANTFLOW_DEV__TEMPORAL_UI_PORT": str(free_port()),
            "TENANTFLOW_GATEWAY__PORT": str(free_port()),
            "PYTHONPATH": str(_project_root()),
        }
        result = _run(["dev"], env, tmp_path)
    assert result.returncode == 1
    assert f"port {port} (Temporal frontend) is already in use" in result.stderr
    assert "TENANTFLOW_DEV__TEMPORAL_PORT" in result.stderr
    assert not (tmp_path / "data").exists()


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = _run(["--help"], {"PYTHONPATH": str(_project_root())}, tmp_path)
    assert result.returncode == 0
    for command in ("dev", "worker", "gateway", "check"):
        assert command in result.stdout
