"""``/api/v1/auth``: the token endpoint proxies grants to the (real, dev) issuer; ``/me``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from cli.dev_issuer import DevIssuer
from cli.stack import EmbeddedPostgres, free_port
from cli.temporal_server import TemporalDevServer
from common.settings import AuthSettings, Settings
from gateway.app import create_app
from models.auth import OPERATOR_PERMISSIONS, VIEWER_PERMISSIONS
from tests.conftest import LEAK_CANARIES, make_settings, serve

TOKEN = "/api/v1/auth/token"
ME = "/api/v1/auth/me"
WRONG_PASSWORD = "wrong-pw-3f9a1c7e5d"
LONG_PASSWORD = "long-pw-8e2b" * 100
LEAK_CANARIES.update({WRONG_PASSWORD, LONG_PASSWORD})


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for client in serve(create_app(settings)):
        yield client


async def me(client: httpx.AsyncClient, access_token: str) -> dict[str, Any]:
    response = await client.get(ME, headers={"Authorization": f"Bearer {access_token}"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage() + " " + " ".join(map(str, vars(record).values()))
        for record in caplog.records
    )


# -- grants that work ---------------------------------------------------------------------------
async def test_client_credentials_give_a_working_token(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    response = await gateway.post(
        TOKEN,
        json={
            "grant_type": "client_credentials",
            "client_id": "tenantflow-api",
            "client_secret": dev_issuer.client_secret(),
        },
    )
    assert response.status_code == 200, response.text
    issued = response.json()
    assert issued["token_type"] == "Bearer"
    assert issued["expires_in"] == 3600
    caller = await me(gateway, issued["access_token"])
    assert caller["subject"] == "service-account-tenantflow-api"
    assert caller["client_id"] == "tenantflow-api"
    assert caller["roles"] == ["infra-operator"]
    assert caller["permissions"] == sorted(p.value for p in OPERATOR_PERMISSIONS)


async def test_password_grant_gives_the_users_permissions(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = dev_issuer.user_password("viewer")
    response = await gateway.post(
        TOKEN, json={"grant_type": "password", "username": "viewer", "password": password}
    )
    assert response.status_code == 200, response.text
    caller = await me(gateway, response.json()["access_token"])
    assert caller["username"] == "viewer"
    assert caller["roles"] == ["infra-viewer"]
    assert caller["permissions"] == sorted(p.value for p in VIEWER_PERMISSIONS)
    assert password not in response.text
    assert password not in everything_logged(caplog)


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body",
    [
        {"grant_type": "client_credentials"},
        {"grant_type": "client_credentials", "client_id": "tenantflow-api"},
        {"grant_type": "client_credentials", "client_secret": "s"},
        {"grant_type": "password"},
        {"grant_type": "password", "username": "viewer"},
        {"grant_type": "password", "password": "p"},
        {"grant_type": "password", "username": "", "password": "p"},
    ],
    ids=lambda body: (
        ",".join(sorted(body)) + ("(empty user)" if body.get("username") == "" else "")
    ),
)
async def test_missing_fields_are_invalid_input(
    gateway: httpx.AsyncClient, body: dict[str, str]
) -> None:
    response = await gateway.post(TOKEN, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "invalid_input"


@pytest.mark.parametrize(
    "body",
    [{}, {"grant_type": "authorization_code", "code": "x"}, {"grant_type": "password", "scope": 3}],
)
async def test_malformed_requests_are_validation_errors(
    gateway: httpx.AsyncClient, body: dict[str, object]
) -> None:
    response = await gateway.post(TOKEN, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["type"] == "validation_error"


async def test_wrong_client_secret_is_401(
    gateway: httpx.AsyncClient, catalog_pool: asyncpg.Pool
) -> None:
    response = await gateway.post(
        TOKEN,
        json={
            "grant_type": "client_credentials",
            "client_id": "tenantflow-api",
            "client_secret": WRONG_PASSWORD,
        },
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert WRONG_PASSWORD not in response.text
    # The attempt is audited under the client it claimed to be, without the secret.
    row = await catalog_pool.fetchrow(
        "SELECT subject, action, outcome, details FROM audit_events WHERE request_id = $1",
        response.headers["X-Request-ID"],
    )
    assert row is not None
    assert (row["subject"], row["action"], row["outcome"]) == (
        "tenantflow-api",
        f"POST {TOKEN}",
        "denied",
    )
    assert WRONG_PASSWORD not in row["details"]


async def test_wrong_password_is_401_and_never_echoed_or_logged(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, catalog_pool: asyncpg.Pool
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await gateway.post(
        TOKEN, json={"grant_type": "password", "username": "viewer", "password": WRONG_PASSWORD}
    )
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == "unauthenticated"
    assert WRONG_PASSWORD not in response.text
    logged = everything_logged(caplog)
    assert "token grant refused" in logged
    assert WRONG_PASSWORD not in logged
    details = await catalog_pool.fetchval(
        "SELECT details::text FROM audit_events WHERE request_id = $1",
        response.headers["X-Request-ID"],
    )
    assert details is not None
    assert WRONG_PASSWORD not in details


async def test_rejected_password_is_not_echoed_by_validation_errors(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    response = await gateway.post(
        TOKEN, json={"grant_type": "password", "username": "viewer", "password": LONG_PASSWORD}
    )
    assert response.status_code == 422
    errors = response.json()["error"]["details"]["errors"]
    assert [e["loc"] for e in errors] == [["body", "password"]]
    assert "long-pw" not in response.text
    assert "long-pw" not in everything_logged(caplog)


async def test_unknown_user_is_401(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(
        TOKEN, json={"grant_type": "password", "username": "mallory", "password": WRONG_PASSWORD}
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "unauthenticated"


async def test_unreachable_issuer_is_503(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    dev_issuer: DevIssuer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = free_port()
    auth = AuthSettings(
        issuer_url=f"http://127.0.0.1:{closed}/realms/tenantflow",
        client_secret=dev_issuer.client_secret(),
    )
    password = dev_issuer.user_password("operator")
    async for client in serve(
        create_app(make_settings(postgres, temporal_server.address, auth=auth))
    ):
        response = await client.post(
            TOKEN, json={"grant_type": "password", "username": "operator", "password": password}
        )
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["type"] == "dependency_unavailable"
        assert error["details"]["dependency"] == "keycloak"
        assert password not in response.text
        # Validating a bearer token needs the keys, which cannot be fetched either: 503, not 401.
        keyless = await client.get(
            ME, headers={"Authorization": f"Bearer {dev_issuer.mint(subject='s', roles=[])}"}
        )
        assert keyless.status_code == 503, keyless.text
    assert password not in everything_logged(caplog)


async def test_me_without_a_token_is_401(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get(ME)
    assert response.status_code == 401
    assert json.loads(response.text)["error"]["type"] == "unauthenticated"


# -- refresh, device login, logout --------------------------------------------------------------
DEVICE = "/api/v1/auth/device"
LOGOUT = "/api/v1/auth/logout"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


async def password_login(
    client: httpx.AsyncClient, issuer: DevIssuer, user: str = "operator"
) -> dict[str, Any]:
    response = await client.post(
        TOKEN,
        json={"grant_type": "password", "username": user, "password": issuer.user_password(user)},
    )
    assert response.status_code == 200, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def test_refresh_grant_continues_the_login(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    issued = await password_login(gateway, dev_issuer)
    assert issued["refresh_token"] and issued["refresh_expires_in"] > 0
    refreshed = await gateway.post(
        TOKEN, json={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    )
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert renewed["access_token"] != issued["access_token"]
    assert (await me(gateway, renewed["access_token"]))["username"] == "operator"


async def test_logout_ends_the_session_and_is_idempotent(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    issued = await password_login(gateway, dev_issuer)
    refresh = issued["refresh_token"]
    assert (await gateway.post(LOGOUT, json={"refresh_token": refresh})).status_code == 204
    refused = await gateway.post(
        TOKEN, json={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "the session has ended: log in again"
    # Already ended (or never known): nothing left to end, still a success.
    assert (await gateway.post(LOGOUT, json={"refresh_token": refresh})).status_code == 204
    assert (await gateway.post(LOGOUT, json={})).status_code == 422


async def test_refused_refresh_tokens_do_not_lock_the_address_out(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    """Refresh tokens cannot be guessed, and a session that ended is no attack: past the
    failed-login limit (10 a minute) a password login from the same address still works."""
    for _ in range(11):
        refused = await gateway.post(
            TOKEN, json={"grant_type": "refresh_token", "refresh_token": "ended-" + "x" * 20}
        )
        assert refused.status_code == 401
    await password_login(gateway, dev_issuer)


@pytest.mark.parametrize(
    ("body", "needs"),
    [
        ({"grant_type": "refresh_token"}, "refresh_token"),
        ({"grant_type": DEVICE_GRANT}, "device_code"),
    ],
    ids=["refresh", "device"],
)
async def test_refresh_and_device_grants_need_their_field(
    gateway: httpx.AsyncClient, body: dict[str, str], needs: str
) -> None:
    response = await gateway.post(TOKEN, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].endswith(f"grant needs {needs}")


async def test_device_login_through_the_gateway(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer
) -> None:
    started = await gateway.post(DEVICE, json={})
    assert started.status_code == 200, started.text
    device = started.json()
    assert device["verification_uri"] == f"{dev_issuer.issuer_url}/device"
    assert device["user_code"] in device["verification_uri_complete"]
    assert device["expires_in"] > 0 and device["interval"] >= 1
    poll = {"grant_type": DEVICE_GRANT, "device_code": device["device_code"]}
    pending = await gateway.post(TOKEN, json=poll)
    assert pending.status_code == 400, pending.text
    assert pending.json()["error"]["type"] == "authorization_pending"
    # The user approves the code in a browser, on the issuer's page.
    async with httpx.AsyncClient() as browser:
        approved = await browser.post(
            device["verification_uri"],
            data={
                "user_code": device["user_code"].lower(),
                "username": "viewer",
                "password": dev_issuer.user_password("viewer"),
            },
        )
    assert approved.status_code == 200, approved.text
    issued = await gateway.post(TOKEN, json=poll)
    assert issued.status_code == 200, issued.text
    assert (await me(gateway, issued.json()["access_token"]))["username"] == "viewer"
    assert issued.json()["refresh_token"]
    # A device code is good for one login.
    spent = await gateway.post(TOKEN, json=poll)
    assert spent.status_code == 401
    assert spent.json()["error"]["type"] == "unauthenticated"


async def test_device_login_refused_for_an_unknown_client(gateway: httpx.AsyncClient) -> None:
    response = await gateway.post(DEVICE, json={"client_id": "stranger"})
    assert response.status_code == 401, response.text
    assert response.json()["error"]["details"] == {
        "client_id": "stranger",
        "oauth_error": "invalid_client",
    }


async def test_device_and_logout_with_the_issuer_down_are_503(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, dev_issuer: DevIssuer
) -> None:
    auth = AuthSettings(
        issuer_url=f"http://127.0.0.1:{free_port()}/realms/tenantflow",
        client_secret=dev_issuer.client_secret(),
    )
    async for client in serve(
        create_app(make_settings(postgres, temporal_server.address, auth=auth))
    ):
        for path, body in [(DEVICE, {}), (LOGOUT, {"refresh_token": "r"})]:
            response = await client.post(path, json=body)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["details"]["dependency"] == "keycloak"


async def test_a_device_login_not_approved_in_time_has_expired(
    gateway: httpx.AsyncClient, dev_issuer: DevIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dev_issuer._devices, "lifetime_seconds", 0)
    started = await gateway.post(DEVICE, json={})
    assert started.status_code == 200, started.text
    poll = {"grant_type": DEVICE_GRANT, "device_code": started.json()["device_code"]}
    expired = await gateway.post(TOKEN, json=poll)
    assert expired.status_code == 401, expired.text
    error = expired.json()["error"]
    assert error["type"] == "unauthenticated"
    assert error["message"] == "the device login expired before it was approved: start it again"


async def test_an_issuer_that_cannot_be_reached_did_not_answer_whatever_the_route(
    postgres: EmbeddedPostgres, temporal_server: TemporalDevServer, dev_issuer: DevIssuer
) -> None:
    auth = AuthSettings(
        issuer_url=f"http://127.0.0.1:{free_port()}/realms/tenantflow",
        client_secret=dev_issuer.client_secret(),
    )
    async for client in serve(
        create_app(make_settings(postgres, temporal_server.address, auth=auth))
    ):
        for path, body in [
            (TOKEN, {"grant_type": "refresh_token", "refresh_token": "r"}),
            (DEVICE, {}),
            (LOGOUT, {"refresh_token": "r"}),
        ]:
            response = await client.post(path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.json()["error"] == {
                "type": "dependency_unavailable",
                "message": "the identity provider did not answer",
                "details": {"dependency": "keycloak", "status": None},
            }
