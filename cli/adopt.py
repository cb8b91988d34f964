"""``tenantflow migrate adopt`` and ``tenantflow migrate baseline``: take a fleet over from
another migration tool, or mark targets never migrated as at a version, without running any
migration SQL (fleet runs of kind adopt and baseline)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from cli.commands import (
    ApiOption,
    JsonOption,
    TokenOption,
    _api,
    _call,
    _print_json,
    _selector,
    _watch,
    migrate_app,
)
from models.adoption import AdoptSource

SelectorOption = Annotated[
    str | None, typer.Option(help="Labels such as tier=free,region=eu, or all.")
]
DatabaseOption = Annotated[list[str] | None, typer.Option(help="Explicit target ids.")]


def _start(
    body: dict[str, Any],
    *,
    detach: bool,
    token: str | None,
    api: str | None,
    as_json: bool,
) -> None:
    client = _api(api, token)
    run = _call(client, "POST", "/api/v1/migrations", json=body)
    if detach:
        _print_json(run) if as_json else typer.echo(run["run_id"])
        return
    if not as_json:
        typer.echo(f"run {run['run_id']} started ({body['kind']})")
    _watch(client, run["run_id"], as_json)


@migrate_app.command("adopt")
def migrate_adopt(
    set_name: Annotated[str, typer.Option("--set", help="The migration set.")],
    source: Annotated[
        AdoptSource,
        typer.Option("--from", help="The tool that migrated the targets until now."),
    ],
    selector: SelectorOption = "all",
    database: DatabaseOption = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 16,
    max_failed: Annotated[int | None, typer.Option(help="Failure budget (targets).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    detach: Annotated[bool, typer.Option(help="Print the run id and return.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Record in each target's ledger what the other tool applied (its history table is only
    read) and watch the run; exit 1 if any target was refused."""
    body: dict[str, Any] = {
        "set": set_name,
        "kind": "adopt",
        "from": source.value,
        "selector": _selector(selector, database),
        "concurrency": concurrency,
        "failure_budget": {"max_failed": max_failed},
        "dry_run": dry_run,
    }
    _start(body, detach=detach, token=token, api=api, as_json=as_json)


@migrate_app.command("baseline")
def migrate_baseline(
    set_name: Annotated[str, typer.Option("--set", help="The migration set.")],
    version: Annotated[str, typer.Option("--version", help="The version targets are at.")],
    selector: SelectorOption = "all",
    database: DatabaseOption = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 16,
    max_failed: Annotated[int | None, typer.Option(help="Failure budget (targets).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    detach: Annotated[bool, typer.Option(help="Print the run id and return.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark targets no tool ever migrated as at --version (every version up to it in the
    ledger, nothing run) and watch the run; exit 1 if any target was refused."""
    body: dict[str, Any] = {
        "set": set_name,
        "kind": "baseline",
        "version": version,
        "selector": _selector(selector, database),
        "concurrency": concurrency,
        "failure_budget": {"max_failed": max_failed},
        "dry_run": dry_run,
    }
    _start(body, detach=detach, token=token, api=api, as_json=as_json)
