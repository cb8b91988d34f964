"""``tenantflow login`` / ``logout``, commands using the stored login (refreshed), one-line gateway
errors, and ``tenantflow token`` finding the dev stack: over HTTP against a real gateway and the
session's dev issuer, the CLI run as a user runs it (a subprocess in a directory of its own)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from cli.api import Api, ApiError
from cli.dev_issuer import DevIssuer, dev_issuer_url
from cli.stack import free_port
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import ThreadedServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def gateway_url(settings: Settings) -> Iterator[str]:
    """The gateway served by uvicorn on a real port, with its lifespan (a fresh rate limiter)."""
    port = free_port()
    server = ThreadedServer(create_app(settings), port, lifespan="on")
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


class User:
    """A person at a terminal: an empty working directory and a config directory of their own."""

    def __init__(self, home: Path, api: str | None = None) -> None:
        self.cwd = home / "work"
        self.cwd.mkdir(parents=True)
        self.config = home / "config"
        self.api = api

    @property
    def credentials(self) -> Path:
        return self.config / "tenantflow" / "credentials.json"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TENANTFLOW_")}
        env.update({"PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(self.config), "COLUMNS": "200"})
        if self.api:
            env["TENANTFLOW_API_URL"] = self.api
        env.update(extra or {})
        return env

    def run(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", *args],
            env=self.env(env),
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    async def arun(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        # Off the event loop: the session's services run on it.
        return await asyncio.to_thread(self.run, *args, **kwargs)

    def stored(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.credentials.read_text())
        return loaded

    def store(self, **changes: Any) -> None:
        self.credentials.write_text(json.dumps({**self.stored(), **changes}))

    async def log_in(self, issuer: DevIssuer, username: str = "operator") -> None:
        result = await self.arun(
            "login",
            "--username",
            username,
            "--password-env",
            "TF_PASSWORD",
            env={"TF_PASSWORD": issuer.user_password(username)},
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture
def user(tmp_path: Path, gateway_url: str) -> User:
    return User(tmp_path, gateway_url)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


# -- login, then commands without a token -------------------------------------------------------
async def test_login_then_db_list_needs_no_token(
    tmp_path: Path, gateway_url: str, dev_issuer: DevIssuer
) -> None:
    # No TENANTFLOW_API_URL: the login names the gateway, and later commands use the login's.
    user = User(tmp_path)
    password = dev_issuer.user_password("operator")
    result = await user.arun(
        "login",
        "--api",
        gateway_url,
        "--username",
        "operator",
        "--password-env",
        "TF_PASSWORD",
        env={"TF_PASSWORD": password},
    )
    assert result.returncode == 0, result.stderr
    assert f"logged in to {gateway_url} as operator (roles: infra-operator)" in result.stdout
    stored = user.stored()
    assert set(stored) >= {"api", "access_token", "refresh_token", "expires_at"}
    assert stored["api"] == gateway_url
    assert stored["expires_at"] > time.time() + 3000
    for secret in (password, stored["access_token"], stored["refresh_token"]):
        assert secret not in result.stdout + result.stderr
    assert stat.S_IMODE(user.credentials.stat().st_mode) == 0o600
    assert stat.S_IMODE(user.credentials.parent.stat().st_mode) == 0o700
    assert [p.name for p in user.credentials.parent.iterdir()] == ["credentials.json"]

    listed = await user.arun("db", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "items" in json.loads(listed.stdout)
    assert stored["access_token"] not in listed.stdout + listed.stderr


async def test_password_prompt_is_hidden_and_asks_for_the_username(
    user: User, dev_issuer: DevIssuer
) -> None:
    password = dev_issuer.user_password("viewer")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cli.main", "login"],
        env=user.env(),
        cwd=user.cwd,
        input=f"viewer\n{password}\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Username:" in result.stdout and "Password:" in result.stdout
    assert password not in result.stdout + result.stderr  # not echoed
    assert "as viewer (roles: infra-viewer)" in result.stdout


async def test_refused_login_is_one_line_and_stores_nothing(user: User) -> None:
    result = await user.arun(
        "login", "-u", "viewer", "--password-env", "TF_PASSWORD", env={"TF_PASSWORD": "wrong-pw"}
    )
    line = one_error_line(result)
    assert line == "error (401 unauthenticated): the identity provider refused these credentials"
    assert not user.credentials.exists()


async def test_an_expired_access_token_is_refreshed_before_the_call(
    user: User, dev_issuer: DevIssuer
) -> None:
    await user.log_in(dev_issuer)
    before = user.stored()
    user.store(expires_at=time.time() - 5)
    listed = await user.arun("db", "list")
    assert listed.returncode == 0, listed.stderr
    after = user.stored()
    assert after["access_token"] != before["access_token"]
    assert after["expires_at"] > time.time() + 3000
    assert (
        jwt.decode(after["access_token"], options={"verify_signature": False})["sid"]
        == (jwt.decode(before["access_token"], options={"verify_signature": False})["sid"])
    )
    assert stat.S_IMODE(user.credentials.stat().st_mode) == 0o600


async def test_a_401_refreshes_the_login_and_retries(user: User, dev_issuer: DevIssuer) -> None:
    """The file says the token is fresh, the gateway says it expired: refresh, then retry."""
    await user.log_in(dev_issuer)
    stale = dev_issuer.mint(subject="s", roles=["infra-operator"], lifetime_seconds=-300)
    user.store(access_token=stale, expires_at=time.time() + 3000)
    listed = await user.arun("db", "list")
    assert listed.returncode == 0, listed.stderr
    assert user.stored()["access_token"] != stale


async def test_an_ended_session_says_to_log_in_again(user: User, dev_issuer: DevIssuer) -> None:
    await user.log_in(dev_issuer)
    stored = user.stored()
    # The session ends at the identity provider (an administrator, an idle timeout).
    dev_issuer.logout(
        {
            "client_id": "tenantflow-api",
            "client_secret": dev_issuer.client_secret(),
            "refresh_token": stored["refresh_token"],
        }
    )
    user.store(expires_at=time.time() - 5)
    line = one_error_line(await user.arun("db", "list"))
    assert line == (
        f"error (401 unauthenticated): your login to {user.api} has ended: "
        "run `tenantflow login` again"
    )


async def test_logout_removes_the_login_and_ends_its_session(
    user: User, dev_issuer: DevIssuer, gateway_url: str
) -> None:
    await user.log_in(dev_issuer)
    refresh_token = user.stored()["refresh_token"]
    result = await user.arun("logout")
    assert result.returncode == 0, result.stderr
    assert f"logged out of {gateway_url}" in result.stdout
    assert not user.credentials.exists()
    line = one_error_line(await user.arun("db", "list"))
    assert line == (
        f"error: not logged in to {gateway_url}: run `tenantflow login --api {gateway_url}`, "
        "or pass --token / set TENANTFLOW_TOKEN"
    )
    # Revoked, not just forgotten: the refresh token no longer works.
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        refused = await client.post(
            "/api/v1/auth/token",
            json={"grant_type": "refresh_token", "refresh_token": refresh_token},
        )
    assert refused.status_code == 401
    again = await user.arun("logout")
    assert again.returncode == 0
    assert "not logged in" in again.stdout


async def test_logout_with_the_gateway_gone_still_forgets_the_login(
    tmp_path: Path, gateway_url: str, dev_issuer: DevIssuer
) -> None:
    user = User(tmp_path)
    result = await user.arun(
        "login",
        "--api",
        gateway_url,
        "-u",
        "viewer",
        "--password-env",
        "TF_PASSWORD",
        env={"TF_PASSWORD": dev_issuer.user_password("viewer")},
    )
    assert result.returncode == 0, result.stderr
    gone = f"http://127.0.0.1:{free_port()}"
    user.store(api=gone)
    out = await user.arun("logout")
    assert out.returncode == 0
    assert out.stderr.startswith("warning: the session was not ended (0 unreachable): ")
    assert len(out.stderr.splitlines()) == 1
    assert f"logged out of {gone}" in out.stdout
    assert not user.credentials.exists()


async def test_password_env_that_is_not_set(user: User) -> None:
    line = one_error_line(await user.arun("login", "-u", "viewer", "--password-env", "NOPE_PW"))
    assert line == "error: the environment variable NOPE_PW is not set"
    assert not user.credentials.exists()


async def test_a_login_is_not_sent_to_another_gateway(user: User, dev_issuer: DevIssuer) -> None:
    await user.log_in(dev_issuer)
    elsewhere = f"http://127.0.0.1:{free_port()}"
    line = one_error_line(await user.arun("db", "list", "--api", elsewhere))
    assert line.startswith(f"error: not logged in to {elsewhere} (logged in to {user.api} only)")


async def test_device_login(user: User, dev_issuer: DevIssuer) -> None:
    """``login --device``: the user approves the code on the issuer's page, the CLI gets in."""
    process = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "cli.main", "login", "--device"],
        env=user.env(),
        cwd=user.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = await asyncio.to_thread(process.stdout.readline)
        match = re.fullmatch(
            r"Open (\S+) and enter the code ([A-Z]{4}-[A-Z]{4}) to log in\.\n", first
        )
        assert match, first
        page, code = match[1], match[2]
        assert page.startswith(f"{dev_issuer.issuer_url}/device")
        async with httpx.AsyncClient() as browser:
            shown = await browser.get(page)
            assert shown.status_code == 200 and code in shown.text
            approved = await browser.post(
                page,
                data={
                    "user_code": code,
                    "username": "admin",
                    "password": dev_issuer.user_password("admin"),
                },
            )
            assert approved.status_code == 200, approved.text
        out, err = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"logged in to {user.api} as admin (roles: infra-admin)" in out
    assert user.stored()["username"] == "admin"
    listed = await user.arun("db", "list")
    assert listed.returncode == 0, listed.stderr


# -- gateway errors as one line -----------------------------------------------------------------
async def test_gateway_errors_print_as_one_line(user: User, dev_issuer: DevIssuer) -> None:
    await user.log_in(dev_issuer)
    missing = "00000000-0000-4000-8000-000000000000"
    line = one_error_line(await user.arun("db", "show", missing))
    assert line.startswith("error (404 not_found): ")
    # Details are folded into the line: a validation error names its fields.
    token = user.stored()["access_token"]
    api = Api(user.api or "", token)
    with pytest.raises(ApiError) as raised:
        await asyncio.to_thread(api.request, "POST", "/api/v1/databases", json={"port": "x"})
    folded = raised.value.one_line()
    assert "\n" not in folded
    assert folded.startswith(
        "error (422 validation_error): the request does not match the schema; "
    )
    assert "name: Field required" in folded
    assert "port: " in folded


def test_one_line_folds_details_and_redacts_secrets() -> None:
    error = ApiError(
        409,
        "conflict",
        "the target is busy\nwith another run",
        {
            "run_id": "r-1",
            "targets": [f"t{i}" for i in range(8)],
            "dsn": "postgresql://u:hunter2@h/db",
            "password": "hunter2",
            "nested": {"a": 1},
        },
    )
    line = error.one_line()
    assert "\n" not in line
    assert line.startswith("error (409 conflict): the target is busy with another run; run_id: r-1")
    assert "targets: t0, t1, t2, t3, t4 (+3 more)" in line
    assert 'nested: {"a":1}' in line
    assert "hunter2" not in line
    assert ApiError(429, "rate_limited", "slow down", {"retry_after_seconds": 7}).one_line() == (
        "error (429 rate_limited): slow down; retry after 7 s"
    )
    assert len(ApiError(500, "x", "y" * 5000).one_line()) <= 600
    # A detail the message already states is not repeated.
    assert ApiError(404, "not_found", "no database d-123", {"id": "d-123"}).one_line() == (
        "error (404 not_found): no database d-123"
    )


# -- tenantflow token ---------------------------------------------------------------------------
def _kids(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "issuer" / "keys").glob("*.pem"))


def test_token_from_an_empty_directory_exits_1_and_creates_nothing(tmp_path: Path) -> None:
    user = User(tmp_path)
    result = user.run("token")
    line = one_error_line(result)
    looked = f"looked for its issuer keys in .tenantflow in {user.cwd} or its parents"
    assert line.startswith(f"error: no dev stack found ({looked})")
    assert "TENANTFLOW_HOME" in line and "make dev" in line
    assert result.stdout == ""
    assert list(user.cwd.iterdir()) == []
    assert not user.config.exists()


def test_token_with_an_empty_tenantflow_home_exits_1(tmp_path: Path) -> None:
    user = User(tmp_path)
    home = tmp_path / "nothing-here"
    home.mkdir()
    line = one_error_line(user.run("token", env={"TENANTFLOW_HOME": str(home)}))
    assert f"looked for its issuer keys in {home})" in line
    assert list(home.iterdir()) == [] and list(user.cwd.iterdir()) == []


def test_token_found_through_a_parent_directory(tmp_path: Path) -> None:
    project = tmp_path / "project"
    issuer = DevIssuer(project / ".tenantflow" / "issuer", dev_issuer_url(18080))
    keys = _kids(project / ".tenantflow")
    user = User(project / "deep" / "inside")
    result = user.run("token", "--role", "infra-viewer")
    assert result.returncode == 0, result.stderr
    kid = jwt.get_unverified_header(result.stdout.strip())["kid"]
    assert kid == issuer.jwks()["keys"][0]["kid"]
    assert _kids(project / ".tenantflow") == keys
    assert list(user.cwd.iterdir()) == []


async def test_token_found_through_tenantflow_home_is_accepted_by_the_gateway(
    tmp_path: Path, dev_issuer: DevIssuer, gateway_url: str
) -> None:
    """The running stack's own key: the printed token works (the old command's got 401)."""
    home = dev_issuer.data_dir.parent
    keys = _kids(home)
    port = dev_issuer.issuer_url.split(":")[2].split("/")[0]
    user = User(tmp_path)
    result = await user.arun(
        "token",
        "--role",
        "infra-viewer",
        env={"TENANTFLOW_HOME": str(home), "TENANTFLOW_DEV__ISSUER_PORT": port},
    )
    assert result.returncode == 0, result.stderr
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        me = await client.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {result.stdout.strip()}"}
        )
    assert me.status_code == 200, me.text
    assert me.json()["roles"] == ["infra-viewer"]
    assert _kids(home) == keys
    assert list(user.cwd.iterdir()) == []
