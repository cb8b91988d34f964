"""``tenantflow server ...`` and ``tenantflow db show|update|test|rm`` end to end over HTTP
against a real gateway, worker, Temporal and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from cli.keys import rotate_credentials
from cli.stack import EmbeddedPostgres, free_port
from common.catalog import open_catalog
from common.catalog.servers import ServerRepository
from common.crypto import CredentialCipher, KeyRing, generate_key
from common.settings import Settings
from gateway.app import create_app
from models.servers import ServerCreate
from tests.cli.test_commands import ROOT, invoke, run_cli
from tests.conftest import LEAK_CANARIES, TargetDatabase, ThreadedServer, Tokens, make_settings


@pytest.fixture
def gateway_url(settings: Settings, running_worker: None) -> Iterator[str]:
    """The gateway served by uvicorn on a real port, with its lifespan."""
    port = free_port()
    server = ThreadedServer(create_app(settings), port, lifespan="on")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def _with_stdin(url: str, token: str, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
    env.update({"PYTHONPATH": str(ROOT), "TENANTFLOW_API_URL": url, "TENANTFLOW_TOKEN": token})
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        env=env,
        input=text,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_server_and_target_lifecycle_from_the_command_line(
    gateway_url: str,
    tokens: Tokens,
    target_database: TargetDatabase,
    postgres: EmbeddedPostgres,
) -> None:
    token = tokens.token("infra-operator")
    server = f"pg-{uuid.uuid4().hex[:8]}"
    region = f"r{uuid.uuid4().hex[:6]}"
    added = await run_cli(
        gateway_url,
        token,
        "server",
        "add",
        "--name",
        server,
        "--host",
        "127.0.0.1",
        "--port",
        str(postgres.port),
        "--admin-user",
        postgres.user,
        "--password-env",
        "PG_ADMIN",
        "--sslmode",
        "disable",
        "--max-connections",
        "8",
        "--label",
        f"region={region}",
        "--json",
        extra_env={"PG_ADMIN": postgres.password},
    )
    assert added.returncode == 0, added.stderr
    created = json.loads(added.stdout)
    assert (created["name"], created["sslmode"], created["max_connections"]) == (
        server,
        "disable",
        8,
    )
    assert postgres.password not in added.stdout + added.stderr

    listed = await run_cli(gateway_url, token, "server", "list", "--label", f"region={region}")
    assert listed.returncode == 0, listed.stderr
    assert server in listed.stdout
    shown = await run_cli(gateway_url, token, "server", "show", server)
    assert shown.returncode == 0, shown.stderr
    assert f"server {server}" in shown.stdout
    assert "max connections  8" in shown.stdout
    assert postgres.password not in shown.stdout

    # A target on that server, registered with a wrong password.
    wrong = f"wrong-{uuid.uuid4().hex}"
    LEAK_CANARIES.add(wrong)
    target = await run_cli(
        gateway_url,
        token,
        "db",
        "add",
        "--name",
        f"cli-{uuid.uuid4().hex[:6]}",
        "--host",
        target_database.host,
        "--port",
        str(target_database.port),
        "--database",
        target_database.database,
        "--user",
        target_database.user,
        "--server",
        server,
        "--json",
        extra_env={"TENANTFLOW_TARGET_PASSWORD": wrong},
    )
    assert target.returncode == 0, target.stderr
    database_id = json.loads(target.stdout)["id"]
    assert json.loads(target.stdout)["server_id"] == created["id"]
    assert json.loads(target.stdout)["sslmode"] == "disable"

    refused = await run_cli(gateway_url, token, "db", "test", database_id)
    assert refused.returncode == 1
    assert "28P01" in refused.stderr

    fixed = await run_cli(
        gateway_url,
        token,
        "db",
        "update",
        database_id,
        "--password-env",
        "NEW_PW",
        "--label",
        f"cohort={region}",
        extra_env={"NEW_PW": target_database.password},
    )
    assert fixed.returncode == 0, fixed.stderr
    assert target_database.password not in fixed.stdout + fixed.stderr
    works = await run_cli(gateway_url, token, "db", "test", database_id)
    assert works.returncode == 0, works.stderr
    assert works.stdout.startswith("ok: PostgreSQL 18")
    relabelled = await run_cli(gateway_url, token, "db", "list", "--label", f"cohort={region}")
    assert database_id in relabelled.stdout
    on_server = await run_cli(gateway_url, token, "db", "list", "--server", server, "--json")
    assert [d["id"] for d in json.loads(on_server.stdout)["items"]] == [database_id]
    detail = await run_cli(gateway_url, token, "db", "show", database_id, "--json")
    assert json.loads(detail.stdout)["labels"] == {"cohort": region}
    assert target_database.password not in detail.stdout

    resized = await run_cli(
        gateway_url,
        token,
        "server",
        "update",
        server,
        "--max-connections",
        "12",
        "--password-env",
        "PG_ADMIN",
        "--json",
        extra_env={"PG_ADMIN": postgres.password},
    )
    assert resized.returncode == 0, resized.stderr
    assert json.loads(resized.stdout)["max_connections"] == 12
    assert postgres.password not in resized.stdout + resized.stderr

    busy = await run_cli(gateway_url, token, "server", "rm", server, "--yes")
    assert busy.returncode == 1
    assert "409 conflict" in busy.stderr
    assert "Traceback" not in busy.stderr

    assert (await run_cli(gateway_url, token, "db", "rm", database_id, "--yes")).returncode == 0
    gone = await run_cli(gateway_url, token, "db", "show", database_id)
    assert gone.returncode == 1
    assert "404 not_found" in gone.stderr
    removed = await run_cli(gateway_url, token, "server", "rm", server, "--yes")
    assert removed.returncode == 0, removed.stderr
    missing = await run_cli(gateway_url, token, "server", "show", server)
    assert missing.returncode == 1
    assert "404 not_found" in missing.stderr


async def test_admin_password_from_a_hidden_prompt_is_never_echoed(
    gateway_url: str, tokens: Tokens
) -> None:
    token = tokens.token("infra-operator")
    secret = f"typed-{uuid.uuid4().hex}"
    LEAK_CANARIES.add(secret)
    name = f"pg-{uuid.uuid4().hex[:8]}"
    added = await asyncio.to_thread(
        _with_stdin,
        gateway_url,
        token,
        secret + "\n",
        "server",
        "add",
        "--name",
        name,
        "--host",
        "pg.internal",
        "--admin-user",
        "tenantflow_admin",
    )
    assert added.returncode == 0, added.stderr
    assert f"registered server {name}" in added.stdout
    assert secret not in added.stdout + added.stderr


async def test_bad_values_and_permissions_are_reported_without_a_traceback(
    gateway_url: str, tokens: Tokens
) -> None:
    operator = tokens.token("infra-operator")
    bad = await run_cli(
        gateway_url,
        operator,
        "server",
        "add",
        "--name",
        f"pg-{uuid.uuid4().hex[:8]}",
        "--host",
        "pg.internal",
        "--admin-user",
        "admin",
        "--sslmode",
        "sometimes",
        "--password-env",
        "PW",
        extra_env={"PW": "x"},
    )
    assert bad.returncode == 1
    assert "422 validation_error" in bad.stderr
    assert "sslmode" in bad.stderr
    unset = await run_cli(
        gateway_url,
        operator,
        "server",
        "add",
        "--name",
        "pg-x",
        "--host",
        "h",
        "--admin-user",
        "a",
        "--password-env",
        "NOT_SET_ANYWHERE",
    )
    assert unset.returncode == 2
    assert "NOT_SET_ANYWHERE" in unset.stderr
    nothing = await run_cli(gateway_url, operator, "db", "update", str(uuid.uuid4()))
    assert nothing.returncode == 2
    assert "nothing to change" in nothing.stderr
    viewer = await run_cli(
        gateway_url,
        tokens.token("infra-viewer"),
        "server",
        "add",
        "--name",
        f"pg-{uuid.uuid4().hex[:8]}",
        "--host",
        "pg.internal",
        "--admin-user",
        "admin",
        "--password-env",
        "PW",
        extra_env={"PW": "x"},
    )
    assert viewer.returncode == 1
    assert "403 forbidden" in viewer.stderr
    for result in (bad, unset, nothing, viewer):
        assert "Traceback" not in result.stderr


async def test_keys_rotate_reencrypts_server_admin_passwords(
    fresh_database: str, postgres: EmbeddedPostgres
) -> None:
    old_key, new_key = generate_key(), generate_key()
    old = make_settings(
        postgres,
        "127.0.0.1:1",
        catalog={"dsn": fresh_database},
        crypto={"keys": {"old": old_key}, "active_key_id": "old"},
    )
    both = make_settings(
        postgres,
        "127.0.0.1:1",
        catalog={"dsn": fresh_database},
        crypto={"keys": {"old": old_key, "new": new_key}, "active_key_id": "new"},
    )
    pool = await open_catalog(old.catalog)
    try:
        servers = ServerRepository(pool, CredentialCipher(KeyRing.from_settings(old.crypto)))
        LEAK_CANARIES.add("rotating-admin-pw")
        created = await servers.create(
            ServerCreate.model_validate(
                {
                    "name": "pg-rotate",
                    "host": "pg.internal",
                    "admin_user": "admin",
                    "admin_password": "rotating-admin-pw",
                }
            )
        )
        assert await rotate_credentials(both) == 1
        only_new = CredentialCipher(KeyRing({"new": base64.b64decode(new_key)}, "new"))
        params = await ServerRepository(pool, only_new).admin_connection_params(created.id)
        assert params["password"] == "rotating-admin-pw"
    finally:
        await pool.close()


async def test_server_options_json_pages_and_confirmation(
    gateway_url: str, tokens: Tokens, postgres: EmbeddedPostgres, catalog_pool: asyncpg.Pool
) -> None:
    token = tokens.token("infra-operator")
    # Refused before any request: nothing to change; a removal not confirmed.
    nothing = await invoke(gateway_url, token, "server", "update", "pg-none")
    assert nothing.exit_code == 2
    assert "nothing to change: pass at least one option" in nothing.stderr
    kept = await invoke(gateway_url, token, "server", "rm", "pg-none", input="n\n")
    assert kept.exit_code == 1
    assert "Forget server pg-none?" in kept.output and "removed" not in kept.output

    tag = uuid.uuid4().hex[:8]
    server = f"pg-{tag}"
    added = await invoke(
        gateway_url, token, "server", "add", "--name", server, "--host", postgres.host,
        "--port", str(postgres.port), "--admin-user", postgres.user, "--password-env", "PW",
        "--sslmode", "disable", "--label", f"page={tag}",
        env={"PW": postgres.password},
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    shown = await invoke(gateway_url, token, "server", "show", server, "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["labels"] == {"page": tag}
    updated = await invoke(
        gateway_url, token, "server", "update", server, "--label", f"page={tag}",
        "--label", "tier=gold", "--max-connections", "5",
    )  # fmt: skip
    assert updated.exit_code == 0, updated.output
    assert updated.stdout == f"updated server {server}\n"
    raw = await invoke(gateway_url, token, "server", "update", server, "--port",
                       str(postgres.port), "--json")  # fmt: skip
    assert raw.exit_code == 0, raw.output
    assert (json.loads(raw.stdout)["labels"], json.loads(raw.stdout)["max_connections"]) == (
        {"page": tag, "tier": "gold"},
        5,
    )

    # More servers than one page (1000) carry the label: the listing follows next_cursor.
    await catalog_pool.execute(
        "INSERT INTO servers (id, name, host, port, admin_user, admin_password_encrypted,"
        " admin_password_key_id, sslmode, labels)"
        " SELECT gen_random_uuid(), name || '-' || n, host, port, admin_user,"
        " admin_password_encrypted, admin_password_key_id, sslmode, labels"
        " FROM servers, generate_series(1, 1000) AS n WHERE name = $1",
        server,
    )
    try:
        listed = await invoke(gateway_url, token, "server", "list", "--label", f"page={tag}",
                              "--json")  # fmt: skip
    finally:
        await catalog_pool.execute("DELETE FROM servers WHERE name LIKE $1", f"{server}-%")
    assert listed.exit_code == 0, listed.output
    names = [s["name"] for s in json.loads(listed.stdout)["items"]]
    assert len(names) == 1001 and len(set(names)) == 1001
    assert server in names and f"{server}-1000" in names

    removed = await invoke(gateway_url, token, "server", "rm", server, input="y\n")
    assert removed.exit_code == 0, removed.output
    assert f"removed server {server}" in removed.stdout
    gone = await invoke(gateway_url, token, "server", "show", server)
    assert gone.exit_code == 1 and "404 not_found" in gone.stderr
