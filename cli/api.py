"""The CLI's HTTP client for the gateway: base URL, bearer token, error envelope handling."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer

from common.settings import Profile, Settings


class ApiError(Exception):
    """The gateway answered with an error envelope (or not at all)."""

    def __init__(self, status: int, error_type: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.details = details or {}


def resolve_token(settings: Settings, token: str | None) -> str:
    """``--token``, else ``TENANTFLOW_TOKEN``, else (development only) a dev-issuer admin token."""
    if token:
        return token
    from_env = os.environ.get("TENANTFLOW_TOKEN")
    if from_env:
        return from_env
    keys = settings.dev.data_dir / "issuer" / "keys"
    if settings.profile is not Profile.PRODUCTION and keys.exists():
        from cli.dev_issuer import DevIssuer, dev_issuer_url

        issuer = DevIssuer(
            settings.dev.data_dir / "issuer", dev_issuer_url(settings.dev.issuer_port)
        )
        return issuer.mint(subject="dev-cli", roles=["infra-admin"], lifetime_seconds=600)
    raise typer.BadParameter("no token: pass --token or set TENANTFLOW_TOKEN")


class Api:
    """A small synchronous client; every call returns parsed JSON or raises ``ApiError``."""

    def __init__(self, base_url: str, token: str, timeout: float = 120.0) -> None:
        self.client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; a non-2xx answer becomes ``ApiError`` with the envelope's fields."""
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(
                0, "unreachable", f"{self.client.base_url}: {type(exc).__name__}"
            ) from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(response.status_code, "http_error", response.text[:300]) from None
            raise ApiError(
                response.status_code, error["type"], error["message"], error.get("details")
            )
        if response.status_code == 204:
            return None
        return response.json()
