"""The permission matrix: every API route is public or guarded, and every guard holds.

Routes are enumerated from the app itself, so a new route is covered (and must declare a
permission) without editing this file; ``EXPECTED`` pins the table so that a changed permission is
a deliberate, reviewed edit here and in ``docs/api.md``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import cast

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from common.settings import RateLimitSettings, Settings
from gateway.app import create_app
from gateway.auth.deps import AUTHENTICATED, PUBLIC_PATHS, MonitoringRead, route_permission
from gateway.routes import dependency_calls, iter_api_routes
from models.auth import DEFAULT_ROLE_PERMISSIONS, Permission
from tests.conftest import Tokens, serve

PUBLIC = "public"
EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/health"): PUBLIC,
    ("GET", "/health/ready"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("POST", "/api/v1/auth/token"): PUBLIC,
    ("POST", "/api/v1/auth/device"): PUBLIC,
    ("POST", "/api/v1/auth/logout"): PUBLIC,
    ("GET", "/api/v1/auth/me"): AUTHENTICATED,
    ("POST", "/api/v1/system/check"): "monitoring:read",
    ("GET", "/api/v1/databases"): "databases:read",
    ("GET", "/api/v1/databases/{database_id}"): "databases:read",
    ("POST", "/api/v1/databases/{database_id}/test-connection"): "databases:read",
    ("POST", "/api/v1/databases"): "databases:write",
    ("DELETE", "/api/v1/databases/{database_id}"): "databases:write",
    ("POST", "/api/v1/databases/{database_id}/migrate"): "migrations:execute",
    ("POST", "/api/v1/databases/{database_id}/rollback"): "migrations:rollback",
    ("GET", "/api/v1/databases/{database_id}/runs/{run_id}"): "migrations:read",
    ("GET", "/api/v1/databases/{database_id}/history"): "migrations:read",
    ("GET", "/api/v1/migration-sets"): "migrations:read",
    ("GET", "/api/v1/migration-sets/{name}"): "migrations:read",
    ("GET", "/api/v1/migration-sets/{name}/versions/{version}"): "migrations:read",
    ("GET", "/api/v1/migration-sets/{name}/lint"): "migrations:read",
    ("POST", "/api/v1/migration-sets"): "migrations:execute",
    ("POST", "/api/v1/migration-sets/archive"): "migrations:execute",
    ("POST", "/api/v1/migration-sets/{name}/versions/{version}/withdraw"): "migrations:execute",
    ("POST", "/api/v1/migrations"): "migrations:execute",
    ("POST", "/api/v1/migrations/dynamic"): "migrations:execute",
    ("GET", "/api/v1/migrations"): "migrations:read",
    ("GET", "/api/v1/migrations/{run_id}"): "migrations:read",
    ("GET", "/api/v1/migrations/{run_id}/stream"): "migrations:read",
    ("GET", "/api/v1/migrations/{run_id}/targets"): "migrations:read",
    ("POST", "/api/v1/migrations/{run_id}/pause"): "migrations:execute",
    ("POST", "/api/v1/migrations/{run_id}/resume"): "migrations:execute",
    ("POST", "/api/v1/migrations/{run_id}/cancel"): "migrations:execute",
    ("PATCH", "/api/v1/migrations/{run_id}"): "migrations:execute",
    ("POST", "/api/v1/migrations/{run_id}/rollback"): "migrations:rollback",
    ("POST", "/api/v1/webhooks"): "webhooks:manage",
    ("GET", "/api/v1/webhooks"): "webhooks:manage",
    ("GET", "/api/v1/webhooks/{webhook_id}"): "webhooks:manage",
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): "webhooks:manage",
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): "webhooks:manage",
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): "webhooks:manage",
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries/{event_id}"): "webhooks:manage",
    ("GET", "/api/v1/databases/{database_id}/health"): "monitoring:read",
    ("GET", "/api/v1/drift"): "monitoring:read",
    ("GET", "/api/v1/monitoring/summary"): "monitoring:read",
    ("GET", "/api/v1/monitoring/performance"): "monitoring:read",
    ("POST", "/api/v1/health/sweep"): "migrations:execute",
    ("GET", "/api/v1/servers"): "databases:read",
    ("GET", "/api/v1/servers/{name}"): "databases:read",
    ("POST", "/api/v1/servers"): "databases:write",
    ("PATCH", "/api/v1/servers/{name}"): "databases:write",
    ("DELETE", "/api/v1/servers/{name}"): "databases:write",
    ("PATCH", "/api/v1/databases/{database_id}"): "databases:write",
    ("POST", "/api/v1/tenants"): "tenants:provision",
    ("GET", "/api/v1/tenants"): "databases:read",
    ("GET", "/api/v1/tenants/{tenant_id}"): "databases:read",
    ("DELETE", "/api/v1/tenants/{tenant_id}"): "tenants:provision",
    ("GET", "/api/v1/tenants/{tenant_id}/credentials"): "tenants:credentials",
    ("POST", "/api/v1/tenants/{tenant_id}/credentials/rotate"): "tenants:credentials",
    ("PUT", "/api/v1/assignments/{set_name}"): "migrations:execute",
    ("GET", "/api/v1/assignments"): "migrations:read",
    ("GET", "/api/v1/assignments/{set_name}"): "migrations:read",
    ("DELETE", "/api/v1/assignments/{set_name}"): "migrations:execute",
    ("POST", "/api/v1/events"): "events:publish",
    ("GET", "/api/v1/events"): "monitoring:read",
    ("POST", "/codec/decode"): "monitoring:read",
    ("POST", "/codec/encode"): "migrations:execute",
}
ROLES = ("infra-viewer", "infra-operator", "infra-admin")
DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def declared(app: FastAPI) -> dict[tuple[str, str], str]:
    """(method, path) -> the permission its guard enforces, ``public``, or ``?`` (neither)."""
    table: dict[tuple[str, str], str] = {}
    for path, route in iter_api_routes(app):
        guards = {p for p in map(route_permission, dependency_calls(route)) if p}
        if len(guards) > 1:
            need = "several: " + ", ".join(sorted(guards))
        elif guards:
            need = guards.pop()
        else:
            need = PUBLIC if path in PUBLIC_PATHS else "?"
        for method in sorted(route.methods or ()):
            table[(method, path)] = need
    return table


def unguarded(app: FastAPI) -> list[tuple[str, str]]:
    """Routes that are neither public nor guarded: each one is a hole."""
    return sorted(key for key, need in declared(app).items() if need == "?")


APP = create_app(Settings(_env_file=None))
DECLARED = declared(APP)
GUARDED = sorted((key, need) for key, need in DECLARED.items() if need != PUBLIC)
PUBLIC_ROUTES = sorted(key for key, need in DECLARED.items() if need == PUBLIC)


def concrete(path: str) -> str:
    """``path`` with its parameters filled in with values that name nothing."""
    database_id = str(uuid.uuid4())
    return re.sub(
        r"\{(\w+)\}", lambda m: database_id if m[1] == "database_id" else f"no-such-{m[1]}", path
    )


def has(role: str, need: str) -> bool:
    if need == AUTHENTICATED:
        return True
    granted = DEFAULT_ROLE_PERMISSIONS[role]
    return Permission(need) in granted or Permission.ADMIN in granted


# -- the route table ----------------------------------------------------------------------------
def test_every_route_is_public_or_guarded() -> None:
    assert unguarded(APP) == []


def test_an_unguarded_route_is_caught() -> None:
    """The check above works: a route added without a permission shows up as a hole."""
    app = create_app(Settings(_env_file=None))

    @app.post("/api/v1/forgotten")
    async def forgotten() -> dict[str, str]:
        return {}

    router = APIRouter(prefix="/api/v1/extra")

    @router.delete("/{thing}")
    async def also_forgotten(thing: str) -> dict[str, str]:
        return {"thing": thing}

    @router.get("/guarded")
    async def guarded(principal: MonitoringRead) -> dict[str, str]:
        return {"subject": principal.subject}

    app.include_router(router)
    assert unguarded(app) == [("DELETE", "/api/v1/extra/{thing}"), ("POST", "/api/v1/forgotten")]
    assert declared(app)[("GET", "/api/v1/extra/guarded")] == "monitoring:read"


def test_public_paths_exist_and_carry_no_guard() -> None:
    paths = {path for _, path in PUBLIC_ROUTES}
    assert paths == set(PUBLIC_PATHS)


def test_every_guarded_route_declares_exactly_one_known_permission() -> None:
    known = {p.value for p in Permission} | {AUTHENTICATED}
    assert {key: need for key, need in GUARDED if need not in known} == {}


def test_declared_permissions_are_the_expected_table() -> None:
    assert DECLARED == EXPECTED


def _documented() -> dict[tuple[str, str], str]:
    """The permissions table of docs/api.md: rows of `METHOD /path` (one or more) and a need."""
    words = {"nothing": PUBLIC, "any valid token": AUTHENTICATED}
    table: dict[tuple[str, str], str] = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 2:
            continue
        routes = re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`]*)`", cells[0])
        need = cells[1].strip("`")
        for method, path in routes:
            table[(method, path)] = words.get(need, need)
    return table


def test_docs_list_every_route_with_its_permission() -> None:
    assert _documented() == EXPECTED


# -- the matrix, over HTTP ----------------------------------------------------------------------
@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    clients = cast(AsyncGenerator[httpx.AsyncClient, None], serve(app))
    try:
        yield await anext(clients)
    finally:
        await clients.aclose()


@pytest.fixture(scope="module")
async def gateway(settings: Settings, running_worker: None) -> AsyncIterator[httpx.AsyncClient]:
    """One gateway for the whole matrix (the session's task queue, so a worker answers)."""
    matrix = settings.model_copy(
        update={"rate_limit": RateLimitSettings(per_subject="10000/minute")}
    )
    async with running(create_app(matrix)) as client:
        yield client


async def _call(
    client: httpx.AsyncClient, method: str, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    body: dict[str, object] | None = None if method == "GET" else {}
    return await client.request(method, concrete(path), json=body, headers=headers)


@pytest.mark.parametrize(("route", "need"), GUARDED, ids=[f"{m} {p}" for (m, p), _ in GUARDED])
async def test_anonymous_is_refused(
    gateway: httpx.AsyncClient, route: tuple[str, str], need: str
) -> None:
    del need
    response = await _call(gateway, *route)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["type"] == "unauthenticated"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("route", "need"), GUARDED, ids=[f"{m} {p}" for (m, p), _ in GUARDED])
async def test_role_gets_what_it_holds_and_nothing_else(
    gateway: httpx.AsyncClient, tokens: Tokens, route: tuple[str, str], need: str, role: str
) -> None:
    response = await _call(gateway, *route, headers=tokens.headers(role))
    if has(role, need):
        assert response.status_code not in (401, 403, 429), response.text
    else:
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["type"] == "forbidden"
        assert error["details"]["required"] == need
        assert error["details"]["granted"] == sorted(
            p.value for p in DEFAULT_ROLE_PERMISSIONS[role]
        )


def test_the_matrix_is_not_vacuous() -> None:
    """Viewers are refused every write; the admin role satisfies every guard."""
    refused = {need for _, need in GUARDED if not has("infra-viewer", need)}
    assert refused >= {"databases:write", "migrations:execute", "migrations:rollback"}
    assert all(has("infra-admin", need) for _, need in GUARDED)


@pytest.mark.parametrize("route", PUBLIC_ROUTES, ids=[f"{m} {p}" for m, p in PUBLIC_ROUTES])
async def test_public_routes_answer_without_a_token(
    gateway: httpx.AsyncClient, route: tuple[str, str]
) -> None:
    response = await _call(gateway, *route)
    assert response.status_code not in (401, 403), response.text
    assert "WWW-Authenticate" not in response.headers
