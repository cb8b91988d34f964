"""The CLI's HTTP client for the gateway: base URL, bearer token (given, or the user's login,
refreshed), and error envelopes printed as one readable line."""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

import httpx
import typer

from common.logging import redact_value

TOKEN_ENV = "TENANTFLOW_TOKEN"  # noqa: S105 - the variable's name, not a token
API_URL_ENV = "TENANTFLOW_API_URL"
LINE_LIMIT = 600


class ApiError(Exception):
    """The gateway answered with an error envelope (or not at all)."""

    def __init__(self, status: int, error_type: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.details = details or {}

    def one_line(self) -> str:
        """``error (STATUS TYPE): message; details folded in``: always a single line."""
        line = f"error ({self.status} {self.error_type}): {self.message}"
        folded = _fold_details(self.details, self.message) if isinstance(self.details, dict) else ""
        if folded:
            line += f"; {folded}"
        line = " ".join(line.split())  # a multi-line message or detail must not break the line
        return line if len(line) <= LINE_LIMIT else line[: LINE_LIMIT - 1] + "…"


def _brief(value: Any, limit: int = 160) -> str:
    if isinstance(value, list | tuple):
        shown = ", ".join(_brief(v, 60) for v in value[:5])
        text = shown + (f" (+{len(value) - 5} more)" if len(value) > 5 else "")
    elif isinstance(value, dict):
        text = json.dumps(value, default=str, separators=(",", ":"))
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fold_details(details: dict[str, Any], message: str) -> str:
    parts: list[str] = []
    for key, value in details.items():
        value = redact_value(str(key), value)
        if isinstance(value, str) and len(value) >= 4 and value in message:
            continue  # already said: "no database <id>" needs no "id: <id>"
        if key == "errors" and isinstance(value, list):
            # Request validation: "where: what" per field, without the "body" prefix.
            for err in value[:3]:
                if isinstance(err, dict) and "msg" in err:
                    where = ".".join(str(p) for p in err.get("loc", []) if p != "body")
                    parts.append(f"{where or 'body'}: {err['msg']}")
                else:
                    parts.append(_brief(err))
            if len(value) > 3:
                parts.append(f"+{len(value) - 3} more")
        elif key == "retry_after_seconds":
            parts.append(f"retry after {value} s")
        else:
            parts.append(f"{key}: {_brief(value)}")
    return "; ".join(parts)


class TokenSource(Protocol):
    """Where a bearer token comes from: given once, or a login that can be refreshed."""

    def bearer(self) -> str:
        """The token to send now."""
        ...

    def refresh(self) -> str | None:
        """A new token after a 401, or ``None`` when this source cannot get one."""
        ...


class StaticToken:
    """A token given with ``--token`` or ``TENANTFLOW_TOKEN``: used as it is."""

    def __init__(self, token: str) -> None:
        self._token = token

    def bearer(self) -> str:
        return self._token

    def refresh(self) -> str | None:
        return None


class Api:
    """A small synchronous client; every call returns parsed JSON or raises ``ApiError``."""

    def __init__(
        self, base_url: str, token: str | TokenSource | None, timeout: float = 120.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tokens: TokenSource | None = StaticToken(token) if isinstance(token, str) else token
        self.client = httpx.Client(base_url=self.base_url, timeout=timeout)

    def _send(self, method: str, path: str, bearer: str | None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", None) or {})
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        try:
            return self.client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, "unreachable", f"{self.base_url}: {type(exc).__name__}") from None

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; a non-2xx answer becomes ``ApiError`` with the envelope's fields. A 401
        with a login behind the token refreshes it and tries once more."""
        bearer = self.tokens.bearer() if self.tokens else None
        response = self._send(method, path, bearer, **kwargs)
        if response.status_code == 401 and self.tokens is not None:
            renewed = self.tokens.refresh()
            if renewed is not None:
                response = self._send(method, path, renewed, **kwargs)
        if response.status_code >= 400:
            raise _error_of(response)
        if response.status_code == 204:
            return None
        return response.json()


def _error_of(response: httpx.Response) -> ApiError:
    try:
        error = response.json()["error"]
        return ApiError(response.status_code, error["type"], error["message"], error.get("details"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "http_error", response.text[:300])


def fail_line(text: str) -> typer.Exit:
    """Print one red error line on stderr; return the exit (code 1) to raise."""
    typer.secho(text, fg="red", err=True)
    return typer.Exit(1)


def call(client: Api, method: str, path: str, **kwargs: Any) -> Any:
    """``client.request``, with any gateway error printed as one line and exit code 1."""
    try:
        return client.request(method, path, **kwargs)
    except ApiError as exc:
        raise fail_line(exc.one_line()) from None


def base_url(api: str | None) -> str | None:
    """``--api``, else ``TENANTFLOW_API_URL`` (``None`` when neither is given)."""
    chosen = api or os.environ.get(API_URL_ENV)
    return chosen.rstrip("/") if chosen else None


def open_api(api: str | None, token: str | None) -> Api:
    """The client every API command uses. The token is ``--token``, else ``TENANTFLOW_TOKEN``,
    else the login ``tenantflow login`` stored for that gateway (refreshed as needed). Without
    ``--api``/``TENANTFLOW_API_URL`` the gateway is the login's, else the configured one."""
    from cli.auth import load_login, session_for
    from cli.main import load_settings

    given = token or os.environ.get(TOKEN_ENV)
    explicit = base_url(api)
    if given:
        return Api(explicit or load_settings().gateway.base_url(), given)
    login = load_login()
    base = explicit or (login.api if login else load_settings().gateway.base_url())
    if login is None or login.api != base:
        elsewhere = f" (logged in to {login.api} only)" if login else ""
        raise fail_line(
            f"error: not logged in to {base}{elsewhere}: run `tenantflow login"
            + (f" --api {base}`" if explicit else "`")
            + f", or pass --token / set {TOKEN_ENV}"
        )
    return Api(base, session_for(login))
