"""Route guards as ``Annotated`` aliases: ``principal: MigrationsExecute`` authenticates the
caller, applies the rate limits and checks the permission, or answers 401/403/429.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from common.errors import AuthenticationRequired, PermissionDenied
from common.settings import AuthSettings
from gateway.auth.ratelimit import RateLimiter
from gateway.auth.tokens import ExpiredToken, InvalidToken, TokenValidator
from models.auth import ADMIN_PERMISSIONS, Permission, Principal

log = logging.getLogger("tenantflow.auth")

BREAK_GLASS_HEADER = "X-Break-Glass-Token"
PERMISSION_ATTRIBUTE = "__tenantflow_permission__"
AUTHENTICATED = "authenticated"
# Routes anyone may call; every other route must declare a permission (tests enforce it).
# The auth endpoints are how a caller gets (or ends) a login; they have their own per-IP limit.
PUBLIC_PATHS = frozenset(
    {
        "/health",
        "/health/ready",
        "/metrics",
        "/api/v1/auth/token",
        "/api/v1/auth/device",
        "/api/v1/auth/logout",
    }
)

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="A Keycloak access token (RS256). `tenantflow token` mints one in development.",
)


class Authenticator:
    """Holds the token validator, the rate limiter and the break-glass hash."""

    def __init__(self, settings: AuthSettings, validator: TokenValidator, limiter: RateLimiter):
        self.settings = settings
        self.validator = validator
        self.limiter = limiter

    def _break_glass(self, presented: str) -> bool:
        expected = self.settings.break_glass_token_sha256
        if expected is None:
            return False
        digest = hashlib.sha256(presented.encode()).hexdigest()
        return hmac.compare_digest(digest, expected.get_secret_value())

    async def authenticate(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """Establish who calls. Valid tokens are always served; a wrong break-glass token counts
        as a failed login, a bad bearer token only toward slowing further bad tokens, and an
        expired one (a client that forgot to refresh) toward nothing."""
        client_ip = request.client.host if request.client else "unknown"
        emergency = request.headers.get(BREAK_GLASS_HEADER)
        if emergency is not None:
            # A guessable secret, like a password: the brute-force block applies.
            await self.limiter.check_not_blocked(client_ip)
            if self._break_glass(emergency):
                log.warning(
                    "break-glass access used",
                    extra={"path": request.url.path, "method": request.method, "client": client_ip},
                )
                return Principal(
                    subject="break-glass",
                    roles=[],
                    permissions=ADMIN_PERMISSIONS,
                    via="break-glass",
                )
            await self.limiter.record_failed_auth(client_ip)
            log.warning("break-glass token refused", extra={"client": client_ip})
            raise InvalidToken("break-glass token refused")
        if credentials is None:
            if request.headers.get("authorization"):
                await self.limiter.check_bad_token(client_ip)
                raise InvalidToken("the Authorization header must be 'Bearer <token>'")
            raise AuthenticationRequired("authentication required: send a bearer token")
        try:
            return await self.validator.validate(credentials.credentials)
        except ExpiredToken:
            raise
        except InvalidToken:
            await self.limiter.check_bad_token(client_ip)
            raise


async def get_authenticator(request: Request) -> Authenticator:
    """The authenticator built in the lifespan."""
    authenticator: Authenticator = request.app.state.authenticator
    return authenticator


def require(permission: Permission | None) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits callers holding ``permission`` (any valid caller for None)."""

    async def guard(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
        authenticator: Annotated[Authenticator, Depends(get_authenticator)],
    ) -> Principal:
        principal = await authenticator.authenticate(request, credentials)
        request.state.principal = principal
        route = request.scope.get("route")
        await authenticator.limiter.check_subject(
            principal.subject, getattr(route, "path", request.url.path)
        )
        if permission is not None and not principal.has(permission):
            raise PermissionDenied(
                f"missing permission {permission.value}",
                details={"required": permission.value, "granted": principal.permissions},
            )
        return principal

    declared = permission.value if permission is not None else AUTHENTICATED
    setattr(guard, PERMISSION_ATTRIBUTE, declared)
    guard.__name__ = f"require_{declared.replace(':', '_')}"
    return guard


def route_permission(call: object) -> str | None:
    """The permission (or ``"authenticated"``) a dependency callable enforces, if a guard."""
    value = getattr(call, PERMISSION_ATTRIBUTE, None)
    return value if isinstance(value, str) else None


Authenticated = Annotated[Principal, Depends(require(None))]

DatabasesRead = Annotated[Principal, Depends(require(Permission.DATABASES_READ))]
DatabasesWrite = Annotated[Principal, Depends(require(Permission.DATABASES_WRITE))]
MigrationsRead = Annotated[Principal, Depends(require(Permission.MIGRATIONS_READ))]
MigrationsExecute = Annotated[Principal, Depends(require(Permission.MIGRATIONS_EXECUTE))]
MigrationsRollback = Annotated[Principal, Depends(require(Permission.MIGRATIONS_ROLLBACK))]
TenantsProvision = Annotated[Principal, Depends(require(Permission.TENANTS_PROVISION))]
TenantsCredentials = Annotated[Principal, Depends(require(Permission.TENANTS_CREDENTIALS))]
EventsPublish = Annotated[Principal, Depends(require(Permission.EVENTS_PUBLISH))]
MonitoringRead = Annotated[Principal, Depends(require(Permission.MONITORING_READ))]
WebhooksManage = Annotated[Principal, Depends(require(Permission.WEBHOOKS_MANAGE))]
Admin = Annotated[Principal, Depends(require(Permission.ADMIN))]
