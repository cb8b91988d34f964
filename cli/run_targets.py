"""``tenantflow migrate targets RUN_ID``: a fleet run's targets in one state, page by page
(``GET /api/v1/migrations/{id}/targets``; the run itself keeps only a bounded part of them)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from cli.commands import ApiOption, JsonOption, TokenOption, _api, _call, _print_json, migrate_app
from models.run_targets import TargetsFilter


def _line(item: dict[str, Any]) -> str:
    versions = f"{item.get('from_version') or '-'} -> {item.get('to_version') or '-'}"
    error = f"  {item['error']}" if item.get("error") else ""
    return f"{item.get('name') or '-'}\t{item['database_id']}\t{item['state']}\t{versions}{error}"


@migrate_app.command("targets")
def migrate_targets(
    run_id: str,
    state: Annotated[
        TargetsFilter,
        typer.Option("--state", help="Which targets (done: succeeded or up to date)."),
    ] = TargetsFilter.ALL,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="Targets per page.")] = 100,
    cursor: Annotated[
        str | None, typer.Option("--cursor", help="Continue from a printed next cursor.")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Follow every page to the end.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """A run's targets in one state: name, id, state, versions and error, one per line."""
    client = _api(api, token)
    path = f"/api/v1/migrations/{quote(run_id, safe='')}/targets"
    items: list[dict[str, Any]] = []
    while True:
        params: dict[str, Any] = {"state": state.value, "limit": limit}
        if cursor:
            params["cursor"] = cursor
        page = _call(client, "GET", path, params=params)
        items += page["items"]
        if not as_json:
            for item in page["items"]:
                typer.echo(_line(item))
        cursor = page["next_cursor"]
        if not every or cursor is None:
            break
    if as_json:
        _print_json({**page, "items": items})
        return
    if cursor is not None:
        typer.echo(f"more: --cursor {cursor}", err=True)
    if page["failed_not_listed"]:
        typer.secho(
            f"{page['failed_not_listed']} more failed targets were counted but not kept by the run",
            fg="yellow",
            err=True,
        )
    if not page["complete"]:
        typer.echo("(the listing may be incomplete: see the API's `complete`)", err=True)
