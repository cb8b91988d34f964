"""``tenantflow sets assign`` and ``tenantflow sets assignments``: which targets carry a set."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from cli.commands import (
    ApiOption,
    JsonOption,
    TokenOption,
    _api,
    _call,
    _print_json,
    console,
    sets_app,
)


def parse_selector(text: str) -> dict[str, str]:
    """``"tier=free,region=eu"`` as a dict; an empty text selects every target."""
    selector: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r}: selectors look like key=value,key=value")
        selector[key.strip()] = value.strip()
    return selector


def _selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in selector.items()) or "(every target)"


@sets_app.command("assign")
def sets_assign(
    name: Annotated[str, typer.Argument(help="The registered set.")],
    selector: Annotated[
        str, typer.Option("--selector", help="key=value,... ('' selects every target).")
    ] = "",
    version: Annotated[
        str, typer.Option("--version", help="'latest' (resolved at run time) or a version.")
    ] = "latest",
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Assign set NAME to the targets whose labels contain the selector."""
    body: dict[str, Any] = {"selector": parse_selector(selector), "version": version}
    result = _call(_api(api, token), "PUT", f"/api/v1/assignments/{name}", json=body)
    if as_json:
        _print_json(result)
        return
    typer.echo(
        f"set {result['set_name']} assigned to {_selector_text(result['selector'])} "
        f"at version {result['version']}"
    )


@sets_app.command("assignments")
def sets_assignments(
    token: TokenOption = None, api: ApiOption = None, as_json: JsonOption = False
) -> None:
    """Every set assignment: selector and version."""
    result = _call(_api(api, token), "GET", "/api/v1/assignments")
    if as_json:
        _print_json(result)
        return
    table = Table("set", "selector", "version", "updated")
    for item in result["items"]:
        table.add_row(
            item["set_name"], _selector_text(item["selector"]), item["version"], item["updated_at"]
        )
    console.print(table)
