"""``tenantflow db show|update|test|rm``: one target at a time (``db add|list`` live in
``cli/commands.py``; all of them hang off the same ``db`` group)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from cli.commands import ApiOption, JsonOption, TokenOption, _api, _call, _print_json, db_app
from cli.servers import LabelOption, PasswordEnvOption, SslModeOption, parse_labels, read_secret

DatabaseArg = Annotated[str, typer.Argument(help="The target's id.")]


def _path(database_id: str, suffix: str = "") -> str:
    return f"/api/v1/databases/{quote(database_id, safe='')}{suffix}"


def _describe(d: dict[str, Any]) -> str:
    labels = ",".join(f"{k}={v}" for k, v in d["labels"].items())
    return (
        f"database {d['name']} ({d['id']})\n"
        f"  address    {d['host']}:{d['port']} (sslmode {d.get('sslmode') or 'default'})\n"
        f"  database   {d['database']}{'.' + d['schema'] if d.get('schema') else ''}\n"
        f"  user       {d['user']} (password under key {d['password_key_id']})\n"
        f"  tenant     {d.get('tenant_id') or '-'}\n"
        f"  server     {d.get('server_id') or '-'}\n"
        f"  labels     {labels or '-'}"
    )


@db_app.command("show")
def db_show(
    database_id: DatabaseArg,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """One target (never its password)."""
    result = _call(_api(api, token), "GET", _path(database_id))
    if as_json:
        _print_json(result)
        return
    typer.echo(_describe(result))


@db_app.command("update")
def db_update(
    database_id: DatabaseArg,
    name: Annotated[str | None, typer.Option()] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    database: Annotated[str | None, typer.Option()] = None,
    user: Annotated[str | None, typer.Option()] = None,
    schema: Annotated[str | None, typer.Option()] = None,
    tenant_id: Annotated[str | None, typer.Option()] = None,
    label: LabelOption = None,
    server: Annotated[str | None, typer.Option(help="Name of the server it lives on.")] = None,
    detach_server: Annotated[
        bool, typer.Option("--detach-server", help="Record it on no server.")
    ] = False,
    sslmode: SslModeOption = None,
    password_env: PasswordEnvOption = None,
    new_password: Annotated[
        bool, typer.Option("--new-password", help="Prompt (hidden) for a new password.")
    ] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change only the given fields (--label replaces every label; a new password is stored
    encrypted)."""
    if server is not None and detach_server:
        raise typer.BadParameter("--server and --detach-server exclude each other")
    body: dict[str, Any] = {
        k: v
        for k, v in {
            "name": name,
            "host": host,
            "port": port,
            "database": database,
            "user": user,
            "schema": schema,
            "tenant_id": tenant_id,
            "server": server,
            "sslmode": sslmode,
        }.items()
        if v is not None
    }
    if label is not None:
        body["labels"] = parse_labels(label)
    if detach_server:
        body["server"] = None
    if password_env is not None or new_password:
        body["password"] = read_secret(password_env, "New password")
    if not body:
        raise typer.BadParameter("nothing to change: pass at least one option")
    result = _call(_api(api, token), "PATCH", _path(database_id), json=body)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"updated {result['name']} ({result['id']})")


@db_app.command("test")
def db_test(
    database_id: DatabaseArg,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Connect from a worker with the stored credentials; exit 1 when the target refuses."""
    result = _call(_api(api, token), "POST", _path(database_id, "/test-connection"))
    if as_json:
        _print_json(result)
    elif result["ok"]:
        typer.echo(f"ok: PostgreSQL {result['server_version']} in {result['latency_ms']} ms")
    else:
        code = f" [{result['error_code']}]" if result.get("error_code") else ""
        typer.secho(f"failed{code}: {result['error']}", fg="red", err=True)
    if not result["ok"]:
        raise typer.Exit(1)


@db_app.command("rm")
def db_rm(
    database_id: DatabaseArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
) -> None:
    """Forget a target (the database itself is untouched)."""
    if not yes:
        typer.confirm(f"Forget target {database_id}?", abort=True)
    _call(_api(api, token), "DELETE", _path(database_id))
    typer.echo(f"removed {database_id}")
