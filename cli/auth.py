"""``tenantflow login`` and ``logout``: a user's login to a gateway, kept in their config directory
(mode 0600) and refreshed through the gateway; and where ``tenantflow token`` finds the dev stack.

Every grant goes through the gateway's ``/api/v1/auth`` routes, never to Keycloak directly: the
CLI needs to know one URL, and the gateway holds the API client's secret. Tokens are never
printed or logged here.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import platformdirs
import typer

from cli.api import API_URL_ENV, Api, ApiError, base_url, call, fail_line

TOKEN_PATH = "/api/v1/auth/token"  # noqa: S105 - a route, not a secret
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# Refresh this long before the access token expires, so it cannot expire in flight.
EXPIRY_MARGIN_SECONDS = 30
HOME_ENV = "TENANTFLOW_HOME"


# -- the stored login ---------------------------------------------------------------------------
def credentials_path() -> Path:
    """``credentials.json`` in the user's config directory (``$XDG_CONFIG_HOME/tenantflow`` or
    ``~/.config/tenantflow`` on Linux, the platform's equivalent elsewhere)."""
    return Path(platformdirs.user_config_dir("tenantflow", appauthor=False)) / "credentials.json"


@dataclass(repr=False)  # repr=False: a login must never end up in a traceback or a log line
class Login:
    """One user's login to one gateway."""

    api: str
    username: str | None
    access_token: str
    refresh_token: str | None
    expires_at: float
    refresh_expires_at: float | None = None

    @classmethod
    def from_grant(cls, api: str, username: str | None, issued: dict[str, Any]) -> Login:
        """A login from the gateway's token answer."""
        now = time.time()
        refresh_in = issued.get("refresh_expires_in") or 0
        return cls(
            api=api,
            username=username,
            access_token=issued["access_token"],
            refresh_token=issued.get("refresh_token"),
            expires_at=now + int(issued["expires_in"]),
            refresh_expires_at=now + refresh_in if refresh_in > 0 else None,
        )


def save_login(login: Login) -> Path:
    """Write the login atomically: a private temporary file (0600, in a 0700 directory) renamed
    over the old one, so a reader never sees half a file and no one else can read it at all."""
    path = credentials_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=".credentials-", suffix=".tmp")
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(vars(login), file, indent=2)
            file.flush()
            os.fsync(file.fileno())
        temporary.chmod(0o600)  # mkstemp's mode already, whatever the umask: said, not assumed
        temporary.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return path


def load_login() -> Login | None:
    """The stored login, or ``None`` (an unreadable file counts as none, and says so)."""
    path = credentials_path()
    try:
        return Login(**json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        typer.secho(f"warning: ignoring unreadable {path}", fg="yellow", err=True)
        return None


def remove_login() -> bool:
    """Delete the stored login; whether there was one."""
    try:
        credentials_path().unlink()
    except FileNotFoundError:
        return False
    return True


class LoginSession:
    """A stored login as a token source for ``Api``: refreshed through the gateway shortly
    before it expires or after a 401, and written back."""

    def __init__(self, login: Login) -> None:
        self.login = login

    def bearer(self) -> str:
        if time.time() >= self.login.expires_at - EXPIRY_MARGIN_SECONDS:
            return self._refresh()
        return self.login.access_token

    def refresh(self) -> str | None:
        return self._refresh()

    def _refresh(self) -> str:
        login = self.login
        ended = ApiError(
            401,
            "unauthenticated",
            f"your login to {login.api} has ended: run `tenantflow login` again",
        )
        expired = login.refresh_expires_at is not None and time.time() >= login.refresh_expires_at
        if login.refresh_token is None or expired:
            raise ended
        try:
            issued = Api(login.api, None).request(
                "POST",
                TOKEN_PATH,
                json={"grant_type": "refresh_token", "refresh_token": login.refresh_token},
            )
        except ApiError as exc:
            if exc.status == 401:
                raise ended from None
            raise
        renewed = Login.from_grant(login.api, login.username, issued)
        # Keycloak may answer a refresh without a new refresh token: keep the one we have.
        renewed.refresh_token = renewed.refresh_token or login.refresh_token
        if renewed.refresh_expires_at is None:
            renewed.refresh_expires_at = login.refresh_expires_at
        save_login(renewed)
        self.login = renewed
        return renewed.access_token


def session_for(login: Login) -> LoginSession:
    """The token source of a stored login (what ``cli.api.open_api`` uses)."""
    return LoginSession(login)


# -- commands -----------------------------------------------------------------------------------
ApiOption = Annotated[
    str | None,
    typer.Option("--api", help=f"Gateway URL (default: ${API_URL_ENV}, else the configured one)."),
]


def _gateway(api: str | None) -> str:
    from cli.main import load_settings

    return base_url(api) or load_settings().gateway.base_url()


def _password(password_env: str | None) -> str:
    if password_env is None:
        password: str = typer.prompt("Password", hide_input=True)
        return password
    value = os.environ.get(password_env)
    if not value:
        raise fail_line(f"error: the environment variable {password_env} is not set")
    return value


def _device_login(client: Api) -> dict[str, Any]:
    """RFC 8628: show the user where to approve this login, then poll until they have."""
    started = call(client, "POST", "/api/v1/auth/device", json={})
    page = started.get("verification_uri_complete") or started["verification_uri"]
    typer.echo(f"Open {page} and enter the code {started['user_code']} to log in.")
    deadline = time.monotonic() + int(started["expires_in"])
    interval = int(started.get("interval") or 5)
    body = {"grant_type": DEVICE_CODE_GRANT, "device_code": started["device_code"]}
    while time.monotonic() < deadline:
        time.sleep(interval)
        try:
            issued: dict[str, Any] = client.request("POST", TOKEN_PATH, json=body)
            return issued
        except ApiError as exc:
            if exc.error_type == "authorization_pending":
                continue
            if exc.error_type == "slow_down":
                interval += 5
            elif exc.error_type == "rate_limited":
                time.sleep(float(exc.details.get("retry_after_seconds", interval)))
            else:
                raise fail_line(exc.one_line()) from None
    raise fail_line("error: the device login expired before it was approved: run it again")


def login(
    api: ApiOption = None,
    username: Annotated[
        str | None, typer.Option("--username", "-u", help="Asked for when not given.")
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", help="Read the password from this environment variable."),
    ] = None,
    device: Annotated[
        bool,
        typer.Option("--device", help="Approve the login in a browser (device authorization)."),
    ] = False,
) -> None:
    """Log in to the gateway; every command then uses (and refreshes) this login."""
    base = _gateway(api)
    client = Api(base, None)
    if device:
        issued = _device_login(client)
    else:
        username = username or typer.prompt("Username")
        issued = call(
            client,
            "POST",
            TOKEN_PATH,
            json={
                "grant_type": "password",
                "username": username,
                "password": _password(password_env),
            },
        )
    stored = Login.from_grant(base, username, issued)
    path = save_login(stored)
    try:
        me = call(Api(base, LoginSession(stored)), "GET", "/api/v1/auth/me")
    except typer.Exit:
        remove_login()  # a login the gateway does not accept is no login
        raise
    if stored.username is None:
        stored.username = me.get("username")
        save_login(stored)
    roles = ", ".join(me.get("roles") or []) or "none"
    typer.echo(f"logged in to {base} as {me.get('username') or me['subject']} (roles: {roles})")
    typer.echo(f"login kept in {path}")


def logout(api: ApiOption = None) -> None:
    """Forget the stored login and end its session at the identity provider."""
    stored = load_login()
    wanted = base_url(api)
    if stored is None or (wanted is not None and wanted != stored.api):
        typer.echo(f"not logged in{f' to {wanted}' if wanted else ''}")
        return
    warning = None
    if stored.refresh_token:
        try:
            Api(stored.api, None).request(
                "POST", "/api/v1/auth/logout", json={"refresh_token": stored.refresh_token}
            )
        except ApiError as exc:
            warning = exc.one_line().replace("error", "warning: the session was not ended", 1)
    remove_login()
    if warning:
        # The local copy is gone either way; the session ends on its own at its idle timeout.
        typer.secho(warning, fg="yellow", err=True)
    typer.echo(f"logged out of {stored.api}")


def register(app: typer.Typer) -> None:
    """Add ``login`` and ``logout`` to the ``tenantflow`` command."""
    app.command()(login)
    app.command()(logout)


# -- tenantflow token: the dev stack's data -----------------------------------------------------
def find_dev_data(data_dir: Path, start: Path | None = None) -> Path | None:
    """The dev stack's data directory holding the dev issuer's keys, or ``None``.

    ``TENANTFLOW_HOME`` names it outright. Otherwise an absolute ``data_dir`` is taken as it is,
    and a relative one (the default ``.tenantflow``) is looked for in the working directory and
    then in each parent, the way git finds ``.git``: so ``tenantflow token`` works from anywhere
    inside the checkout where ``make dev`` runs, and nowhere else.
    """
    home = os.environ.get(HOME_ENV)
    if home:
        candidates = [Path(home).expanduser()]
    elif data_dir.is_absolute():
        candidates = [data_dir]
    else:
        here = (start or Path.cwd()).resolve()
        candidates = [directory / data_dir for directory in (here, *here.parents)]
    for candidate in candidates:
        if any((candidate / "issuer" / "keys").glob("*.pem")):
            return candidate
    return None
