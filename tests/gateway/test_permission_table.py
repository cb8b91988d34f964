"""docs/api.md's permission table is exactly what the routes declare, route for route."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.app import create_app
from gateway.auth.deps import AUTHENTICATED, PUBLIC_PATHS, route_permission
from gateway.routes import dependency_calls, iter_api_routes

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
ROW = re.compile(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \| (.+) \|$")


def _documented() -> dict[tuple[str, str], str]:
    table: dict[tuple[str, str], str] = {}
    for line in DOC.read_text().splitlines():
        match = ROW.match(line)
        if match:
            need = match[3].strip().strip("`")
            table[(match[1], match[2])] = {
                "nothing": "public",
                "any valid token": AUTHENTICATED,
            }.get(need, need)
    return table


def _declared() -> dict[tuple[str, str], str]:
    declared: dict[tuple[str, str], str] = {}
    for path, route in iter_api_routes(create_app()):
        permissions = {p for p in map(route_permission, dependency_calls(route)) if p}
        need = permissions.pop() if permissions else ("public" if path in PUBLIC_PATHS else "?")
        for method in route.methods or ():
            declared[(method, path)] = need
    return declared


def test_every_route_declares_a_permission_or_is_public() -> None:
    assert [key for key, need in _declared().items() if need == "?"] == []


def test_docs_list_exactly_the_declared_permissions() -> None:
    assert _documented() == _declared()
