"""The dev issuer's HTTP face (``cli.dev_issuer`` holds its keys, clients, users and
grants): Keycloak's paths under ``/realms/{realm}``, the login page of the dashboard's code flow
and the device verification page.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import FastAPI, Form, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from cli.dev_issuer import DEVICE_CODE_GRANT, DevIssuer


def create_issuer_app(issuer: DevIssuer, realm: str) -> FastAPI:
    """The HTTP face of ``issuer`` with Keycloak's paths."""
    app = FastAPI(title="tenantflow dev issuer", docs_url=None, redoc_url=None, openapi_url=None)
    base = f"/realms/{realm}"
    oidc_path = f"{base}/protocol/openid-connect"

    @app.exception_handler(HTTPException)
    async def _oauth_error(_request: Any, exc: HTTPException) -> JSONResponse:
        return JSONResponse(status_code=exc.status_code, content=exc.detail)

    @app.get(base)
    async def realm_info() -> dict[str, Any]:
        return {"realm": realm, "token-service": f"{issuer.issuer_url}/protocol/openid-connect"}

    @app.get(f"{base}/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        oidc = f"{issuer.issuer_url}/protocol/openid-connect"
        return {
            "issuer": issuer.issuer_url,
            "jwks_uri": f"{oidc}/certs",
            "token_endpoint": f"{oidc}/token",
            "authorization_endpoint": f"{oidc}/auth",
            "device_authorization_endpoint": f"{oidc}/auth/device",
            "end_session_endpoint": f"{oidc}/logout",
            "grant_types_supported": [
                "client_credentials",
                "password",
                "refresh_token",
                DEVICE_CODE_GRANT,
                "authorization_code",
            ],
            "code_challenge_methods_supported": ["S256"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    @app.get(f"{oidc_path}/certs")
    async def certs() -> dict[str, Any]:
        return issuer.jwks()

    @app.post(f"{oidc_path}/token")
    async def token(
        grant_type: Annotated[str, Form()],
        client_id: Annotated[str, Form()] = "",
        client_secret: Annotated[str, Form()] = "",
        username: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        refresh_token: Annotated[str, Form()] = "",
        device_code: Annotated[str, Form()] = "",
        code: Annotated[str, Form()] = "",
        redirect_uri: Annotated[str, Form()] = "",
        code_verifier: Annotated[str, Form()] = "",
    ) -> dict[str, Any]:
        return issuer.grant(
            {
                "grant_type": grant_type,
                "client_id": client_id,
                "client_secret": client_secret,
                "username": username,
                "password": password,
                "refresh_token": refresh_token,
                "device_code": device_code,
                "code": code,
                "redirect_uri": redirect_uri,
                "code_verifier": code_verifier,
            }
        )

    @app.get(f"{oidc_path}/auth", response_class=HTMLResponse)
    async def login_page(request: Request) -> HTMLResponse:
        query = {k: v[:512] for k, v in request.query_params.items() if k in _AUTH_PARAMS}
        issuer.check_authorization_request(query)
        return HTMLResponse(_login_page(realm, query))

    @app.post(f"{oidc_path}/auth", response_model=None)
    async def log_in(
        request: Request,
        username: Annotated[str, Form(max_length=255)],
        password: Annotated[str, Form(max_length=1024)],
    ) -> HTMLResponse | RedirectResponse:
        form = await request.form()
        query = {k: str(form.get(k, ""))[:512] for k in _AUTH_PARAMS}
        try:
            location = issuer.authorize(query, username, password)
        except HTTPException as exc:
            detail: dict[str, str] = exc.detail  # type: ignore[assignment]
            message = detail["error_description"]
            return HTMLResponse(_login_page(realm, query, message), status_code=exc.status_code)
        return RedirectResponse(location, status_code=302)

    @app.post(f"{oidc_path}/auth/device")
    async def device_authorization(
        client_id: Annotated[str, Form()] = "", client_secret: Annotated[str, Form()] = ""
    ) -> dict[str, Any]:
        return issuer.authorize_device({"client_id": client_id, "client_secret": client_secret})

    @app.post(f"{oidc_path}/logout", status_code=204)
    async def logout(
        client_id: Annotated[str, Form()] = "",
        client_secret: Annotated[str, Form()] = "",
        refresh_token: Annotated[str, Form()] = "",
    ) -> None:
        issuer.logout(
            {"client_id": client_id, "client_secret": client_secret, "refresh_token": refresh_token}
        )

    @app.get(f"{base}/device", response_class=HTMLResponse)
    async def device_page(user_code: str = "") -> str:
        return _DEVICE_PAGE.format(realm=html.escape(realm), user_code=html.escape(user_code[:20]))

    @app.post(f"{base}/device", response_class=HTMLResponse)
    async def device_approve(
        user_code: Annotated[str, Form(max_length=20)],
        username: Annotated[str, Form(max_length=255)],
        password: Annotated[str, Form(max_length=1024)],
    ) -> HTMLResponse:
        try:
            issuer.approve_device(user_code, username, password)
        except HTTPException as exc:
            detail: dict[str, str] = exc.detail  # type: ignore[assignment]
            message = html.escape(detail["error_description"])
            return HTMLResponse(f"<p>{message}</p>", status_code=exc.status_code)
        return HTMLResponse("<p>Device approved: return to your terminal.</p>")

    # The dashboard exchanges its code from the browser: Keycloak answers such calls with the
    # client's web origins; here, any page on this machine.
    app.add_middleware(
        CORSMiddleware,
        allow_origin_regex=r"https?://(127\.0\.0\.1|localhost)(:\d+)?",
        allow_methods=["POST"],
        allow_headers=["Content-Type"],
    )
    return app


_AUTH_PARAMS = (
    "client_id",
    "response_type",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
)


def _login_page(realm: str, query: dict[str, str], message: str | None = None) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{html.escape(value)}">'
        for name, value in query.items()
    )
    error = f"<p>{html.escape(message)}</p>" if message else ""
    return _LOGIN_PAGE.format(realm=html.escape(realm), hidden=hidden, error=error)


_LOGIN_PAGE = """<!doctype html>
<title>{realm}: sign in</title>
<link rel="icon" href="data:,">
<h1>Sign in to {realm}</h1>
{error}
<form method="post">
  {hidden}
  <label>Username <input id="username" name="username" autocomplete="username" required></label>
  <br>
  <label>Password <input id="password" name="password" type="password"
    autocomplete="current-password" required></label><br>
  <button id="kc-login">Sign in</button>
</form>
"""


_DEVICE_PAGE = """<!doctype html>
<title>{realm}: device login</title>
<h1>Sign in to let a device use your account</h1>
<form method="post">
  <label>Code <input name="user_code" value="{user_code}" required></label><br>
  <label>Username <input name="username" autocomplete="username" required></label><br>
  <label>Password <input name="password" type="password" autocomplete="current-password"
    required></label><br>
  <button>Approve</button>
</form>
"""
