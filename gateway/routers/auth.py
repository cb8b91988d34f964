"""``/api/v1/auth``: grants, device logins and logouts proxied to Keycloak; who the caller is."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from keycloak import KeycloakOpenID
from keycloak.exceptions import KeycloakAuthenticationError, KeycloakError
from pydantic import SecretStr

from common.errors import AuthenticationRequired, DependencyUnavailable, InvalidInput
from common.settings import AuthSettings
from gateway.auth.deps import Authenticated, Authenticator, get_authenticator
from gateway.deps import SettingsDep
from models.auth import (
    DEVICE_CODE_GRANT,
    DeviceAuthorization,
    DeviceAuthorizationRequest,
    LogoutRequest,
    Me,
    TokenRequest,
    TokenResponse,
)
from models.errors import ErrorResponse

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
log = logging.getLogger("tenantflow.auth")

AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]
REFUSED = "the identity provider refused these credentials"


class AuthorizationPending(InvalidInput):
    """Device login: the user has not approved it yet; poll again after the interval."""

    error_type = "authorization_pending"


class SlowDown(InvalidInput):
    """Device login: polled too often; add five seconds to the interval (RFC 8628)."""

    error_type = "slow_down"


# Keycloak's OAuth error codes for a grant that cannot (or can no longer) succeed, as we word
# them for people: the CLI prints these messages as they are.
_GRANT_ENDED = {
    "expired_token": "the device login expired before it was approved: start it again",
    "access_denied": "the device login was denied",
}


def _client(
    auth: AuthSettings, client_id: str | None, client_secret: SecretStr | None
) -> tuple[str, str | None]:
    """The client a grant runs as: the one given, else the API client with its secret."""
    if client_secret is not None:
        return client_id or auth.client_id, client_secret.get_secret_value()
    if client_id and client_id != auth.client_id:
        return client_id, None  # a public client (tenantflow-cli) has no secret
    return auth.client_id, auth.client_secret.get_secret_value() if auth.client_secret else None


def _keycloak(auth: AuthSettings, client_id: str, secret: str | None) -> KeycloakOpenID:
    return KeycloakOpenID(
        server_url=auth.server_url,
        realm_name=auth.realm,
        client_id=client_id,
        client_secret_key=secret,
        timeout=int(auth.http_timeout_seconds),
    )


def _oauth_error(exc: KeycloakError) -> str:
    """The OAuth ``error`` code of Keycloak's answer (``""`` when there is none)."""
    try:
        body = json.loads(exc.response_body or b"")
    except (ValueError, TypeError):
        return ""
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


def _unavailable(exc: KeycloakError) -> DependencyUnavailable:
    """python-keycloak wraps every failure to reach the realm (refused connection, timeout)
    in a ``KeycloakConnectionError`` (no status) and an unexpected answer in a
    ``KeycloakError`` with its status."""
    return DependencyUnavailable(
        "the identity provider did not answer",
        details={"dependency": "keycloak", "status": getattr(exc, "response_code", None)},
    )


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _grant_client(body: TokenRequest, auth: AuthSettings) -> tuple[str, str | None]:
    """Check the fields the grant needs; return the client it runs as."""
    if body.grant_type == "client_credentials":
        if not body.client_id or body.client_secret is None:
            raise InvalidInput("client_credentials needs client_id and client_secret")
        return body.client_id, body.client_secret.get_secret_value()
    needed = {
        "password": (body.username and body.password is not None, "username and password"),
        "refresh_token": (body.refresh_token is not None, "refresh_token"),
        DEVICE_CODE_GRANT: (body.device_code is not None, "device_code"),
    }
    present, names = needed[body.grant_type]
    if not present:
        raise InvalidInput(f"the {body.grant_type} grant needs {names}")
    return _client(auth, body.client_id, body.client_secret)


async def _request_grant(keycloak: KeycloakOpenID, body: TokenRequest) -> dict[str, Any]:
    if body.grant_type == "refresh_token":
        assert body.refresh_token is not None
        return await keycloak.a_refresh_token(body.refresh_token.get_secret_value())
    if body.grant_type == DEVICE_CODE_GRANT:
        assert body.device_code is not None
        return await keycloak.a_token(
            username=None,
            password=None,
            grant_type=DEVICE_CODE_GRANT,
            scope=body.scope,
            device_code=body.device_code.get_secret_value(),
        )
    return await keycloak.a_token(
        username=body.username or "",
        password=body.password.get_secret_value() if body.password else "",
        grant_type=body.grant_type,
        scope=body.scope,
    )


@router.post(
    "/token",
    summary="Get an access token (client credentials, password, refresh token or device code)",
    responses={
        400: {
            "model": ErrorResponse,
            "description": "A field the grant needs is missing, or (device code) the login is "
            "not approved yet: `authorization_pending` / `slow_down`.",
        },
        401: {"model": ErrorResponse, "description": "Keycloak refused the grant."},
        429: {"model": ErrorResponse, "description": "Too many attempts from this address."},
    },
)
async def token(
    body: TokenRequest,
    request: Request,
    settings: SettingsDep,
    authenticator: AuthenticatorDep,
) -> TokenResponse:
    """Proxy a grant to the realm's token endpoint. Client credentials need the caller's own
    client id and secret; the other grants use the API's client unless one is given."""
    client_ip = _client_ip(request)
    # Who tried to log in, for the audit trail (the password never leaves this function).
    request.state.audit_subject = body.username or body.client_id or settings.auth.client_id
    # Only guesses of passwords and client secrets count towards the lock-out: refresh tokens
    # and device codes cannot be guessed, and a session that merely ended must not lock anyone.
    guessable = body.grant_type in ("password", "client_credentials") or bool(body.client_secret)
    limiter = authenticator.limiter
    if guessable:
        await limiter.check_not_blocked(client_ip)
    await limiter.check_auth_endpoint(client_ip)
    client_id, secret = _grant_client(body, settings.auth)
    try:
        issued = await _request_grant(_keycloak(settings.auth, client_id, secret), body)
    except KeycloakError as exc:
        code = getattr(exc, "response_code", None)
        error = _oauth_error(exc)
        if error == "authorization_pending":
            raise AuthorizationPending("the device login is not approved yet") from None
        if error == "slow_down":
            raise SlowDown("polling too fast: wait five seconds longer between tries") from None
        if error in _GRANT_ENDED:
            raise AuthenticationRequired(_GRANT_ENDED[error]) from None
        if not isinstance(exc, KeycloakAuthenticationError) and code not in (400, 401):
            raise _unavailable(exc) from None
        if body.grant_type == "refresh_token" and error == "invalid_grant":
            raise AuthenticationRequired("the session has ended: log in again") from None
        if guessable:
            await limiter.record_failed_auth(client_ip)
        log.warning(
            "token grant refused",
            extra={"grant_type": body.grant_type, "client_id": client_id, "client": client_ip},
        )
        raise AuthenticationRequired(REFUSED) from None
    return TokenResponse.model_validate(issued)


@router.post(
    "/device",
    summary="Start a device login (RFC 8628): a code for the user to approve in a browser",
    responses={
        401: {"model": ErrorResponse, "description": "Keycloak refused the client."},
        429: {"model": ErrorResponse, "description": "Too many attempts from this address."},
    },
)
async def device(
    body: DeviceAuthorizationRequest,
    request: Request,
    settings: SettingsDep,
    authenticator: AuthenticatorDep,
) -> DeviceAuthorization:
    """Proxy to the realm's device authorization endpoint. Show the user ``verification_uri``
    and ``user_code``, then poll ``POST /api/v1/auth/token`` with the device-code grant every
    ``interval`` seconds until it answers with tokens."""
    client_ip = _client_ip(request)
    request.state.audit_subject = body.client_id or settings.auth.client_id
    if body.client_secret is not None:
        await authenticator.limiter.check_not_blocked(client_ip)
    await authenticator.limiter.check_auth_endpoint(client_ip)
    client_id, secret = _client(settings.auth, body.client_id, body.client_secret)
    try:
        started = await _keycloak(settings.auth, client_id, secret).a_device(scope=body.scope)
    except KeycloakError as exc:
        if isinstance(exc, KeycloakAuthenticationError) or exc.response_code in (400, 401):
            if body.client_secret is not None:
                await authenticator.limiter.record_failed_auth(client_ip)
            raise AuthenticationRequired(
                "the identity provider refused the device login for this client",
                details={"client_id": client_id, "oauth_error": _oauth_error(exc)},
            ) from None
        raise _unavailable(exc) from None
    return DeviceAuthorization.model_validate(started)


@router.post(
    "/logout",
    status_code=204,
    summary="End the Keycloak session of a refresh token (its access tokens expire on their own)",
    responses={429: {"model": ErrorResponse, "description": "Too many attempts."}},
)
async def logout(
    body: LogoutRequest,
    request: Request,
    settings: SettingsDep,
    authenticator: AuthenticatorDep,
) -> Response:
    """Proxy to the realm's logout endpoint. A session that has already ended is not an error:
    either way no refresh token of it works any more."""
    await authenticator.limiter.check_auth_endpoint(_client_ip(request))
    client_id, secret = _client(settings.auth, body.client_id, body.client_secret)
    request.state.audit_subject = client_id
    try:
        await _keycloak(settings.auth, client_id, secret).a_logout(
            body.refresh_token.get_secret_value()
        )
    except KeycloakError as exc:
        if not (isinstance(exc, KeycloakAuthenticationError) or exc.response_code in (400, 401)):
            raise _unavailable(exc) from None
        if _oauth_error(exc) != "invalid_grant":
            raise AuthenticationRequired(
                REFUSED, details={"oauth_error": _oauth_error(exc)}
            ) from None
    return Response(status_code=204)


@router.get("/me", summary="Who am I: subject, roles, permissions")
async def me(principal: Authenticated) -> Me:
    """The caller as the gateway sees it."""
    return Me(**principal.model_dump())
