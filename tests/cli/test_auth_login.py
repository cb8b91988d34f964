"""The stored login and its refresh, the device-login polling and the refusals of ``login`` and
``logout``, against a fake gateway (tests/cli/test_api.py) and a fake clock: the client's own
rules, including answers the real identity provider is not asked to give."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import typer

import cli.auth
from cli.api import Api, ApiError
from cli.auth import (
    TOKEN_PATH,
    Login,
    LoginSession,
    _device_login,
    credentials_path,
    load_login,
    login,
    logout,
    remove_login,
    save_login,
)
from tests.cli.test_api import FakeGateway, envelope, fake_gateway

__all__ = ["fake_gateway"]  # the fixture, shared with the client's tests

GW = "http://gw.example"


class FakeClock:
    """Wall and monotonic time that only move when the code sleeps; records the sleeps."""

    def __init__(self) -> None:
        self.now = time.time()
        self.started = self.now
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now - self.started

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return tmp_path / "config" / "tenantflow"


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(cli.auth, "time", fake)
    return fake


def _login(**changes: Any) -> Login:
    values: dict[str, Any] = {
        "api": GW,
        "username": "operator",
        "access_token": "access-1",
        "refresh_token": "refresh-1",
        "expires_at": time.time() + 3600,
        "refresh_expires_at": time.time() + 1800,
    }
    values.update(changes)
    return Login(**values)


def _grant(**changes: Any) -> httpx.Response:
    body: dict[str, Any] = {"access_token": "access-2", "expires_in": 300}
    body.update(changes)
    return httpx.Response(200, json=body)


# -- the stored login ---------------------------------------------------------------------------
def test_login_file_round_trip_and_removal(config_home: Path) -> None:
    assert credentials_path() == config_home / "credentials.json"
    assert load_login() is None
    assert remove_login() is False  # nothing to remove
    stored = _login()
    assert save_login(stored) == config_home / "credentials.json"
    assert stat.S_IMODE(config_home.stat().st_mode) == 0o700
    loaded = load_login()
    assert loaded is not None and vars(loaded) == vars(stored)
    assert "access-1" not in repr(loaded)  # never in a traceback
    assert remove_login() is True
    assert load_login() is None


def test_a_failed_save_keeps_the_old_login_and_leaves_no_temporary_file(
    config_home: Path,
) -> None:
    save_login(_login())
    broken = _login(access_token=cast(Any, object()))  # not JSON: the write fails half-way
    with pytest.raises(TypeError):
        save_login(broken)
    assert [p.name for p in config_home.iterdir()] == ["credentials.json"]
    loaded = load_login()
    assert loaded is not None and loaded.access_token == "access-1"


@pytest.mark.parametrize("content", ["{not json", '{"api": "x"}', "[]"])
def test_an_unreadable_login_counts_as_none_and_says_so(
    config_home: Path, content: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config_home.mkdir(parents=True)
    (config_home / "credentials.json").write_text(content)
    assert load_login() is None
    assert capsys.readouterr().err == (
        f"warning: ignoring unreadable {config_home / 'credentials.json'}\n"
    )


# -- refreshing ---------------------------------------------------------------------------------
def test_a_fresh_token_is_used_without_asking_the_gateway(fake_gateway: FakeGateway) -> None:
    assert LoginSession(_login()).bearer() == "access-1"
    assert fake_gateway.requests == []


@pytest.mark.parametrize(
    "changes", [{"refresh_token": None}, {"refresh_expires_at": time.time() - 1}]
)
def test_a_login_that_cannot_be_refreshed_has_ended(
    fake_gateway: FakeGateway, changes: dict[str, Any]
) -> None:
    session = LoginSession(_login(expires_at=time.time() - 1, **changes))
    with pytest.raises(ApiError) as caught:
        session.bearer()
    assert caught.value.one_line() == (
        f"error (401 unauthenticated): your login to {GW} has ended: run `tenantflow login` again"
    )
    assert fake_gateway.requests == []  # nothing to send


def test_a_gateway_error_during_a_refresh_is_not_an_ended_login(
    fake_gateway: FakeGateway, config_home: Path
) -> None:
    stored = _login(expires_at=time.time() - 1)
    save_login(stored)
    fake_gateway.answer("POST", TOKEN_PATH, envelope(503, "dependency_unavailable", "IdP down"))
    with pytest.raises(ApiError) as caught:
        LoginSession(stored).refresh()
    assert (caught.value.status, caught.value.message) == (503, "IdP down")
    loaded = load_login()
    assert loaded is not None and loaded.access_token == "access-1"  # unchanged


def test_a_refresh_without_a_new_refresh_token_keeps_the_old_one(
    fake_gateway: FakeGateway, config_home: Path
) -> None:
    stored = _login(expires_at=time.time() - 1)
    fake_gateway.answer("POST", TOKEN_PATH, _grant())  # no refresh token, no refresh expiry
    session = LoginSession(stored)
    assert session.bearer() == "access-2"
    body = json.loads(fake_gateway.seen("POST", TOKEN_PATH)[0].content)
    assert body == {"grant_type": "refresh_token", "refresh_token": "refresh-1"}
    loaded = load_login()
    assert loaded is not None
    assert loaded.access_token == "access-2"
    assert loaded.refresh_token == "refresh-1"
    assert loaded.refresh_expires_at == stored.refresh_expires_at
    assert loaded.expires_at > time.time() + 250


def test_a_401_refreshes_once_and_retries(fake_gateway: FakeGateway, config_home: Path) -> None:
    fake_gateway.answer(
        "GET",
        "/api/v1/databases",
        envelope(401, "unauthenticated", "token expired"),
        httpx.Response(200, json={"items": []}),
    )
    fake_gateway.answer("POST", TOKEN_PATH, _grant(refresh_token="refresh-2"))
    api = Api(GW, LoginSession(_login()))
    assert api.request("GET", "/api/v1/databases") == {"items": []}
    sent = fake_gateway.seen("GET", "/api/v1/databases")
    assert [r.headers["Authorization"] for r in sent] == ["Bearer access-1", "Bearer access-2"]
    loaded = load_login()
    assert loaded is not None and loaded.refresh_token == "refresh-2"


# -- the device login ---------------------------------------------------------------------------
def _device_started(expires_in: int = 600, interval: int | None = 2) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "device_code": "dev-code",
            "user_code": "BCDF-GHJK",
            "verification_uri": f"{GW}/device",
            "expires_in": expires_in,
            "interval": interval,
        },
    )


def test_device_login_waits_slows_down_and_honours_rate_limits(
    fake_gateway: FakeGateway, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_gateway.answer("POST", "/api/v1/auth/device", _device_started())
    fake_gateway.answer(
        "POST",
        TOKEN_PATH,
        envelope(400, "authorization_pending", "pending"),
        envelope(400, "slow_down", "slow down"),
        envelope(429, "rate_limited", "too many", retry_after_seconds=3),
        _grant(refresh_token="refresh-9"),
    )
    issued = _device_login(Api(GW, None))
    assert issued["access_token"] == "access-2"
    # interval 2, 2 again after "pending", 7 after "slow_down", 3 as told, then 7 again.
    assert clock.sleeps == [2, 2, 7, 3.0, 7]
    assert capsys.readouterr().out == (
        f"Open {GW}/device and enter the code BCDF-GHJK to log in.\n"
    )
    polls = fake_gateway.seen("POST", TOKEN_PATH)
    assert json.loads(polls[0].content) == {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": "dev-code",
    }


def test_a_refused_device_login_is_one_line(
    fake_gateway: FakeGateway, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_gateway.answer("POST", "/api/v1/auth/device", _device_started(interval=None))
    fake_gateway.answer("POST", TOKEN_PATH, envelope(400, "access_denied", "the user said no"))
    with pytest.raises(typer.Exit) as caught:
        _device_login(Api(GW, None))
    assert caught.value.exit_code == 1
    assert clock.sleeps == [5]  # no interval given: 5 s
    assert capsys.readouterr().err == "error (400 access_denied): the user said no\n"


def test_a_device_login_nobody_approves_expires(
    fake_gateway: FakeGateway, clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_gateway.answer("POST", "/api/v1/auth/device", _device_started(expires_in=5))
    fake_gateway.answer("POST", TOKEN_PATH, envelope(400, "authorization_pending", "pending"))
    with pytest.raises(typer.Exit) as caught:
        _device_login(Api(GW, None))
    assert caught.value.exit_code == 1
    assert clock.sleeps == [2, 2, 2]
    assert capsys.readouterr().err == (
        "error: the device login expired before it was approved: run it again\n"
    )


# -- login and logout ---------------------------------------------------------------------------
def test_a_login_the_gateway_then_refuses_is_not_kept(
    fake_gateway: FakeGateway,
    config_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TF_TEST_PASSWORD", "pw")
    fake_gateway.answer("POST", TOKEN_PATH, _grant(refresh_token="refresh-2"))
    fake_gateway.answer("GET", "/api/v1/auth/me", envelope(403, "forbidden", "no tenantflow role"))
    with pytest.raises(typer.Exit) as caught:
        login(api=GW, username="nobody", password_env="TF_TEST_PASSWORD", device=False)
    assert caught.value.exit_code == 1
    assert capsys.readouterr().err == "error (403 forbidden): no tenantflow role\n"
    assert not credentials_path().exists()


def test_a_device_login_takes_the_username_from_the_gateway(
    fake_gateway: FakeGateway,
    config_home: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_gateway.answer("POST", "/api/v1/auth/device", _device_started())
    fake_gateway.answer("POST", TOKEN_PATH, _grant(refresh_token="r", refresh_expires_in=1800))
    fake_gateway.answer(
        "GET", "/api/v1/auth/me", httpx.Response(200, json={"subject": "s-1", "roles": []})
    )
    login(api=GW, username=None, password_env=None, device=True)
    out = capsys.readouterr().out
    assert f"logged in to {GW} as s-1 (roles: none)" in out
    stored = load_login()
    assert stored is not None and stored.username is None
    assert stored.refresh_expires_at == pytest.approx(clock.now + 1800)


def test_logout_without_a_refresh_token_only_forgets(
    fake_gateway: FakeGateway, config_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_login(_login(refresh_token=None))
    logout(api=f"{GW}/")
    assert capsys.readouterr().out == f"logged out of {GW}\n"
    assert fake_gateway.requests == []
    assert not credentials_path().exists()
    logout(api=None)
    assert capsys.readouterr().out == "not logged in\n"
