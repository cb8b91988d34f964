"""Enumerate the gateway's API routes (used by the permission check and its tests)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute


def _walk(routes: Sequence[Any], prefix: str) -> Iterator[tuple[str, APIRoute]]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, route
        elif hasattr(route, "original_router"):  # an included router (FastAPI >= 0.160)
            context = getattr(route, "include_context", None)
            yield from _walk(route.original_router.routes, prefix + getattr(context, "prefix", ""))


def iter_api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """Every ``APIRoute`` with its full path, however routers were included."""
    yield from _walk(app.router.routes, "")


def dependency_calls(route: APIRoute) -> Iterator[Any]:
    """Every callable the route depends on, transitively."""
    stack = list(route.dependant.dependencies)
    while stack:
        dependant = stack.pop()
        if dependant.call is not None:
            yield dependant.call
        stack.extend(dependant.dependencies)
