"""``/ui``: the dashboard. Static files shipped in the package (``gateway/ui``: no build step, no
CDN) and a small public config document. The page is public like a login form: it holds no
data, and everything it shows comes through the authenticated API with the caller's token."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.settings import Profile, Settings

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_PATH = "/ui"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def temporal_ui_url(settings: Settings) -> str | None:
    """Where the Temporal Web UI is: the setting, else (outside production) the dev server's."""
    if settings.temporal.ui_url:
        return settings.temporal.ui_url.rstrip("/")
    if settings.profile is Profile.PRODUCTION:
        return None
    host = settings.temporal.address.rsplit(":", 1)[0]
    return f"http://{host}:{settings.dev.temporal_ui_port}"


def ui_config(settings: Settings) -> dict[str, Any]:
    """What the page needs to sign in and to link out; nothing secret."""
    issuer = settings.auth.issuer_url.rstrip("/")
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/protocol/openid-connect/auth",
        "token_endpoint": f"{issuer}/protocol/openid-connect/token",
        "client_id": settings.auth.ui_client_id,
        "temporal_ui_url": temporal_ui_url(settings),
        "temporal_namespace": settings.temporal.namespace,
    }


def content_security_policy(settings: Settings) -> str:
    """Only the page's own files run; it talks to the gateway and (PKCE) to the realm."""
    realm = _origin(settings.auth.issuer_url)
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {realm}; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


class _Headers:
    """Adds the dashboard's CSP (the request middleware leaves a present CSP alone) and asks
    browsers to revalidate, so an upgraded gateway never runs a stale script."""

    def __init__(self, app: ASGIApp, csp: str) -> None:
        self.app = app
        self.extra = [
            (b"content-security-policy", csp.encode()),
            (b"cache-control", b"no-cache"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard under ``/ui`` (outside the API's route table and its guards)."""
    config = ui_config(settings)

    async def config_json(_request: Request) -> Response:
        return JSONResponse(config)

    async def to_index(_request: Request) -> Response:
        return RedirectResponse(f"{UI_PATH}/", status_code=308)

    pages = Router(
        routes=[
            Route("/config.json", config_json, methods=["GET"]),
            Mount("/", app=StaticFiles(directory=UI_DIR, html=True)),
        ]
    )
    app.router.routes.append(Route(UI_PATH, to_index, methods=["GET"]))
    app.router.routes.append(
        Mount(UI_PATH, app=_Headers(pages, content_security_policy(settings)), name="ui")
    )
