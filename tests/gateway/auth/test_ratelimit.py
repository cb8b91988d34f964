"""Rate limits: per caller and route, per IP on the token endpoint, per IP for failed logins."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import httpx
from fastapi import FastAPI

from cli.dev_issuer import DevIssuer
from cli.stack import EmbeddedPostgres
from cli.temporal_server import TemporalDevServer
from common.settings import Settings
from gateway.app import create_app
from tests.conftest import LEAK_CANARIES, Tokens, make_settings, serve

ME = "/api/v1/auth/me"
TOKEN = "/api/v1/auth/token"
WRONG_PASSWORD = "wrong-password-b7c1e0"
LEAK_CANARIES.add(WRONG_PASSWORD)


@asynccontextmanager
async def gateway(
    postgres: EmbeddedPostgres,
    temporal: TemporalDevServer,
    settings: Settings,
    **rate_limit: object,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A gateway of its own (fresh counters) with ``rate_limit`` settings."""
    app = create_app(
        make_settings(postgres, temporal.address, auth=settings.auth, rate_limit=rate_limit)
    )
    clients = cast(AsyncGenerator[httpx.AsyncClient, None], serve(app))
    try:
        yield app, await anext(clients)
    finally:
        await clients.aclose()


@asynccontextmanager
async def from_address(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client over the same running app whose requests come from ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def assert_rate_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["type"] == "rate_limited"
    retry_after = response.headers["Retry-After"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= 60
    assert error["details"]["retry_after_seconds"] == int(retry_after)


def password_grant(username: str, password: str) -> dict[str, str]:
    return {"grant_type": "password", "username": username, "password": password}


# -- per caller and route -----------------------------------------------------------------------
async def test_fourth_call_of_a_subject_on_a_route_is_limited(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
) -> None:
    async with gateway(postgres, temporal_server, settings, per_subject="3/minute") as (_, client):
        viewer = tokens.headers("infra-viewer")
        for _ in range(3):
            assert (await client.get(ME, headers=viewer)).status_code == 200
        limited = await client.get(ME, headers=viewer)
        assert_rate_limited(limited)
        assert limited.json()["error"]["details"]["limit"] == "3 per 1 minute"
        # A fresh token of the same subject is the same caller.
        assert_rate_limited(await client.get(ME, headers=tokens.headers("infra-viewer")))
        # Another subject is unaffected, and so is the same subject on another route.
        assert (await client.get(ME, headers=tokens.headers("infra-operator"))).status_code == 200
        other_route = await client.get("/api/v1/databases", headers=viewer)
        assert other_route.status_code == 200, other_route.text


# -- failed authentications per IP --------------------------------------------------------------
async def test_bad_logins_block_the_address_even_for_the_right_password(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    dev_issuer: DevIssuer,
) -> None:
    async with gateway(postgres, temporal_server, settings, failed_auth="5/minute") as (
        app,
        client,
    ):
        for _ in range(5):
            refused = await client.post(TOKEN, json=password_grant("viewer", WRONG_PASSWORD))
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["type"] == "unauthenticated"
        assert_rate_limited(await client.post(TOKEN, json=password_grant("viewer", WRONG_PASSWORD)))
        right = password_grant("viewer", dev_issuer.user_password("viewer"))
        blocked = await client.post(TOKEN, json=right)
        assert_rate_limited(blocked)
        assert "failed authentications" in blocked.json()["error"]["message"]
        # The block is per address: another client IP still logs in.
        async with from_address(app, "10.1.2.3") as elsewhere:
            response = await elsewhere.post(TOKEN, json=right)
            assert response.status_code == 200, response.text


async def test_bad_bearer_tokens_are_slowed_but_valid_tokens_pass(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
    dev_issuer: DevIssuer,
) -> None:
    """Forged tokens from an address get 429 past the limit; a valid token from it still works,
    and so does a password login (bad tokens are not password guesses)."""
    async with gateway(postgres, temporal_server, settings, failed_auth="5/minute") as (_, client):
        forged = tokens.token("infra-viewer")[:-4] + "AAAA"
        for _ in range(5):
            refused = await client.get(ME, headers={"Authorization": f"Bearer {forged}"})
            assert refused.status_code == 401
            assert refused.json()["error"]["type"] == "invalid_token"
        assert_rate_limited(await client.get(ME, headers={"Authorization": f"Bearer {forged}"}))
        valid = await client.get(ME, headers=tokens.headers("infra-admin"))
        assert valid.status_code == 200, valid.text
        right = password_grant("viewer", dev_issuer.user_password("viewer"))
        login = await client.post(TOKEN, json=right)
        assert login.status_code == 200, login.text


async def test_a_blocked_address_still_serves_valid_tokens(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
) -> None:
    """Password guessing blocks password logins from the address, not its valid bearer tokens."""
    async with gateway(postgres, temporal_server, settings, failed_auth="3/minute") as (_, client):
        for _ in range(3):
            await client.post(TOKEN, json=password_grant("viewer", WRONG_PASSWORD))
        assert_rate_limited(await client.post(TOKEN, json=password_grant("viewer", WRONG_PASSWORD)))
        valid = await client.get(ME, headers=tokens.headers("infra-viewer"))
        assert valid.status_code == 200, valid.text


async def test_expired_tokens_never_lock_anyone_out(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
    dev_issuer: DevIssuer,
) -> None:
    """A dashboard polling with an expired token behind a NAT: it keeps getting 401 'expired',
    and everyone else behind the same address keeps working, token or password."""
    async with gateway(postgres, temporal_server, settings, failed_auth="3/minute") as (_, client):
        expired = tokens.token("infra-viewer", lifetime_seconds=-600)
        for _ in range(10):
            refused = await client.get(ME, headers={"Authorization": f"Bearer {expired}"})
            assert refused.status_code == 401, refused.text
            assert "expired" in refused.json()["error"]["message"]
        assert (await client.get(ME, headers=tokens.headers("infra-viewer"))).status_code == 200
        right = password_grant("viewer", dev_issuer.user_password("viewer"))
        login = await client.post(TOKEN, json=right)
        assert login.status_code == 200, login.text


async def test_missing_token_is_not_counted_as_a_failed_authentication(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
) -> None:
    """Calling without credentials is not an attack on them: no block after many such calls."""
    async with gateway(postgres, temporal_server, settings, failed_auth="2/minute") as (_, client):
        for _ in range(5):
            assert (await client.get(ME)).json()["error"]["type"] == "unauthenticated"
        assert (await client.get(ME, headers=tokens.headers("infra-viewer"))).status_code == 200


# -- the token endpoint per IP ------------------------------------------------------------------
async def test_token_endpoint_is_limited_per_address(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    dev_issuer: DevIssuer,
) -> None:
    grant = {
        "grant_type": "client_credentials",
        "client_id": "tenantflow-api",
        "client_secret": dev_issuer.client_secret(),
    }
    async with gateway(postgres, temporal_server, settings, auth_endpoints="2/minute") as (
        app,
        client,
    ):
        for _ in range(2):
            response = await client.post(TOKEN, json=grant)
            assert response.status_code == 200, response.text
        limited = await client.post(TOKEN, json=grant)
        assert_rate_limited(limited)
        assert limited.json()["error"]["details"]["limit"] == "2 per 1 minute"
        async with from_address(app, "10.1.2.5") as elsewhere:
            assert (await elsewhere.post(TOKEN, json=grant)).status_code == 200


# -- switched off -------------------------------------------------------------------------------
async def test_disabled_limits_never_answer_429(
    postgres: EmbeddedPostgres,
    temporal_server: TemporalDevServer,
    settings: Settings,
    tokens: Tokens,
    dev_issuer: DevIssuer,
) -> None:
    calls = 4
    async with gateway(
        postgres,
        temporal_server,
        settings,
        enabled=False,
        per_subject="1/minute",
        auth_endpoints="1/minute",
        failed_auth="1/minute",
    ) as (_, client):
        statuses: list[int] = []
        for _ in range(calls):
            statuses.append(
                (await client.get(ME, headers=tokens.headers("infra-viewer"))).status_code
            )
            bad = {"Authorization": "Bearer not-a-token"}
            statuses.append((await client.get(ME, headers=bad)).status_code)
            wrong = await client.post(TOKEN, json=password_grant("viewer", WRONG_PASSWORD))
            statuses.append(wrong.status_code)
        right = password_grant("viewer", dev_issuer.user_password("viewer"))
        statuses.append((await client.post(TOKEN, json=right)).status_code)
    assert 429 not in statuses
    assert statuses == [200, 401, 401] * calls + [200]
