"""``tenantflow tenant create|list|show|rm|rotate``: tenant provisioning through the API."""

from __future__ import annotations

import time
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.table import Table

from cli.commands import ApiOption, JsonOption, TokenOption, _api, _call, _print_json, console
from cli.servers import LabelOption, parse_labels

tenant_app = typer.Typer(help="Tenants: provision (role, database or schema, migrations), remove.")

SETTLED = ("active", "failed", "deprovisioned")


def _set_requests(values: list[str] | None) -> list[dict[str, str]] | None:
    """``--set core`` or ``--set core@12`` as the API's set requests (None: the assignments)."""
    if not values:
        return None
    found = []
    for value in values:
        name, _, version = value.partition("@")
        if not name:
            raise typer.BadParameter(f"{value!r}: sets look like NAME or NAME@VERSION")
        found.append({"name": name, "version": version or "latest"})
    return found


def _describe(tenant: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in tenant["versions"].items()) or "-"
    where = tenant["database"] + (
        f" / schema {tenant['schema_name']}" if tenant["schema_name"] else ""
    )
    lines = [
        f"tenant {tenant['tenant_id']}: {tenant['status']}",
        f"  server    {tenant['server'] or '-'}",
        f"  mode      {tenant['mode']} ({where}, role {tenant['role']})",
        f"  target    {tenant['database_id'] or '-'}",
        f"  versions  {versions}",
        f"  run       {tenant['run_id']}",
    ]
    if tenant.get("error"):
        lines.append(f"  error     {tenant['error']}")
    return "\n".join(lines)


def _wait(client: Any, tenant_id: str, timeout: float, quiet: bool = False) -> dict[str, Any]:
    """Polls the tenant and keeps one progress line up to date until it settles (``quiet``: no
    progress lines, so that ``--json`` prints the JSON alone)."""
    deadline = time.monotonic() + timeout
    shown = ""
    while True:
        tenant: dict[str, Any] = _call(client, "GET", f"/api/v1/tenants/{quote(tenant_id)}")
        line = f"tenant {tenant_id}: {tenant['status']}"
        if line != shown and not quiet:
            console.print(line)
            shown = line
        if tenant["status"] in SETTLED or time.monotonic() > deadline:
            return tenant
        time.sleep(0.5)


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(help="Lowercase letters, digits, - and _.")],
    server: Annotated[str | None, typer.Option(help="The server by name.")] = None,
    server_label: Annotated[
        list[str] | None,
        typer.Option("--server-label", help="Or: least-loaded server with key=value labels."),
    ] = None,
    mode: Annotated[str, typer.Option(help="database or schema.")] = "database",
    shared_database: Annotated[
        str | None, typer.Option(help="schema mode: the shared database (default tenants).")
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", help="NAME or NAME@VERSION, repeatable (default: assignments)."),
    ] = None,
    label: LabelOption = None,
    wait: Annotated[bool, typer.Option(help="Wait until active or failed.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 600.0,
    as_json: JsonOption = False,
    token: TokenOption = None,
    api: ApiOption = None,
) -> None:
    """Provision a tenant; exits 1 if it ends failed (everything it made is undone)."""
    body: dict[str, Any] = {"tenant_id": tenant_id, "mode": mode, "labels": parse_labels(label)}
    if server is not None:
        body["server"] = server
    if server_label:
        body["server_selector"] = parse_labels(server_label)
    if shared_database is not None:
        body["shared_database"] = shared_database
    requested = _set_requests(sets)
    if requested is not None:
        body["sets"] = requested
    client = _api(api, token)
    accepted = _call(client, "POST", "/api/v1/tenants", json=body)
    if not as_json:
        what = "started" if accepted["created"] else "already requested"
        console.print(f"tenant {tenant_id}: {what} (run {accepted['run_id']})")
    if not wait:
        if as_json:
            _print_json(accepted)
        return
    tenant = _wait(client, tenant_id, timeout, quiet=as_json)
    if as_json:
        _print_json(tenant)
    else:
        console.print(_describe(tenant))
    if tenant["status"] != "active":
        raise typer.Exit(1)


@tenant_app.command("list")
def tenant_list(
    status: Annotated[str | None, typer.Option(help="Only tenants in this status.")] = None,
    as_json: JsonOption = False,
    token: TokenOption = None,
    api: ApiOption = None,
) -> None:
    """Tenants by id (every page)."""
    client = _api(api, token)
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        page = _call(client, "GET", "/api/v1/tenants", params=params)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if as_json:
        _print_json(items)
        return
    table = Table("tenant", "status", "mode", "server", "versions")
    for t in items:
        versions = ", ".join(f"{k} {v}" for k, v in t["versions"].items())
        table.add_row(t["tenant_id"], t["status"], t["mode"], t["server"] or "-", versions)
    console.print(table)


@tenant_app.command("show")
def tenant_show(
    tenant_id: str, as_json: JsonOption = False, token: TokenOption = None, api: ApiOption = None
) -> None:
    """One tenant: status, where it lives, versions, its latest run and error."""
    tenant = _call(_api(api, token), "GET", f"/api/v1/tenants/{quote(tenant_id)}")
    if as_json:
        _print_json(tenant)
    else:
        console.print(_describe(tenant))


@tenant_app.command("rm")
def tenant_rm(
    tenant_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask: its data is dropped.")] = False,
    wait: Annotated[bool, typer.Option(help="Wait until deprovisioned.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait.")] = 600.0,
    token: TokenOption = None,
    api: ApiOption = None,
) -> None:
    """Deprovision: drop the tenant's database (or schema) and role; the record stays."""
    if not yes:
        typer.confirm(f"Drop tenant {tenant_id} and all its data?", abort=True)
    client = _api(api, token)
    path = f"/api/v1/tenants/{quote(tenant_id)}"
    accepted = _call(client, "DELETE", path, params={"confirm": tenant_id})
    console.print(f"tenant {tenant_id}: deprovisioning (run {accepted['run_id']})")
    if wait:
        tenant = _wait(client, tenant_id, timeout)
        if tenant["status"] != "deprovisioned":
            raise typer.Exit(1)


@tenant_app.command("rotate")
def tenant_rotate(tenant_id: str, token: TokenOption = None, api: ApiOption = None) -> None:
    """A new password for the tenant's role; the old one stops working at once."""
    path = f"/api/v1/tenants/{quote(tenant_id)}/credentials/rotate"
    _call(_api(api, token), "POST", path)
    console.print(f"tenant {tenant_id}: password rotated (read it from its credentials endpoint)")
