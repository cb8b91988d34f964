"""Liveness and readiness probes (open to everyone, no authentication)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from common.catalog import ping_catalog
from common.errors import DependencyUnavailable
from common.temporal_client import ping_temporal
from common.version import __version__
from gateway.deps import CatalogDep, SettingsDep, TemporalDep
from gateway.errors import RETRY_AFTER_SECONDS
from models.system import DependencyState, DependencyStatus, Liveness, Readiness

router = APIRouter(tags=["health"])


async def _probe(check: Callable[[], Awaitable[None]]) -> DependencyStatus:
    started = time.perf_counter()
    try:
        await check()
    except DependencyUnavailable as exc:
        return DependencyStatus(status=DependencyState.DOWN, error=exc.message)
    return DependencyStatus(
        status=DependencyState.UP, latency_ms=round((time.perf_counter() - started) * 1000, 2)
    )


@router.get("/health", summary="Liveness: 200 while the process lives")
async def health() -> Liveness:
    """Answers as long as the process can serve HTTP; checks no dependency."""
    return Liveness(version=__version__)


@router.get(
    "/health/ready",
    summary="Readiness: 200 only when Temporal and the catalog answer",
    responses={503: {"model": Readiness, "description": "A dependency is down; it is named."}},
)
async def ready(settings: SettingsDep, temporal: TemporalDep, catalog: CatalogDep) -> JSONResponse:
    """Probe Temporal and the catalog concurrently, each within the readiness timeout (an
    unreachable catalog answers 503 in that time, never hangs); 503 names whatever is down and
    says when to look again (``Retry-After``)."""
    timeout = settings.gateway.readiness_timeout_seconds
    temporal_status, catalog_status = await asyncio.gather(
        _probe(lambda: ping_temporal(temporal, timeout)),
        _probe(lambda: ping_catalog(catalog, timeout)),
    )
    dependencies = {"temporal": temporal_status, "catalog": catalog_status}
    down = [name for name, dep in dependencies.items() if dep.status is DependencyState.DOWN]
    body = Readiness(
        status=DependencyState.DOWN if down else DependencyState.UP, dependencies=dependencies
    )
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if down else None
    return JSONResponse(
        status_code=503 if down else 200, content=body.model_dump(mode="json"), headers=headers
    )
