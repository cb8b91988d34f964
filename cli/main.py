"""``tenantflow``: the command line. Run ``tenantflow --help``."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError

from common.errors import TenantflowError
from common.logging import configure_logging, redact_value
from common.settings import DEV_REALM, Profile, Settings

app = typer.Typer(
    name="tenantflow",
    help="Durable schema migrations for fleets of tenant PostgreSQL databases.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def load_settings() -> Settings:
    """Settings from the environment, or a readable error and exit code 2."""
    try:
        return Settings()
    except SettingsError as exc:
        # pydantic-settings could not even parse a value (e.g. a list that is not JSON).
        typer.secho(f"invalid settings: {str(exc).splitlines()[0]}", fg="red", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        typer.secho("invalid settings:", fg="red", err=True)
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "settings"
            typer.secho(f"  {where}: {err['msg']}", fg="red", err=True)
        raise typer.Exit(2) from None


def fail(error: TenantflowError) -> typer.Exit:
    """Print a tenantflow error and its details (never a traceback); return the exit to raise."""
    typer.secho(f"error: {error.message}", fg="red", err=True)
    for key, value in error.details.items():
        text = str(redact_value(key, value)).rstrip()
        if "\n" in text:
            typer.secho(f"  {key}:", fg="red", err=True)
            typer.echo("    " + text.replace("\n", "\n    "), err=True)
        else:
            typer.secho(f"  {key}: {text}", fg="red", err=True)
    return typer.Exit(1)


@app.command()
def dev() -> None:
    """Start the embedded stack: PostgreSQL, Temporal (with its Web UI), worker and gateway."""
    from cli.dev import run_dev_stack

    settings = load_settings()
    try:
        code = run_dev_stack(settings)
    except TenantflowError as exc:
        raise fail(exc) from None
    raise typer.Exit(code)


@app.command()
def worker() -> None:
    """Run a Temporal worker on the configured task queue until SIGTERM."""
    from worker.main import run_worker

    settings = load_settings()
    configure_logging(settings.log)
    try:
        asyncio.run(run_worker(settings))
    except TenantflowError as exc:
        logging.getLogger("tenantflow.worker").error(exc.message, extra=exc.details)
        raise typer.Exit(1) from None


@app.command()
def gateway() -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    from cli.stack import ensure_ports_free
    from gateway.app import create_app

    settings = load_settings()
    configure_logging(settings.log)
    try:
        ensure_ports_free(
            {"gateway": (settings.gateway.port, "TENANTFLOW_GATEWAY__PORT")},
            host=settings.gateway.host,
        )
        application = create_app(settings)
    except TenantflowError as exc:
        raise fail(exc) from None
    # Modules, routes and schemas live as long as the process: keep them out of the garbage
    # collector's full passes, which otherwise stall every in-flight request at once.
    gc.freeze()
    uvicorn.run(
        application,
        host=settings.gateway.host,
        port=settings.gateway.port,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.gateway.forwarded_allow_ips,
        server_header=False,
        timeout_graceful_shutdown=10,
    )


@app.command()
def token(
    role: Annotated[
        str, typer.Option(help="Realm role: infra-viewer, infra-operator or infra-admin.")
    ] = "infra-admin",
    subject: Annotated[str | None, typer.Option(help="The token's sub claim.")] = None,
    lifetime: Annotated[int, typer.Option(help="Seconds until it expires.", min=1)] = 3600,
) -> None:
    """Mint a development token with the dev stack's issuer key (never trusted in production).

    The stack's data is found through TENANTFLOW_HOME, or as .tenantflow in the working directory
    or one of its parents. Nothing is ever created: a key the running issuer does not publish
    would only mint tokens the gateway refuses."""
    from cli.auth import HOME_ENV, find_dev_data
    from cli.dev_issuer import DevIssuer, dev_issuer_url

    settings = load_settings()
    if settings.profile is Profile.PRODUCTION:
        typer.secho("error: the dev issuer does not exist in production", fg="red", err=True)
        raise typer.Exit(2)
    data = find_dev_data(settings.dev.data_dir)
    if data is None:
        where = os.environ.get(HOME_ENV) or (
            str(settings.dev.data_dir)
            if settings.dev.data_dir.is_absolute()
            else f"{settings.dev.data_dir} in {Path.cwd()} or its parents"
        )
        typer.secho(
            f"error: no dev stack found (looked for its issuer keys in {where}): start one "
            f"with `make dev`, run this inside its directory, or set {HOME_ENV} to its data "
            "directory; for a real identity provider use `tenantflow login`",
            fg="red",
            err=True,
        )
        raise typer.Exit(1)
    try:
        issuer = DevIssuer(data / "issuer", dev_issuer_url(settings.dev.issuer_port))
        minted = issuer.mint(
            subject=subject or f"dev-{role}", roles=[role], lifetime_seconds=lifetime
        )
    except OSError as exc:  # e.g. another user's stack found upwards: its key is theirs
        typer.secho(
            f"error: cannot read the dev issuer's key in {data}: {type(exc).__name__}",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(minted)


@app.command(name="dev-issuer", hidden=True)
def dev_issuer() -> None:
    """Serve the local Keycloak-shaped issuer (started by ``tenantflow dev``)."""
    import uvicorn

    from cli.dev_issuer import DevIssuer, dev_issuer_url
    from cli.dev_issuer_app import create_issuer_app

    settings = load_settings()
    configure_logging(settings.log)
    issuer = DevIssuer(settings.dev.data_dir / "issuer", dev_issuer_url(settings.dev.issuer_port))
    uvicorn.run(
        create_issuer_app(issuer, DEV_REALM),
        host="127.0.0.1",
        port=settings.dev.issuer_port,
        log_config=None,
        access_log=False,
    )


def _register_api_commands() -> None:
    import cli.adopt  # adds `migrate adopt` and `migrate baseline`
    import cli.assignments
    import cli.run_targets  # noqa: F401 - adds `migrate targets`
    from cli import databases as _db_commands  # noqa: F401 - adds `db show|update|test|rm`
    from cli.auth import register as register_login_commands
    from cli.backup import register as register_backup_commands
    from cli.commands import db_app, migrate_app, rollback_app, sets_app
    from cli.health import health_app
    from cli.monitor import register as register_monitor
    from cli.servers import server_app
    from cli.tenants import tenant_app

    app.add_typer(sets_app, name="sets")
    app.add_typer(db_app, name="db")
    app.add_typer(server_app, name="server")
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(migrate_app, name="migrate")
    app.add_typer(rollback_app, name="rollback")
    app.add_typer(health_app, name="health")
    register_monitor(app)
    register_login_commands(app)
    register_backup_commands(app)


_register_api_commands()

keys_app = typer.Typer(help="Encryption keys for credentials at rest and Temporal payloads.")
app.add_typer(keys_app, name="keys")


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new random key (base64 of 32 bytes) to add to TENANTFLOW_CRYPTO__KEYS."""
    from common.crypto import generate_key

    typer.echo(generate_key())


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-encrypt every stored credential under the active key (safe to run repeatedly)."""
    from cli.keys import rotate_credentials

    settings = load_settings()
    configure_logging(settings.log)
    try:
        changed = asyncio.run(rotate_credentials(settings))
    except TenantflowError as exc:
        raise fail(exc) from None
    typer.echo(f"re-encrypted {changed} credential(s) under key {settings.crypto.active_key_id!r}")


@app.command()
def check() -> None:
    """Exit 0 when Temporal and the catalog answer, 1 otherwise (a container health check)."""
    from cli.checks import check_dependencies

    settings = load_settings()
    results = asyncio.run(check_dependencies(settings))
    for name, error in results.items():
        if error is None:
            typer.echo(f"{name}: up")
        else:
            typer.secho(f"{name}: down ({error})", fg="red", err=True)
    raise typer.Exit(0 if all(e is None for e in results.values()) else 1)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover - Ctrl-C outside a command's own handling
        sys.exit(130)


if __name__ == "__main__":
    main()
