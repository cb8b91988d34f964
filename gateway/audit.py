"""ASGI middleware that writes an audit event for every mutating call and every break-glass use."""

from __future__ import annotations

import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.audit import outcome_for_status, record_audit
from models.auth import Principal

log = logging.getLogger("tenantflow.audit")

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuditMiddleware:
    """After the response: subject, action (method and route), resource (path), outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            await self._record(scope, status)

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope.get("state", {})
        principal = state.get("principal")
        method = scope.get("method", "")
        break_glass = isinstance(principal, Principal) and principal.via == "break-glass"
        path: str = scope.get("path", "")
        if not (method in MUTATING_METHODS or break_glass) or not path.startswith(
            ("/api/", "/codec/")
        ):
            return
        route = scope.get("route")
        action = f"{method} {getattr(route, 'path', path)}"
        pool = getattr(scope["app"].state, "catalog", None)
        if pool is None:
            return
        try:
            await record_audit(
                pool,
                subject=principal.subject
                if isinstance(principal, Principal)
                else str(state.get("audit_subject", "anonymous")),
                action=action,
                resource=path,
                outcome=outcome_for_status(status),
                request_id=state.get("request_id"),
                details={"status": status, "via": getattr(principal, "via", None)},
            )
        except Exception:
            # The call already happened; losing its audit row must be loud, not fatal.
            log.exception("audit event could not be written", extra={"action": action})
