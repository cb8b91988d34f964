"""The ``tenantflow`` command's exit codes and messages (run as a real subprocess)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg

from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.crypto import generate_key
from common.settings import DEV_ENCRYPTION_KEY
from tests.cli.test_backup import OwnCatalog, own
from tests.conftest import TargetFactory

__all__ = ["own"]  # the fixture: a catalog database of the test's own


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


def test_a_value_that_cannot_be_parsed_exits_2_naming_the_section(tmp_path: Path) -> None:
    env = {"TENANTFLOW_NETWORK__ALLOWED_NETWORKS": "not-json", "PYTHONPATH": str(_project_root())}
    result = _run(["check"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        'invalid settings: error parsing value for field "network" from source '
        '"EnvSettingsSource"\n'
    )


def test_gateway_refuses_a_taken_port_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        env = {"TENANTFLOW_GATEWAY__PORT": str(port), "PYTHONPATH": str(_project_root())}
        result = _run(["gateway"], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: port {port} (gateway) is already in use; set TENANTFLOW_GATEWAY__PORT"
    )
    assert "Traceback" not in result.stderr


def test_token_with_an_unreadable_issuer_key_exits_1(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "issuer" / "keys" / "k.pem").mkdir(parents=True)  # a directory, not a key
    env = {"TENANTFLOW_HOME": str(data), "PYTHONPATH": str(_project_root())}
    result = _run(["token"], env, tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        f"error: cannot read the dev issuer's key in {data}: IsADirectoryError\n"
    )


def test_keys_generate_prints_a_new_32_byte_key(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(_project_root())}
    first, second = (_run(["keys", "generate"], env, tmp_path) for _ in range(2))
    assert first.returncode == second.returncode == 0
    key = first.stdout.strip()
    assert len(base64.b64decode(key, validate=True)) == 32
    assert key != second.stdout.strip()


async def test_keys_rotate_re_encrypts_under_the_active_key_once(
    own: OwnCatalog, make_target: TargetFactory
) -> None:
    await own.register(await make_target(), server=True)
    rotated = {
        "TENANTFLOW_CRYPTO__KEYS": json.dumps({"dev": DEV_ENCRYPTION_KEY, "new": generate_key()}),
        "TENANTFLOW_CRYPTO__ACTIVE_KEY_ID": "new",
    }
    first = await own.cli("keys", "rotate", **rotated)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "re-encrypted 2 credential(s) under key 'new'"
    again = await own.cli("keys", "rotate", **rotated)
    assert again.stdout.strip() == "re-encrypted 0 credential(s) under key 'new'"
    conn = await asyncpg.connect(own.dsn)
    try:
        tokens = await conn.fetch(
            "SELECT password_encrypted AS t FROM databases "
            "UNION ALL SELECT admin_password_encrypted FROM servers"
        )
    finally:
        await conn.close()
    assert [r["t"].split(":")[1] for r in tokens] == ["new", "new"]


async def test_keys_rotate_with_the_catalog_down_exits_1(own: OwnCatalog) -> None:
    down = f"postgresql://postgres:secret-pw@127.0.0.1:{free_port()}/tenantflow"
    result = await own.cli(
        "keys",
        "rotate",
        TENANTFLOW_CATALOG__DSN=down,
        TENANTFLOW_CATALOG__STARTUP_RETRY_SECONDS="0",
        TENANTFLOW_CATALOG__CONNECT_TIMEOUT_SECONDS="2",
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: the catalog database is unreachable"
    assert "  dependency: catalog" in lines
    assert "  cause: ConnectionRefusedError" in lines
    assert "secret-pw" not in result.stderr
