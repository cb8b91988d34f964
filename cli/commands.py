"""Operator commands that go through the API: targets, migration sets, per-target runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from cli.api import Api, call, open_api
from cli.lint import print_fleet_risks, print_risks, sets_lint

console = Console()

TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="Bearer token (default: $TENANTFLOW_TOKEN, else your login)."),
]
ApiOption = Annotated[
    str | None, typer.Option("--api", help="Gateway URL (default: $TENANTFLOW_API_URL).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer.")]

sets_app = typer.Typer(help="Migration sets: register a directory, list, show.")
db_app = typer.Typer(help="Targets (tenant databases or schemas) in the catalog.")
migrate_app = typer.Typer(help="Apply migration sets.")
rollback_app = typer.Typer(help="Roll targets back.")


def _api(api: str | None, token: str | None) -> Api:
    return open_api(api, token)


def _call(client: Api, method: str, path: str, **kwargs: Any) -> Any:
    return call(client, method, path, **kwargs)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@sets_app.command("register")
def sets_register(
    directory: Annotated[Path, typer.Argument(exists=True, file_okay=False, readable=True)],
    name: Annotated[str, typer.Option("--name", help="Name of the set, e.g. core.")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="flyway, golang-migrate or dbmate.")
    ] = None,
    ledger_table: Annotated[
        str | None,
        typer.Option(
            "--ledger-table",
            help="The set's ledger table in each target (default tenantflow_schema_history); "
            "fixed when the set is created. Sets sharing a target need tables of their own.",
        ),
    ] = None,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register every .sql file of DIRECTORY as versions of a set (new versions are added),
    with Flyway's script configuration files (.sql.conf) beside them."""
    files: dict[str, str] = {}
    for path in sorted([*directory.glob("*.sql"), *directory.glob("*.sql.conf")]):
        try:
            files[path.name] = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            typer.secho(f"error: cannot read {path}: {type(exc).__name__}", fg="red", err=True)
            raise typer.Exit(1) from None
    if not files:
        typer.secho(f"error: no .sql files in {directory}", fg="red", err=True)
        raise typer.Exit(1)
    body: dict[str, Any] = {"name": name, "files": files}
    if fmt:
        body["format"] = fmt
    if ledger_table:
        body["ledger_table"] = ledger_table
    result = _call(_api(api, token), "POST", "/api/v1/migration-sets", json=body)
    if as_json:
        _print_json(result)
        return
    typer.echo(
        f"set {result['name']}: {len(result['added'])} added, {len(result['unchanged'])} "
        f"unchanged, latest version {result['latest_version']}"
    )


sets_app.command("lint")(sets_lint)


@sets_app.command("list")
def sets_list(
    token: TokenOption = None, api: ApiOption = None, as_json: JsonOption = False
) -> None:
    """Registered sets and their latest versions."""
    result = _call(_api(api, token), "GET", "/api/v1/migration-sets")
    if as_json:
        _print_json(result)
        return
    table = Table("set", "latest version", "created")
    for item in result["items"]:
        table.add_row(item["name"], str(item["latest_version"]), item["created_at"])
    console.print(table)


@sets_app.command("show")
def sets_show(
    name: str, token: TokenOption = None, api: ApiOption = None, as_json: JsonOption = False
) -> None:
    """The versions of one set."""
    result = _call(_api(api, token), "GET", f"/api/v1/migration-sets/{name}")
    if as_json:
        _print_json(result)
        return
    typer.echo(f"set {result['name']}, ledger table {result['ledger_table']}")
    table = Table("version", "description", "down", "checksum")
    for m in result["migrations"]:
        table.add_row(
            m["version"], m["description"], "yes" if m["has_down"] else "no", m["checksum"][:12]
        )
    console.print(table)


@db_app.command("add")
def db_add(
    name: Annotated[str, typer.Option(help="Unique name, e.g. tenant-42.")],
    host: Annotated[str, typer.Option()],
    database: Annotated[str, typer.Option()],
    user: Annotated[str, typer.Option()],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            envvar="TENANTFLOW_TARGET_PASSWORD",
            help="Prompted when omitted; or $TENANTFLOW_TARGET_PASSWORD.",
        ),
    ],
    port: Annotated[int, typer.Option()] = 5432,
    schema: Annotated[str | None, typer.Option(help="For schema-per-tenant targets.")] = None,
    tenant_id: Annotated[str | None, typer.Option()] = None,
    label: Annotated[list[str] | None, typer.Option(help="key=value, repeatable.")] = None,
    server: Annotated[str | None, typer.Option(help="Name of the server it lives on.")] = None,
    sslmode: Annotated[str | None, typer.Option(help="disable ... verify-full.")] = None,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a target; the password is sent once and stored encrypted."""
    labels = dict(pair.split("=", 1) for pair in (label or []) if "=" in pair)
    body = {
        "name": name,
        "host": host,
        "port": port,
        "database": database,
        "user": user,
        "password": password,
        "schema": schema,
        "tenant_id": tenant_id,
        "labels": labels,
    }
    body.update({k: v for k, v in {"server": server, "sslmode": sslmode}.items() if v})
    result = _call(_api(api, token), "POST", "/api/v1/databases", json=body)
    if as_json:
        _print_json(result)
        return
    typer.echo(f"registered {result['name']} as {result['id']}")


@db_app.command("list")
def db_list(
    label: Annotated[list[str] | None, typer.Option(help="key=value filter, repeatable.")] = None,
    server: Annotated[str | None, typer.Option(help="Only targets on this server.")] = None,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Targets, optionally filtered by labels or server."""
    result = _call(
        _api(api, token),
        "GET",
        "/api/v1/databases",
        params=[("label", value) for value in (label or [])]
        + [("limit", "1000")]
        + ([("server", server)] if server else []),
    )
    if as_json:
        _print_json(result)
        return
    table = Table("id", "name", "host", "database", "schema", "labels")
    for d in result["items"]:
        labels = ",".join(f"{k}={v}" for k, v in d["labels"].items())
        table.add_row(
            d["id"], d["name"], f"{d['host']}:{d['port']}", d["database"], d["schema"] or "", labels
        )
    console.print(table)


def _run_target(
    kind: str,
    database: str,
    body: dict[str, Any],
    api: str | None,
    token: str | None,
    as_json: bool,
) -> None:
    state = _call(_api(api, token), "POST", f"/api/v1/databases/{database}/{kind}", json=body)
    if as_json:
        _print_json(state)
    result = state.get("result")
    if state["status"] != "completed" or result is None:
        if not as_json:
            typer.echo(f"run {state['run_id']}: {state['status']} {state.get('error') or ''}")
        raise typer.Exit(0 if state["status"] == "running" else 1)
    if not as_json:
        if result["dry_run"]:
            typer.echo(f"plan for {database} (at {result['from_version']}):")
            for step in result["planned"]:
                typer.echo(f"-- {step['version']} {step['description']}\n{step['sql']}\n")
                print_risks(step.get("warnings") or [])
        for step in result["applied"]:
            typer.echo(
                f"  {step['version']:>16}  {step['description']}  ({step['execution_ms']} ms)"
            )
        typer.echo(f"{kind}: {result['from_version']} -> {result['to_version']}")
    failure = result.get("failure")
    if failure:
        if not as_json:
            code = f" [{failure['sqlstate']}]" if failure.get("sqlstate") else ""
            typer.secho(
                f"failed at version {failure['version']}{code}: {failure['message']}",
                fg="red",
                err=True,
            )
        raise typer.Exit(1)


@migrate_app.command("target")
def migrate_target(
    set_name: Annotated[str, typer.Option("--set", help="The migration set.")],
    database: Annotated[str, typer.Option("--database", help="The target's id.")],
    to: Annotated[str | None, typer.Option("--to", help="Version (default: latest).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Apply a set to one target and wait for the result; exit 1 if it failed."""
    body = {"set": set_name, "to_version": to, "dry_run": dry_run, "wait": True}
    _run_target("migrate", database, body, api, token, as_json)


@rollback_app.command("target")
def rollback_target(
    set_name: Annotated[str, typer.Option("--set", help="The migration set.")],
    database: Annotated[str, typer.Option("--database", help="The target's id.")],
    to: Annotated[str, typer.Option("--to", help="Version to return to (0 = everything).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan only.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Roll one target back to a version and wait for the result; exit 1 if it failed."""
    body = {"set": set_name, "to_version": to, "dry_run": dry_run, "wait": True}
    _run_target("rollback", database, body, api, token, as_json)


def _selector(selector: str | None, database: list[str] | None) -> dict[str, Any]:
    if database:
        return {"database_ids": database}
    if selector in (None, "", "all"):
        return {"all": True}
    labels: dict[str, str] = {}
    for pair in (selector or "").split(","):
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter("--selector looks like tier=free,region=eu (or all)")
        labels[key.strip()] = value.strip()
    return {"labels": labels}


def _watch(
    client: Api,
    run_id: str,
    as_json: bool,
    after: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Poll the run until it ends, with a progress bar; ``after`` sees the final state; exit 1
    if any target failed."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    path = f"/api/v1/migrations/{run_id}"
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), disable=as_json) as bar:
        task = bar.add_task(run_id, total=None, detail="")
        while True:
            state = _call(client, "GET", path)
            counts = state["counts"]
            done = counts["succeeded"] + counts["failed"] + counts["up_to_date"]
            eta = f" eta {state['eta_seconds']:.0f}s" if state.get("eta_seconds") else ""
            reason = f": {state['paused_reason']}" if state["paused_reason"] else ""
            detail = (
                f"ok {counts['succeeded'] + counts['up_to_date']} failed {counts['failed']} "
                f"running {counts['running']} {state['throughput_per_minute']}/min{eta} "
                f"[{state['status']}{reason}]"
            )
            bar.update(task, completed=done, total=state["total"] or None, detail=detail)
            if state["status"] in ("completed", "cancelled"):
                break
            time.sleep(1.0)
    if as_json:
        _print_json(state)
    else:
        # A compact run's progress holds the failed targets it kept (up to 500), not the rest.
        for target_id, target in state["targets"].items():
            if target["state"] == "failed":
                typer.secho(f"failed {target_id}: {target['error']}", fg="red", err=True)
        if state.get("failed_not_listed"):
            typer.secho(
                f"{state['failed_not_listed']} more failed targets were counted, not kept",
                fg="red",
                err=True,
            )
        typer.echo(f"run {run_id} {state['status']}: {json.dumps(counts)}")
        if counts["failed"]:
            typer.echo(f"failed targets: tenantflow migrate targets {run_id} --state failed")
    if after is not None:
        after(state)
    if state["counts"]["failed"] or state["status"] == "cancelled":
        raise typer.Exit(1)


@migrate_app.command("apply")
def migrate_apply(
    set_name: Annotated[str, typer.Option("--set", help="The migration set.")],
    selector: Annotated[
        str | None, typer.Option(help="Labels such as tier=free,region=eu, or all.")
    ] = "all",
    database: Annotated[list[str] | None, typer.Option(help="Explicit target ids.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="Version (default: latest).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 16,
    batch_size: Annotated[int, typer.Option(min=1, max=100)] = 4,
    batch_connections: Annotated[
        int | None,
        typer.Option(min=1, max=100, help="Run each batch this many targets at a time."),
    ] = None,
    canary: Annotated[int, typer.Option(min=0, help="Run these first.")] = 0,
    canary_wait: Annotated[bool, typer.Option(help="Pause after the canary.")] = False,
    max_failed: Annotated[int | None, typer.Option(help="Failure budget (targets).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run")] = False,
    detach: Annotated[bool, typer.Option(help="Print the run id and return.")] = False,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Roll a set out across the fleet and watch it; exit 1 if any target failed."""
    client = _api(api, token)
    body: dict[str, Any] = {
        "set": set_name,
        "to_version": to,
        "selector": _selector(selector, database),
        "concurrency": concurrency,
        "batch_size": batch_size,
        "batch_connections": batch_connections,
        "canary": canary,
        "canary_wait_for_resume": canary_wait,
        "failure_budget": {"max_failed": max_failed},
        "dry_run": dry_run,
    }
    run = _call(client, "POST", "/api/v1/migrations", json=body)
    if detach:
        _print_json(run) if as_json else typer.echo(run["run_id"])
        return
    if not as_json:
        typer.echo(f"run {run['run_id']} started")

    def lock_risks(state: dict[str, Any]) -> None:
        lint = _call(client, "GET", f"/api/v1/migration-sets/{set_name}/lint")
        print_fleet_risks(lint, state, to)

    _watch(client, run["run_id"], as_json, lock_risks if dry_run and not as_json else None)


@migrate_app.command("status")
def migrate_status(
    run_id: str, token: TokenOption = None, api: ApiOption = None, as_json: JsonOption = False
) -> None:
    """Progress of a fleet run (its targets page by page: ``migrate targets``)."""
    state = _call(_api(api, token), "GET", f"/api/v1/migrations/{run_id}")
    if as_json:
        _print_json(state)
        return
    typer.echo(
        f"{run_id} {state['status']} {json.dumps(state['counts'])}"
        + (f" ({state['paused_reason']})" if state["paused_reason"] else "")
    )


def _signal_command(name: str) -> None:
    def command(run_id: str, token: TokenOption = None, api: ApiOption = None) -> None:
        _call(_api(api, token), "POST", f"/api/v1/migrations/{run_id}/{name}")
        typer.echo(f"{name} sent to {run_id}")

    command.__doc__ = {
        "pause": "Pause a run: in-flight targets finish, nothing new starts.",
        "resume": "Resume a paused run.",
        "cancel": "Cancel a run: in-flight targets finish, then it ends.",
    }[name]
    migrate_app.command(name)(command)


for _name in ("pause", "resume", "cancel"):
    _signal_command(_name)


@migrate_app.command("rollback")
def migrate_rollback(
    run_id: str,
    to: Annotated[str, typer.Option("--to", help="Version to return to (0 = everything).")],
    concurrency: Annotated[int, typer.Option(min=1, max=1000)] = 16,
    token: TokenOption = None,
    api: ApiOption = None,
    as_json: JsonOption = False,
) -> None:
    """Roll back every target a finished run touched, as a new watched run."""
    client = _api(api, token)
    run = _call(
        client,
        "POST",
        f"/api/v1/migrations/{run_id}/rollback",
        json={"to_version": to, "concurrency": concurrency},
    )
    if not as_json:
        typer.echo(f"rollback run {run['run_id']} started")
    _watch(client, run["run_id"], as_json)
