"""``tenantflow server add|list|show|update|rm``: servers tenantflow may create tenants on."""

from __future__ import annotations

import os
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from cli.commands import ApiOption, JsonOption, TokenOption, _api, _call, _print_json, console

server_app = typer.Typer(help="Servers tenantflow may create roles, databases and schemas on.")

LabelOption = Annotated[list[str] | None, typer.Option("--label", help="key=value, repeatable.")]
PasswordEnvOption = Annotated[
    str | None,
    typer.Option(
        "--password-env",
        metavar="VAR",
        help="Read the admin password from this environment variable (else a hidden prompt).",
    ),
]
SslModeOption = Annotated[
    str | None,
    typer.Option(help="disable, allow, prefer, require, verify-ca or verify-full."),
]


def parse_labels(values: list[str] | None) -> dict[str, str]:
    """``--label key=value`` options as a dict; a pair without ``=`` is a usage error."""
    labels: dict[str, str] = {}
    for value in values or []:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{value!r}: labels look like key=value", param_hint="--label")
        labels[key.strip()] = val.strip()
    return labels


def read_secret(env_var: str | None, prompt: str) -> str:
    """A secret from ``$env_var``, else typed at a hidden prompt; never echoed."""
    if env_var is not None:
        value = os.environ.get(env_var)
        if not value:
            raise typer.BadParameter(f"${env_var} is not set or empty", param_hint="--password-env")
        return value
    # click's prompt asks again until something is typed: the answer is never empty.
    return str(typer.prompt(prompt, hide_input=True))


def _describe(server: dict[str, Any]) -> str:
    labels = ",".join(f"{k}={v}" for k, v in server["labels"].items())
    return (
        f"server {server['name']} ({server['id']})\n"
        f"  address          {server['host']}:{server['port']} (sslmode {server['sslmode']})\n"
        f"  admin            {server['admin_user']} on {server['maintenance_database']}\n"
        f"  max connections  {server['max_connections']}\n"
        f"  targets          {server.get('target_count')}\n"
        f"  labels           {labels or '-'}"
    )


@server_app.command("add")
def server_add(
    name: Annotated[str, typer.Option(help="Unique name, e.g. pg-eu-1.")],
    host: Annotated[str, typer.Option()],
    admin_user: Annotated[str, typer.Option(help="A role with CREATEROLE and CREATEDB.")],
    port: Annotated[int, typer.Option()] = 5432,
    password_env: PasswordEnvOption = None,
    sslmode: SslModeOption = None,
    maintenance_database: Annotated[
        str | None, typer.Option(help="Where the admin runs CREATE DATABASE (default postgres).")
    ] = None,
    max_connections: Annotated[
        int | None, typer.Option(help="tenantflow's connection budget on it (default 20).")
    ] = None,
    label: LabelOption = None,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a server; the admin password is sent once and stored encrypted."""
    body: dict[str, Any] = {
        "name": name,
        "host": host,
        "port": port,
        "admin_user": admin_user,
        "labels": parse_labels(label),
    }
    optional = {
        "sslmode": sslmode,
        "maintenance_database": maintenance_database,
        "max_connections": max_connections,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    body["admin_password"] = read_secret(password_env, "Admin password")
    result = _call(_api(api, token), "POST", "/api/v1/servers", json=body)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"registered server {result['name']} as {result['id']}")


@server_app.command("list")
def server_list(
    label: LabelOption = None,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Servers, optionally filtered by labels, with how many targets live on each."""
    client = _api(api, token)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: list[tuple[str, str]] = [("label", v) for v in label or []] + [("limit", "1000")]
        if cursor:
            params.append(("cursor", cursor))
        page = _call(client, "GET", "/api/v1/servers", params=params)
        items += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    if as_json:
        _print_json({"items": items})
        return
    table = Table("name", "address", "sslmode", "targets", "max conn", "labels")
    for s in items:
        labels = ",".join(f"{k}={v}" for k, v in s["labels"].items())
        table.add_row(
            s["name"],
            f"{s['host']}:{s['port']}",
            s["sslmode"],
            str(s["target_count"]),
            str(s["max_connections"]),
            labels,
        )
    console.print(table)


@server_app.command("show")
def server_show(
    name: str, token: TokenOption = None, api: ApiOption = None, as_json: JsonOption = False
) -> None:
    """One server (never its password)."""
    result = _call(_api(api, token), "GET", f"/api/v1/servers/{quote(name, safe='')}")
    if as_json:
        _print_json(result)
        return
    typer.echo(_describe(result))


@server_app.command("update")
def server_update(
    name: str,
    new_name: Annotated[str | None, typer.Option("--name", help="Rename the server.")] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    admin_user: Annotated[str | None, typer.Option()] = None,
    sslmode: SslModeOption = None,
    maintenance_database: Annotated[str | None, typer.Option()] = None,
    max_connections: Annotated[int | None, typer.Option()] = None,
    label: LabelOption = None,
    password_env: PasswordEnvOption = None,
    new_password: Annotated[
        bool, typer.Option("--new-password", help="Prompt (hidden) for a new admin password.")
    ] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change only the given fields (--label replaces every label; a new admin password is
    stored encrypted)."""
    fields = {
        "name": new_name,
        "host": host,
        "port": port,
        "admin_user": admin_user,
        "sslmode": sslmode,
        "maintenance_database": maintenance_database,
        "max_connections": max_connections,
    }
    body: dict[str, Any] = {k: v for k, v in fields.items() if v is not None}
    if label is not None:
        body["labels"] = parse_labels(label)
    if password_env is not None or new_password:
        body["admin_password"] = read_secret(password_env, "New admin password")
    if not body:
        raise typer.BadParameter("nothing to change: pass at least one option")
    result = _call(_api(api, token), "PATCH", f"/api/v1/servers/{quote(name, safe='')}", json=body)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"updated server {result['name']}")


@server_app.command("rm")
def server_rm(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
) -> None:
    """Forget a server (the server itself is untouched); refused while targets live on it."""
    if not yes:
        typer.confirm(f"Forget server {name}?", abort=True)
    _call(_api(api, token), "DELETE", f"/api/v1/servers/{quote(name, safe='')}")
    typer.echo(f"removed server {name}")
