"""``/metrics`` (Prometheus text format, unauthenticated like ``/health``) and the middleware that
times every HTTP request: counted by route template, method and status for Prometheus, and
kept in the monitoring API's latency window.

The route label is the template (``/api/v1/databases/{database_id}``), never the path, so no
tenant's or target's id reaches a label; a request that matches no route is ``unmatched``, and
a method outside the standard set is ``other``. Raw ASGI, like ``gateway.middleware``, so SSE
streams pass through untouched.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import NotFound
from common.telemetry.metrics import GatewayMetrics
from gateway.monitoring import UNMATCHED as WINDOW_UNMATCHED
from gateway.monitoring import LatencyWindow

router = APIRouter(tags=["health"])

METRICS_PATH = "/metrics"
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The matched route's path template (a mount's prefix for a mounted app)."""
    route = scope.get("route")
    path = getattr(route, "path", None) if route is not None else None
    if isinstance(path, str) and path:
        return path
    return UNMATCHED


class RequestTimingMiddleware:
    """Times every HTTP request once, for two readers: the Prometheus series
    (``tenantflow_http_requests_total`` and ``..._request_duration_seconds``: the whole
    request, by route template, method and status; when metrics are on) and the monitoring
    API's latency window (time to the response's first byte, which a stream reaches at once,
    under ``METHOD /route/{template}``)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics | None, window: LatencyWindow) -> None:
        self.app = app
        self.metrics = metrics
        self.window = window

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        first_byte: float | None = None
        status = 500  # an exception that escapes every handler is answered 500 upstream

        async def send_with_status(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
                first_byte = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            ended = time.perf_counter()
            route = route_template(scope)
            method = scope.get("method", "GET")
            window_key = f"{method} {route}" if route != UNMATCHED else WINDOW_UNMATCHED
            self.window.record(window_key, ((first_byte or ended) - started) * 1000)
            if self.metrics is not None:
                labels = {"route": route, "method": method if method in _METHODS else "other"}
                self.metrics.http_duration.record(ended - started, labels)
                labels["status"] = str(status)
                self.metrics.http_requests.add(1, labels)


@router.get(
    METRICS_PATH,
    summary="Prometheus metrics of this gateway process",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}, 404: {"description": "Metrics are off."}},
)
async def metrics(request: Request) -> Response:
    """Every metric of this process in the Prometheus text format (no authentication: scraped
    like ``/health``; no label carries a tenant's or a target's id)."""
    gateway_metrics: GatewayMetrics | None = getattr(request.app.state, "metrics", None)
    if gateway_metrics is None:
        raise NotFound("metrics are turned off (TENANTFLOW_TELEMETRY__METRICS_ENABLED=false)")
    body, content_type = gateway_metrics.registry.exposition()
    return Response(content=body, media_type=content_type)


def count_event(request: Request, event_type: str) -> None:
    """One received event (``unsupported`` for a type no starter handles: bounded)."""
    gateway_metrics: GatewayMetrics | None = getattr(request.app.state, "metrics", None)
    if gateway_metrics is not None:
        gateway_metrics.events_received.add(1, {"type": event_type})
