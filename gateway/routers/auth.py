"""``/api/v1/auth``: tokens proxied to Keycloak, and who the caller is."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakError

from common.errors import AuthenticationRequired, DependencyUnavailable, InvalidInput
from gateway.auth.deps import Authenticated, Authenticator, get_authenticator
from gateway.deps import SettingsDep
from models.auth import Me, TokenRequest, TokenResponse
from models.errors import ErrorResponse

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
log = logging.getLogger("tenantflow.auth")


@router.post(
    "/token",
    summary="Get an access token (client credentials or password grant)",
    responses={
        401: {"model": ErrorResponse, "description": "Keycloak refused the credentials."},
        429: {"model": ErrorResponse, "description": "Too many attempts from this address."},
    },
)
async def token(
    body: TokenRequest,
    request: Request,
    settings: SettingsDep,
    authenticator: Annotated[Authenticator, Depends(get_authenticator)],
) -> TokenResponse:
    """Proxy a grant to the realm's token endpoint. Client credentials need the caller's own
    client id and secret; the password grant uses the API's client unless one is given."""
    client_ip = request.client.host if request.client else "unknown"
    # Who tried to log in, for the audit trail (the password never leaves this function).
    request.state.audit_subject = body.username or body.client_id or settings.auth.client_id
    limiter = authenticator.limiter
    await limiter.check_not_blocked(client_ip)
    await limiter.check_auth_endpoint(client_ip)
    auth = settings.auth
    secret: str | None
    if body.grant_type == "client_credentials":
        if not body.client_id or body.client_secret is None:
            raise InvalidInput("client_credentials needs client_id and client_secret")
        client_id = body.client_id
        secret = body.client_secret.get_secret_value()
    else:
        if not body.username or body.password is None:
            raise InvalidInput("the password grant needs username and password")
        client_id = body.client_id or auth.client_id
        secret = (
            body.client_secret.get_secret_value()
            if body.client_secret is not None
            else (auth.client_secret.get_secret_value() if auth.client_secret else None)
        )
    keycloak = KeycloakOpenID(
        server_url=auth.server_url,
        realm_name=auth.realm,
        client_id=client_id,
        client_secret_key=secret,
        timeout=int(auth.http_timeout_seconds),
    )
    try:
        issued: dict[str, Any] = await keycloak.a_token(
            username=body.username or "",
            password=body.password.get_secret_value() if body.password else "",
            grant_type=body.grant_type,
            scope=body.scope,
        )
    except KeycloakAuthenticationError:
        await limiter.record_failed_auth(client_ip)
        log.warning(
            "token grant refused",
            extra={"grant_type": body.grant_type, "client_id": client_id, "client": client_ip},
        )
        raise AuthenticationRequired("the identity provider refused these credentials") from None
    except KeycloakError as exc:
        code = getattr(exc, "response_code", None)
        if code in (400, 401):
            await limiter.record_failed_auth(client_ip)
            raise AuthenticationRequired(
                "the identity provider refused these credentials"
            ) from None
        raise DependencyUnavailable(
            "the identity provider did not answer",
            details={"dependency": "keycloak", "status": code},
        ) from None
    except OSError as exc:
        raise DependencyUnavailable(
            "the identity provider is unreachable",
            details={"dependency": "keycloak", "cause": type(exc).__name__},
        ) from None
    return TokenResponse.model_validate(issued)


@router.get("/me", summary="Who am I: subject, roles, permissions")
async def me(principal: Authenticated) -> Me:
    """The caller as the gateway sees it."""
    return Me(**principal.model_dump())
